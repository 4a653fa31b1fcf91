"""Tests of the input pipeline and the offline `sklearn_digits` dataset.

Everything runs offline: ImageNet is faked with `tfds.testing.mock_data`, the
real-image tests use scikit-learn's bundled digits and sample photograph.

`mock_data`'s own example generator (tfds 4.9.10) yields the same
`num_examples` examples for every split and sub-split, and without metadata
files the builder has no split sizes at all. Sharding and exact-once
evaluation cannot be tested on that, so the ImageNet fake here writes
metadata with real split sizes and serves, for any (sub-)split, exactly the
examples its file instructions select, each labelled with its index.
"""

import functools
import zlib
from collections.abc import Iterator

import ml_collections
import numpy as np
import pytest
import requests
import sklearn.datasets
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import default, imagenet
from efficientnet_jax import augment, augment_policies, input_pipeline
from efficientnet_jax.configuration import Preprocessing
from efficientnet_jax.datasets import sklearn_digits

FAKE_IMAGENET_SPLIT_SIZES = {"train": 40, "validation": 50}
CHINA_JPEG_SHAPE = (427, 640, 3)
EFFICIENTNET = Preprocessing("efficientnet", 32, "tf1_bicubic")  # the official EfficientNet eval


def make_config(**overrides) -> ml_collections.ConfigDict:
    """The reference recipe (configs/default.py) on the digits at 32 pixels, with `overrides`."""
    config = default.get_config()
    config.update(
        {
            "dataset": "sklearn_digits",
            "train_split": "train",
            "eval_split": "test",
            "image_size": 32,
            "batch_size": 32,
            "eval_batch_size": 32,
            "shuffle_buffer_size": 256,
            "augment_on_device": False,
        }
    )
    config.update(overrides)
    return config


# ----------------------------------------------------------------------------
# Fixtures: the real digits dataset and a faked ImageNet.


@pytest.fixture(scope="module")
def digits_data_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    input_pipeline.get_builder(make_config(data_dir=data_dir))
    return data_dir


def _fake_imagenet_example(index: tf.Tensor, salt: int) -> dict[str, tf.Tensor]:
    """A small noise JPEG of index-dependent, non-square shape; label = index."""
    height = 24 + index % 13
    width = 20 + (index * 5) % 17
    pixels = tf.random.stateless_uniform(
        tf.stack([height, width, 3]),
        seed=tf.stack([index, tf.constant(salt, tf.int64)]),
        maxval=256,
        dtype=tf.int64,
    )
    return {
        "image": tf.io.encode_jpeg(tf.cast(pixels, tf.uint8)),
        "label": index,
        "file_name": tf.strings.as_string(index),
    }


def _truncate_if_corrupt(
    example: dict[str, tf.Tensor], corrupt_labels: tuple[int, ...]
) -> dict[str, tf.Tensor]:
    """Cuts the JPEG of the listed examples in half, as an interrupted copy would."""
    image = example["image"]
    is_corrupt = tf.reduce_any(tf.equal(example["label"], tf.constant(corrupt_labels, tf.int64)))
    half = tf.strings.substr(image, 0, tf.strings.length(image) // 2)
    return {**example, "image": tf.where(is_corrupt, half, image)}


def _fake_imagenet_as_dataset(
    builder, split, decoders=None, read_config=None, shuffle_files=False, corrupt_labels=()
) -> tf.data.Dataset:
    """Serves exactly the examples that `split`'s file instructions select."""
    del read_config, shuffle_files
    parts = [
        tf.data.Dataset.range(fi.skip, fi.skip + fi.take).map(
            functools.partial(_fake_imagenet_example, salt=zlib.crc32(fi.filename.encode()))
        )
        for fi in builder.info.splits[split].file_instructions
    ]
    examples = functools.reduce(tf.data.Dataset.concatenate, parts)
    if corrupt_labels:
        examples = examples.map(functools.partial(_truncate_if_corrupt, corrupt_labels=corrupt_labels))
    return examples.map(functools.partial(builder.info.features.decode_example, decoders=decoders))


@pytest.fixture(scope="module")
def imagenet_metadata_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("imagenet_metadata")
    builder = tfds.builder("imagenet2012", data_dir=str(root))
    builder.info.set_splits(
        tfds.core.SplitDict(
            [
                tfds.core.SplitInfo(
                    name=name,
                    shard_lengths=[size],
                    num_bytes=0,
                    filename_template=tfds.core.ShardedFileTemplate(
                        data_dir=builder.data_path,
                        dataset_name=builder.name,
                        split=name,
                        filetype_suffix="tfrecord",
                    ),
                )
                for name, size in FAKE_IMAGENET_SPLIT_SIZES.items()
            ]
        )
    )
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    return str(root)


def mock_fake_imagenet(metadata_dir: str, corrupt_labels: tuple[int, ...] = ()):
    """Context in which `imagenet2012` is the fake; `corrupt_labels` name truncated JPEGs."""

    def as_dataset(builder, split, decoders=None, read_config=None, shuffle_files=False) -> tf.data.Dataset:
        # A plain function, not a partial: mock_data installs it as a method.
        return _fake_imagenet_as_dataset(builder, split, decoders, read_config, shuffle_files, corrupt_labels)

    return tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_FILES, data_dir=metadata_dir, as_dataset_fn=as_dataset
    )


@pytest.fixture
def fake_imagenet(imagenet_metadata_dir) -> Iterator[None]:
    with mock_fake_imagenet(imagenet_metadata_dir):
        yield


CORRUPT_LABEL = 13


def imagenet_config(**overrides) -> ml_collections.ConfigDict:
    return make_config(
        dataset="imagenet2012", train_split="train", eval_split="validation", image_size=48, **overrides
    )


# ----------------------------------------------------------------------------
# Batches on faked ImageNet.


def test_train_batches_have_device_layout_and_leave_the_host_as_uint8_pixels(fake_imagenet):
    """The host sends the crop's pixels (the step normalises): uint8, one byte per channel."""
    config = imagenet_config(batch_size=8)
    batches = input_pipeline.create_train_iterator(
        config, process_index=0, process_count=1, local_device_count=2
    )
    for _ in range(6):  # 40 examples / 8 = 5 steps: crosses an epoch.
        batch = next(batches)
        assert batch["image"].shape == (2, 4, 48, 48, 3)
        assert batch["image"].dtype == np.uint8
        assert batch["label"].shape == (2, 4)
        assert batch["label"].dtype == np.int32
        # Noise images span the whole pixel range: nothing rescaled them.
        assert batch["image"].min() < 32 and batch["image"].max() > 223


@pytest.mark.parametrize(
    "process_count, eval_batch_size, cache_eval", [(1, 8, False), (2, 16, True), (3, 12, False)]
)
def test_eval_sees_every_example_once_on_every_host_count(
    fake_imagenet, process_count, eval_batch_size, cache_eval
):
    config = imagenet_config(eval_batch_size=eval_batch_size, cache_eval=cache_eval)
    split_size = FAKE_IMAGENET_SPLIT_SIZES["validation"]
    assert split_size % eval_batch_size  # The last batch needs padding.
    labels_seen, batch_counts = [], set()
    for process_index in range(process_count):
        batches, num_batches = input_pipeline.create_eval_iterator(
            config,
            process_index=process_index,
            process_count=process_count,
            local_device_count=2,
        )
        batches = list(batches)
        assert len(batches) == num_batches
        batch_counts.add(num_batches)
        for batch in batches:
            per_device = eval_batch_size // process_count // 2
            assert batch["mask"].shape == (2, per_device)
            assert batch["mask"].dtype == np.float32
            assert batch["image"].shape == (2, per_device, 48, 48, 3)
            labels_seen.extend(batch["label"][batch["mask"] == 1].tolist())
    assert len(batch_counts) == 1  # Same number of batches on every host.
    assert len(labels_seen) == split_size
    assert sorted(labels_seen) == list(range(split_size))


def _one_epoch(config, start_step: int = 0) -> list[dict]:
    """Steps start_step..4 of epoch 0 (40 examples / batch 8) on one host with 2 devices."""
    batches = input_pipeline.create_train_iterator(
        config,
        start_step=start_step,
        process_index=0,
        process_count=1,
        local_device_count=2,
    )
    return take(batches, 5 - start_step)


def test_corrupt_jpeg_is_skipped_counted_and_changes_nothing_else(imagenet_metadata_dir):
    """A truncated JPEG is counted, its batch stays full, and no other example moves or changes."""
    config = imagenet_config(batch_size=8, skip_corrupt_images=True)
    with mock_fake_imagenet(imagenet_metadata_dir):
        clean_run = _one_epoch(config)
    with mock_fake_imagenet(imagenet_metadata_dir, corrupt_labels=(CORRUPT_LABEL,)):
        skipped_before = input_pipeline.corrupt_images_skipped()
        corrupt_run = _one_epoch(config)
        assert input_pipeline.corrupt_images_skipped() - skipped_before == 1
        [hit] = [k for k, batch in enumerate(clean_run) if CORRUPT_LABEL in batch["label"]]
        # Resuming at the batch holding the corrupt example gives the same batches.
        assert_batches_equal(_one_epoch(config, start_step=hit), corrupt_run[hit:])
    labels = np.concatenate([batch["label"].ravel() for batch in corrupt_run])
    assert CORRUPT_LABEL not in labels
    assert len(labels) == 40  # Every batch stays full: one example fills the corrupt slot twice.
    assert all(batch.keys() == {"image", "label"} for batch in corrupt_run)
    # Other batches, and the other examples of the hit batch, keep their seeds and positions.
    assert_batches_equal(corrupt_run[:hit] + corrupt_run[hit + 1 :], clean_run[:hit] + clean_run[hit + 1 :])
    kept = clean_run[hit]["label"] != CORRUPT_LABEL
    np.testing.assert_array_equal(corrupt_run[hit]["image"][kept], clean_run[hit]["image"][kept])


def test_corrupt_jpeg_raises_naming_the_key_when_skipping_is_off(imagenet_metadata_dir):
    config = imagenet_config(batch_size=8, skip_corrupt_images=False)
    with mock_fake_imagenet(imagenet_metadata_dir, corrupt_labels=(CORRUPT_LABEL,)):
        expected = r"example \d+ .*config.skip_corrupt_images"
        with pytest.raises(input_pipeline.CorruptImageError, match=expected):
            _one_epoch(config)


# ----------------------------------------------------------------------------
# Per-variant recipe.


@pytest.mark.parametrize("variant, magnitude", [("b0", 10.0), ("b5", 17.0), ("b7", 28.0)])
def test_imagenet_config_sets_the_reference_randaugment_magnitude(variant, magnitude):
    from configs import imagenet

    config = imagenet.get_config(variant)
    assert config.randaugment_magnitude == magnitude
    assert config.augment is None  # AutoAugment/RandAugment are opt-in, as in the official code.
    assert config.skip_corrupt_images


# ----------------------------------------------------------------------------
# The real digits dataset.


def test_sklearn_digits_prepares_offline_with_disjoint_splits(digits_data_dir):
    builder = input_pipeline.get_builder(make_config(data_dir=digits_data_dir))
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sizes == {"train": 1437, "test": 360}
    assert builder.info.supervised_keys == ("image", "label")
    images = {
        split: {
            image.tobytes() for image, _ in tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True))
        }
        for split in ("train", "test")
    }
    # All 1,797 scans are distinct, so distinct images mean distinct examples.
    assert len(images["train"]) + len(images["test"]) == 1797
    assert not images["train"] & images["test"]


def test_cached_eval_on_png_digits_repeats_identically(digits_data_dir):
    config = make_config(data_dir=digits_data_dir, cache_eval=True, eval_batch_size=64)
    hosts = dict(process_index=0, process_count=1, local_device_count=2)
    passes = []
    for _ in range(2):  # The second pass reads the in-memory cache.
        batches, num_batches = input_pipeline.create_eval_iterator(config, **hosts)
        passes.append(list(batches))
        assert len(passes[-1]) == num_batches == 6  # ceil(360 / 64)
    assert_batches_equal(passes[1], passes[0])
    assert sum(batch["mask"].sum() for batch in passes[0]) == 360


def test_eval_batches_are_the_reference_eval_crop_pixels(digits_data_dir):
    """The eval pipeline's first image is, bit for bit, the reference eval crop (uint8) of the split's
    first example; the train pipeline's images are uint8 pixels too."""
    config = make_config(data_dir=digits_data_dir, eval_batch_size=8, batch_size=8, eval_crop_padding=0)
    hosts = {"process_index": 0, "process_count": 1, "local_device_count": 1}
    builder = input_pipeline.get_builder(config)
    first = builder.as_dataset(split="test", decoders={"image": tfds.decode.SkipDecoding()}).take(1)
    image_bytes = next(iter(first))["image"]
    pixels = input_pipeline.eval_image(
        image_bytes, image_size=32, preprocessing=Preprocessing("efficientnet", 0, "tf1_bicubic")
    ).numpy()
    batches, _ = input_pipeline.create_eval_iterator(config, **hosts)
    np.testing.assert_array_equal(next(batches)["image"][0, 0], pixels)
    train = next(input_pipeline.create_train_iterator(config, **hosts))["image"]
    assert train.dtype == np.uint8 and train.shape == (1, 8, 32, 32, 3)


def test_stratified_split_keeps_class_shares():
    labels = sklearn.datasets.load_digits().target
    train, test = sklearn_digits.stratified_split(labels)
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == len(labels)
    test_share = np.bincount(labels[test]) / np.bincount(labels)
    assert np.allclose(test_share, sklearn_digits.TEST_FRACTION, atol=0.02)


def test_upscaled_digit_is_grey_rgb_in_full_range():
    digit = sklearn.datasets.load_digits().images[0]
    image = sklearn_digits.upscale_digit(digit)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 2])
    assert image.max() > 200 and image.min() == 0


# ----------------------------------------------------------------------------
# Determinism and resume, on real images.


def take(batches: Iterator[dict], count: int) -> list[dict]:
    return [next(batches) for _ in range(count)]


def assert_batches_equal(actual: list[dict], expected: list[dict]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_array_equal(got[key], want[key])


def test_resume_yields_the_same_batches_across_epochs(digits_data_dir):
    # 200 examples / 32 = 6 steps per epoch; steps 0..9 span two epochs.
    config = make_config(data_dir=digits_data_dir, train_split="train[:200]")
    hosts = dict(process_index=0, process_count=1, local_device_count=2)
    assert input_pipeline.steps_per_epoch(config, **hosts) == 6
    from_start = take(input_pipeline.create_train_iterator(config, **hosts), 10)
    for start_step in (4, 6, 7):
        resumed = input_pipeline.create_train_iterator(config, start_step=start_step, **hosts)
        assert_batches_equal(take(resumed, 10 - start_step), from_start[start_step:])
    # A new epoch is a new order, not a replay of the first.
    assert not np.array_equal(from_start[0]["label"], from_start[6]["label"])


def test_the_order_does_not_depend_on_tensorflows_global_seed(digits_data_dir):
    """keras.utils.set_random_seed, say in a notebook or another test, sets TensorFlow's global seed,
    with which TensorFlow mixes every op seed: the batches stay those of config.seed, and the
    caller's global seed is left as it was."""
    config = make_config(data_dir=digits_data_dir, train_split="train[:200]")
    hosts = dict(process_index=0, process_count=1, local_device_count=1)
    # Seven batches: into the second epoch.
    unset = take(input_pipeline.create_train_iterator(config, **hosts), 7)
    tf.random.set_seed(1234)
    try:
        expected_draw = tf.random.uniform([4]).numpy()
        tf.random.set_seed(1234)
        again = input_pipeline.create_train_iterator(config, **hosts)
        assert_batches_equal(take(again, 7), unset)
        np.testing.assert_array_equal(tf.random.uniform([4]).numpy(), expected_draw)
    finally:
        tf.random.set_seed(None)


def test_hosts_read_different_examples(digits_data_dir):
    config = make_config(data_dir=digits_data_dir, train_split="train[:200]")
    first_batches = [
        next(
            input_pipeline.create_train_iterator(
                config, process_index=index, process_count=2, local_device_count=1
            )
        )
        for index in range(2)
    ]
    assert first_batches[0]["image"].shape == (1, 16, 32, 32, 3)
    images = [{image.tobytes() for image in batch["image"][0]} for batch in first_batches]
    assert not images[0] & images[1]


def test_different_seeds_give_different_batches(digits_data_dir):
    hosts = dict(process_index=0, process_count=1, local_device_count=1)
    first = [
        next(input_pipeline.create_train_iterator(make_config(data_dir=digits_data_dir, seed=seed), **hosts))
        for seed in (0, 1)
    ]
    assert not np.array_equal(first[0]["image"], first[1]["image"])


# ----------------------------------------------------------------------------
# Preprocessing on a real photograph.


@pytest.fixture(scope="module")
def china_jpeg() -> tf.Tensor:
    image = sklearn.datasets.load_sample_image("china.jpg")
    assert image.shape == CHINA_JPEG_SHAPE
    return tf.io.encode_jpeg(image, quality=90)


def crop_of_full_decode(image_bytes: tf.Tensor, box: tf.Tensor) -> np.ndarray:
    y, x, height, width = box.numpy()
    full = tf.io.decode_image(image_bytes, channels=3).numpy()
    return full[y : y + height, x : x + width]


def test_center_crop_box_has_the_reference_side():
    box = input_pipeline.center_crop_box(tf.constant(CHINA_JPEG_SHAPE), image_size=224, padding=32).numpy()
    side = int(224 / (224 + 32) * 427)
    assert side == 373
    assert box.tolist() == [(427 - side + 1) // 2, (640 - side + 1) // 2, side, side]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_jpeg_crop_equals_decode_then_crop(china_jpeg, seed):
    config = make_config(image_size=224)
    box = input_pipeline.train_crop_box(tf.constant(CHINA_JPEG_SHAPE), tf.constant([seed, 7]), config)
    fused = input_pipeline.decode_and_crop(china_jpeg, lambda shape: box).numpy()
    reference = crop_of_full_decode(china_jpeg, box)
    assert fused.shape == reference.shape
    # libjpeg upsamples chroma from the neighbouring column, which a cropped
    # decode does not have: only the first and last columns may differ.
    np.testing.assert_array_equal(fused[:, 1:-1], reference[:, 1:-1])
    edge_error = np.abs(fused.astype(int) - reference.astype(int))
    assert edge_error.max() <= 16


def test_png_crop_equals_decode_then_crop():
    image = sklearn.datasets.load_sample_image("flower.jpg")[:100, :150]
    png = tf.io.encode_png(image)
    box = tf.constant([10, 20, 50, 70])
    cropped = input_pipeline.decode_and_crop(png, lambda shape: box)
    np.testing.assert_array_equal(cropped.numpy(), image[10:60, 20:90])


def test_random_crop_boxes_respect_area_and_aspect_ranges():
    height, width, _ = CHINA_JPEG_SHAPE
    for seed in range(100):
        y, x, crop_height, crop_width = input_pipeline.random_crop_box(
            tf.constant(CHINA_JPEG_SHAPE),
            tf.constant([seed, 0]),
            area_range=(0.08, 1.0),
            aspect_range=(3 / 4, 4 / 3),
            min_object_covered=0.1,
            max_attempts=10,
        ).numpy()
        assert 0 <= y and y + crop_height <= height
        assert 0 <= x and x + crop_width <= width
        if (crop_height, crop_width) == (height, width):
            continue  # Sampling failed; the caller falls back to the centre crop.
        assert 0.08 <= crop_height * crop_width / (height * width) <= 1.0
        # Integer rounding of the sides moves the aspect ratio a little.
        assert 3 / 4 - 0.02 <= crop_width / crop_height <= 4 / 3 + 0.02


def test_impossible_random_crop_falls_back_to_center_crop():
    # A 1:20 crop of a landscape photo cannot cover 8% of it.
    config = make_config(image_size=224, crop_aspect_range=(0.05, 0.05))
    shape = tf.constant(CHINA_JPEG_SHAPE)
    box = input_pipeline.train_crop_box(shape, tf.constant([3, 4]), config)
    center = input_pipeline.center_crop_box(shape, image_size=224, padding=32)
    np.testing.assert_array_equal(box.numpy(), center.numpy())


def as_pipeline_pixels(image: tf.Tensor) -> np.ndarray:
    """The official float pixels as the pipeline sends them: clipped to [0, 255], rounded to uint8."""
    return np.round(np.clip(image.numpy(), 0.0, 255.0)).astype(np.uint8)


def official_v1_center_crop(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """tensorflow/tpu models/official/efficientnet/preprocessing.py `_decode_and_center_crop` with
    CROP_PADDING 32 (the released checkpoints'), its float pixels: the side in float32, truncated; the
    odd pixel of the margin above and left; TF1's bicubic resize (`_resize_image` without a method)."""
    height, width, _ = tf.image.extract_jpeg_shape(image_bytes).numpy()
    side = int(np.float32(image_size / (image_size + 32)) * np.float32(min(height, width)))
    window = [(height - side + 1) // 2, (width - side + 1) // 2, side, side]
    image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
    return tf.compat.v1.image.resize_bicubic([image], [image_size, image_size])[0]


def test_v1_eval_image_is_the_official_center_crop_and_tf1_bicubic_resize(china_jpeg):
    """Bit for bit the official eval's pixels once rounded, and several grey levels from TF2's
    bicubic resize of the same crop (what this pipeline did before)."""
    official = official_v1_center_crop(china_jpeg, 224)
    ours = input_pipeline.eval_image(china_jpeg, image_size=224, preprocessing=EFFICIENTNET).numpy()
    np.testing.assert_array_equal(ours, as_pipeline_pixels(official))
    tf2 = input_pipeline.eval_image(
        china_jpeg, image_size=224, preprocessing=Preprocessing("efficientnet", 32, "bicubic")
    ).numpy()
    assert np.abs(ours.astype(int) - tf2.astype(int)).mean() > 1.0


@pytest.mark.parametrize(
    "aspect_range, falls_back", [((3 / 4, 4 / 3), False), ((0.05, 0.05), True)]  # 1:20 cannot cover 8%
)
def test_v1_train_crop_with_a_fixed_seed_is_the_official_random_crop(china_jpeg, aspect_range, falls_back):
    """preprocessing.py `_decode_and_random_crop`: `sample_distorted_bounding_box` of the whole image
    (min_object_covered 0.1, the aspect range, area (0.08, 1), 10 attempts), the fused JPEG crop, and
    when the box is the whole image (at least 3 of h, w, c equal) `_decode_and_center_crop` instead;
    TF1's bicubic resize. The sampler is the stateless one with the crop's seed (the pipeline's draws
    are stateless, for bit-exact resume), the official code's is stateful: same op, seeded."""
    config = make_config(image_size=224, crop_aspect_range=aspect_range, augment_on_device=True)
    seed = tf.constant([5, 6], tf.int64)
    crop_seed = tf.random.experimental.stateless_split(seed, num=3)[0]
    shape = tf.image.extract_jpeg_shape(china_jpeg)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=crop_seed,
        min_object_covered=0.1,
        aspect_ratio_range=aspect_range,
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    cropped = tf.image.decode_and_crop_jpeg(china_jpeg, window, channels=3)
    bad = int(np.sum(shape.numpy() == np.array(tf.shape(cropped)))) >= 3
    assert bad == falls_back
    official = (
        official_v1_center_crop(china_jpeg, 224)
        if bad
        else tf.compat.v1.image.resize_bicubic([cropped], [224, 224])[0]
    )
    ours = input_pipeline.train_image(china_jpeg, seed, config).numpy()
    np.testing.assert_array_equal(ours, as_pipeline_pixels(official))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v2_train_crop_is_the_official_efficientnetv2_crop_and_bilinear_resize(seed):
    """V2-S's config: google/automl efficientnetv2/preprocessing.py `preprocess_for_train`'s crop,
    `sample_distorted_bounding_box` with no boxes, area (0.05, 1), min_object_covered 0 and TF's default
    aspect range and attempts, sliced out of the decoded image with no fallback, then `tf.image.resize`
    (bilinear) to the train size. On a PNG: the official code decodes JPEGs in full before slicing,
    whose first and last columns can differ from the fused JPEG crop's (test_fused_jpeg_crop_equals_...)."""
    photograph = sklearn.datasets.load_sample_image("flower.jpg")
    png = tf.io.encode_png(photograph)
    config = imagenet.get_config("v2-s")
    config.train_image_size = 64
    assert config.augment_on_device  # the host stops after the resize
    image_seed = tf.constant([seed, 3], tf.int64)
    crop_seed = tf.random.experimental.stateless_split(image_seed, num=3)[0]
    decoded = tf.image.decode_image(png, channels=3)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(decoded),
        tf.zeros([0, 0, 4], tf.float32),
        seed=crop_seed,
        area_range=(0.05, 1.0),
        min_object_covered=0,
        use_image_if_no_bounding_boxes=True,
    )
    official = tf.image.resize(tf.slice(decoded, begin, size), [64, 64])
    ours = input_pipeline.train_image(png, image_seed, config).numpy()
    np.testing.assert_array_equal(ours, as_pipeline_pixels(official))


def test_train_and_eval_images_are_uint8_squares(china_jpeg):
    config = make_config(image_size=64)
    seed = tf.constant([5, 6], tf.int64)
    train = input_pipeline.train_image(china_jpeg, seed, config)
    assert train.shape == (64, 64, 3) and train.dtype == tf.uint8
    np.testing.assert_array_equal(train.numpy(), input_pipeline.train_image(china_jpeg, seed, config).numpy())
    evaluated = input_pipeline.eval_image(china_jpeg, image_size=64, preprocessing=EFFICIENTNET)
    assert evaluated.shape == (64, 64, 3) and evaluated.dtype == tf.uint8


def test_with_augmentation_on_the_device_the_host_stops_after_the_resize(china_jpeg):
    """config.augment_on_device: the host's train image is its crop and resize alone, neither flipped
    nor augmented (the train step does both), whatever config.augment says."""
    seed = tf.constant([3, 4], tf.int64)
    image_bytes = china_jpeg
    on_device = make_config(augment="randaugment", augment_on_device=True)
    crop_only = input_pipeline.train_image(image_bytes, seed, on_device).numpy()
    crop_seed = tf.random.experimental.stateless_split(seed, num=3)[0]
    box = lambda shape: input_pipeline.train_crop_box(shape, crop_seed, on_device)  # noqa: E731
    cropped = input_pipeline.decode_and_crop(image_bytes, box)
    expected = input_pipeline.resize(cropped, 32, "tf1_bicubic").numpy()
    np.testing.assert_array_equal(crop_only, expected)


def test_augment_hook_applies_the_configured_policy(china_jpeg):
    image = input_pipeline.eval_image(china_jpeg, image_size=64, preprocessing=EFFICIENTNET)
    seed = tf.constant([3, 4], tf.int64)
    assert input_pipeline.maybe_augment(image, seed, make_config()) is image
    config = make_config(augment="randaugment", randaugment_num_layers=2, randaugment_magnitude=9.0)
    augmented = input_pipeline.maybe_augment(image, seed, config)
    np.testing.assert_array_equal(augmented.numpy(), augment.randaugment(image, seed, 2, 9.0).numpy())
    assert not np.array_equal(augmented.numpy(), image.numpy())
    autoaugmented = input_pipeline.maybe_augment(image, seed, make_config(augment="autoaugment"))
    np.testing.assert_array_equal(autoaugmented.numpy(), augment.autoaugment(image, seed).numpy())
    with pytest.raises(ValueError, match="config.augment"):
        input_pipeline.maybe_augment(image, seed, make_config(augment="mixup"))


def test_randaugment_takes_the_configs_pixel_constants(china_jpeg):
    """config.randaugment_{translate,cutout}_const reach the host's RandAugment: every seed gives the
    policy at those constants, and the seeds that draw a translation or cutout differ from the
    reference's 100/40."""
    image = input_pipeline.eval_image(china_jpeg, image_size=64, preprocessing=EFFICIENTNET)
    config = make_config(augment="randaugment", randaugment_translate_const=14, randaugment_cutout_const=6)
    small = augment_policies.PolicyConstants(cutout_const=6, translate_const=14)
    differs_from_reference = 0
    for i in range(12):
        seed = tf.constant([i, 7], tf.int64)
        augmented = input_pipeline.maybe_augment(image, seed, config).numpy()
        np.testing.assert_array_equal(augmented, augment.randaugment(image, seed, 2, 10.0, small).numpy())
        reference = augment.randaugment(image, seed, 2, 10.0).numpy()
        differs_from_reference += not np.array_equal(augmented, reference)
    assert differs_from_reference >= 3  # 3 of the 16 ops take a pixel constant: ~4 of 12 seeds draw one


# ----------------------------------------------------------------------------
# Bad configs fail early with messages that name the key to fix.


def test_unknown_dataset_names_config_dataset(tmp_path):
    with pytest.raises(input_pipeline.DatasetConfigError, match="config.dataset"):
        input_pipeline.get_builder(make_config(dataset="no_such_dataset_xyz", data_dir=str(tmp_path)))


def test_imagenet_without_manual_dir_names_config_manual_dir(tmp_path):
    with pytest.raises(input_pipeline.DatasetConfigError, match="config.manual_dir"):
        input_pipeline.get_builder(make_config(dataset="imagenet2012", data_dir=str(tmp_path)))


def test_failed_download_names_config_data_dir(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Name or service not known")

    monkeypatch.setattr(sklearn_digits.SklearnDigits, "download_and_prepare", no_network)
    with pytest.raises(input_pipeline.DatasetConfigError, match="config.data_dir"):
        input_pipeline.get_builder(make_config(data_dir=str(tmp_path)))


def test_batch_not_dividing_devices_names_the_key(digits_data_dir):
    with pytest.raises(input_pipeline.DatasetConfigError, match="config.batch_size=30"):
        input_pipeline.per_device_batch_size(30, 2, 4)
    config = make_config(data_dir=digits_data_dir, batch_size=10, eval_batch_size=10)
    hosts = dict(process_index=0, process_count=1, local_device_count=4)
    with pytest.raises(input_pipeline.DatasetConfigError, match="config.batch_size"):
        input_pipeline.create_train_iterator(config, **hosts)
    with pytest.raises(input_pipeline.DatasetConfigError, match="config.eval_batch_size"):
        input_pipeline.create_eval_iterator(config, **hosts)


def test_unknown_split_names_the_key_and_lists_splits(digits_data_dir):
    hosts = dict(process_index=0, process_count=1, local_device_count=1)
    config = make_config(data_dir=digits_data_dir, train_split="training", eval_split="validation")
    with pytest.raises(input_pipeline.DatasetConfigError, match=r"config.train_split.*\['test', 'train'\]"):
        input_pipeline.create_train_iterator(config, **hosts)
    with pytest.raises(input_pipeline.DatasetConfigError, match="config.eval_split"):
        input_pipeline.create_eval_iterator(config, **hosts)
