"""ImageNet-style input pipeline: tf.data on the host CPU, EfficientNet preprocessing.

Train and eval batches are built per host from that host's TFDS shard and
shaped `[local_devices, per_device_batch, ...]` for `jax.pmap`-style or
sharded consumption. Images leave the host as the uint8 pixels of the crop
and resize (and the host's augmentation): the steps normalise them on the
devices (steps.normalize), so the host copies a quarter of float32's bytes
and does no per-pixel float work.

Training is resumable bit-exactly: everything random is a pure function of
(config.seed, process_index, epoch, position in the epoch). Each epoch is its
own tf.data pipeline whose file order and shuffle buffer are seeded from
(seed, epoch), and each example's crop/flip draws come from stateless TF ops
seeded from (seed, process_index, epoch, index). Resuming at step k therefore
only has to skip the consumed examples of the current epoch, and it skips
them as undecoded bytes. The price is a short refill of the shuffle buffer at
every epoch boundary, instead of a buffer that carries over between epochs.

A training image that cannot be decoded (corrupt or truncated file) does not
stop a long job: with config.skip_corrupt_images its slot in the batch is
filled with a copy of another example of the same batch and it is counted
(`corrupt_images_skipped()`), so batch shapes, steps per epoch, and every
other example's seed and batch stay as if the file were sound.

Evaluation sees every example exactly once across hosts: no remainder is
dropped, the last batch is padded with masked examples, and every host runs
the same number of batches so that cross-host collectives never wait forever.
"""

import contextlib
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from tensorflow.python.eager import context as tf_context

import efficientnet_jax.datasets  # noqa: F401  (registers sklearn_digits)
from efficientnet_jax import augment, augment_policies, batch_mixing, errors
from efficientnet_jax.configuration import (
    EVAL_PREPROCESSINGS,
    RESIZE_METHODS,
    Preprocessing,
    resolve_preprocessing,
    train_image_size,
)
from efficientnet_jax.datasets import image_folder


def _hide_accelerators_from_tensorflow() -> None:
    """Keeps TF on the CPU so it never takes accelerator memory from JAX."""
    try:
        for device_type in ("GPU", "TPU"):
            tf.config.set_visible_devices([], device_type)
    except RuntimeError as e:  # TF had already initialised its devices.
        raise RuntimeError(
            "Import efficientnet_jax.input_pipeline before running any TensorFlow "
            "op: TensorFlow has already initialised its devices and may be holding "
            "accelerator memory that JAX needs."
        ) from e


_hide_accelerators_from_tensorflow()

Batch = dict[str, np.ndarray]
# A crop window as [offset_y, offset_x, height, width] (int32), the layout
# `tf.image.decode_and_crop_jpeg` takes.
CropBox = tf.Tensor


class DatasetConfigError(errors.UserError, ValueError):
    """A config value that the input pipeline cannot use; says how to fix it."""


# ----------------------------------------------------------------------------
# Dataset builder and split bookkeeping.


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """Returns the TFDS builder of `config.dataset`, preparing it if needed; for
    'folder:<root>', a builder reading the images of that folder (datasets/image_folder.py)."""
    if image_folder.is_image_folder(config.dataset):
        try:
            return image_folder.load(config.dataset)
        except image_folder.ImageFolderError as e:
            raise DatasetConfigError(str(e)) from e
    try:
        builder = tfds.builder(config.dataset, data_dir=config.data_dir)
    except tfds.core.DatasetNotFoundError as e:
        raise DatasetConfigError(
            f"config.dataset={config.dataset!r} is not a TFDS dataset. Set "
            "--config.dataset to a registered name such as 'imagenet2012', "
            "'cifar10' or 'sklearn_digits' (offline), or to "
            f"'{image_folder.FOLDER_PREFIX}/path/to/images' for a folder of your images."
        ) from e
    if not builder.is_prepared():
        _prepare(builder, config)
    return builder


def _prepare(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict) -> None:
    """Downloads and prepares `builder`, turning failures into fixable errors."""
    needs_manual_download = bool(builder.MANUAL_DOWNLOAD_INSTRUCTIONS)
    if needs_manual_download and not config.manual_dir:
        raise DatasetConfigError(
            f"{builder.name} is not prepared in config.data_dir={config.data_dir!r} "
            "and needs a manual download. Download its files (see "
            f"https://www.tensorflow.org/datasets/catalog/{builder.name}) and set "
            "--config.manual_dir to the directory holding them, or point "
            "--config.data_dir at a directory where it is already prepared."
        )
    download_config = tfds.download.DownloadConfig(manual_dir=config.manual_dir)
    try:
        builder.download_and_prepare(download_config=download_config)
    except AssertionError as e:
        # TFDS signals a missing or empty manual_dir with an AssertionError.
        if not needs_manual_download:
            raise
        raise DatasetConfigError(
            f"Could not prepare {builder.name} from "
            f"config.manual_dir={config.manual_dir!r}: {e}. Put the files there "
            "and set --config.manual_dir to that directory."
        ) from e
    except OSError as e:  # Network errors (requests, urllib) are OSErrors.
        raise DatasetConfigError(
            f"Could not download {builder.name} into "
            f"config.data_dir={config.data_dir!r} ({e}). If this machine has no "
            "network, prepare the dataset on one that has (e.g. `tfds build "
            f"{builder.name} --data_dir=DIR`), copy DIR here and set "
            "--config.data_dir=DIR."
        ) from e


def _check_split(builder: tfds.core.DatasetBuilder, split: str, config_key: str) -> None:
    """Fails early, listing the real splits, when `split` is not readable."""
    try:
        builder.info.splits[split]
    except (KeyError, ValueError) as e:
        raise DatasetConfigError(
            f"{config_key}={split!r} is not a valid split of {builder.name} ({e}). "
            f"Available splits: {sorted(builder.info.splits)}; set {config_key} "
            "to one of them or to a sub-split such as 'train[:90%]'."
        ) from e


def _num_examples(builder: tfds.core.DatasetBuilder, split: tfds.typing.SplitArg) -> int:
    return builder.info.splits[split].num_examples


def _resolve_topology(
    process_index: int | None, process_count: int | None, local_device_count: int | None
) -> tuple[int, int, int]:
    """Fills unspecified host/device numbers from JAX at call time."""
    return (
        jax.process_index() if process_index is None else process_index,
        jax.process_count() if process_count is None else process_count,
        jax.local_device_count() if local_device_count is None else local_device_count,
    )


def per_device_batch_size(
    global_batch: int, process_count: int, local_device_count: int, config_key: str = "config.batch_size"
) -> int:
    """Splits a global batch evenly over all devices of all hosts."""
    num_devices = process_count * local_device_count
    if global_batch <= 0 or global_batch % num_devices:
        raise DatasetConfigError(
            f"{config_key}={global_batch} must be a positive multiple of the "
            f"total device count {num_devices} ({process_count} host(s) x "
            f"{local_device_count} local device(s)); set --{config_key} to a "
            "multiple of it."
        )
    return global_batch // num_devices


def _train_shard(
    config: ml_collections.ConfigDict, process_index: int, process_count: int
) -> tfds.typing.SplitArg:
    """This host's train shard; equal-sized on all hosts (remainder dropped)."""
    return tfds.even_splits(config.train_split, n=process_count, drop_remainder=True)[process_index]


def _steps_per_epoch(shard_size: int, host_batch: int) -> int:
    steps = shard_size // host_batch
    if steps == 0:
        raise DatasetConfigError(
            f"config.batch_size is too large: a host's train shard has "
            f"{shard_size} examples, fewer than one host batch of {host_batch}. "
            "Lower --config.batch_size or use a larger --config.train_split."
        )
    return steps


def steps_per_epoch(
    config: ml_collections.ConfigDict,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    local_device_count: int | None = None,
) -> int:
    """Train batches per epoch, the same on every host (partial batch dropped)."""
    process_index, process_count, local_device_count = _resolve_topology(
        process_index, process_count, local_device_count
    )
    builder = get_builder(config)
    _check_split(builder, config.train_split, "config.train_split")
    per_device = per_device_batch_size(config.batch_size, process_count, local_device_count)
    shard = _train_shard(config, process_index, process_count)
    return _steps_per_epoch(_num_examples(builder, shard), per_device * local_device_count)


# ----------------------------------------------------------------------------
# Per-example preprocessing (pure TF functions of their inputs).


def center_crop_box(
    image_shape: tf.Tensor, *, image_size: int, padding: int, round_offsets_up: bool = True
) -> CropBox:
    """The reference eval crop: a centred square of side size/(size+pad)*min(h,w).

    Cropping a little inside the image before resizing matches how the released
    checkpoints were evaluated (padding 32 at every resolution). The side is
    computed in float32 as the reference does, so it truncates to the same int.
    An odd margin puts the extra pixel above and left of the square in
    EfficientNet's `_decode_and_center_crop` ((h - side + 1) // 2), below and
    right of it in EfficientNetV2's `preprocess_for_eval` ((h - side) // 2,
    `round_offsets_up=False`).
    """
    height, width = image_shape[0], image_shape[1]
    side = tf.cast(
        (image_size / (image_size + padding)) * tf.cast(tf.minimum(height, width), tf.float32), tf.int32
    )
    rounding = 1 if round_offsets_up else 0
    offset_y = (height - side + rounding) // 2
    offset_x = (width - side + rounding) // 2
    return tf.stack([offset_y, offset_x, side, side])


# google/automl efficientnetv2/preprocessing.py crops only images evaluated below this size.
EFFICIENTNETV2_CROP_BELOW_SIZE = 320


def eval_crop_box(image_shape: tf.Tensor, *, image_size: int, padding: int, preprocessing: str) -> CropBox:
    """The crop `preprocessing` evaluates (see `eval_image`); the whole image where it takes no crop."""
    if preprocessing == "efficientnet":
        return center_crop_box(image_shape, image_size=image_size, padding=padding)
    if preprocessing == "efficientnetv2" and image_size < EFFICIENTNETV2_CROP_BELOW_SIZE:
        return center_crop_box(image_shape, image_size=image_size, padding=padding, round_offsets_up=False)
    return tf.stack([0, 0, image_shape[0], image_shape[1]])


def random_crop_box(
    image_shape: tf.Tensor,
    seed: tf.Tensor,
    *,
    area_range: tuple[float, float],
    aspect_range: tuple[float, float],
    min_object_covered: float,
    max_attempts: int,
) -> CropBox:
    """Samples an Inception-style crop; the whole image when sampling fails.

    The whole image stands in as the object box, so `min_object_covered` is a
    lower bound on the crop's share of the image area.
    """
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=whole_image,
        seed=seed,
        min_object_covered=min_object_covered,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def train_crop_box(image_shape: tf.Tensor, seed: tf.Tensor, config: ml_collections.ConfigDict) -> CropBox:
    """The reference train crop: a random crop, or, with config.crop_fallback_to_center, the eval crop
    if it failed.

    A sampled box that is the whole image means every attempt failed (the rule of EfficientNet's
    `_decode_and_random_crop`, tensorflow/tpu models/official/efficientnet/preprocessing.py); an
    uncropped image would then be squashed to a square, so the centre crop is used instead.
    EfficientNetV2's `preprocess_for_train` (google/automl efficientnetv2/preprocessing.py) keeps the
    whole image.
    """
    sampled = random_crop_box(
        image_shape,
        seed,
        area_range=tuple(config.crop_area_range),
        aspect_range=tuple(config.crop_aspect_range),
        min_object_covered=config.crop_min_object_covered,
        max_attempts=config.crop_max_attempts,
    )
    if not config.crop_fallback_to_center:
        return sampled
    is_whole_image = tf.logical_and(
        tf.equal(sampled[2], image_shape[0]), tf.equal(sampled[3], image_shape[1])
    )
    return tf.where(
        is_whole_image,
        center_crop_box(
            image_shape,
            image_size=train_image_size(config),
            padding=resolve_preprocessing(config).eval_crop_padding,
        ),
        sampled,
    )


def decode_and_crop(image_bytes: tf.Tensor, crop_box_fn: Callable[[tf.Tensor], CropBox]) -> tf.Tensor:
    """Decodes the crop `crop_box_fn(image_shape)` of an encoded image (uint8 RGB).

    JPEGs (ImageNet) are decoded only inside the crop window, which saves most
    of the decoding work of a small random crop. Other formats (PNG, ...) have
    no such decoder and are decoded in full, then cropped.
    """

    def jpeg() -> tf.Tensor:
        box = crop_box_fn(tf.image.extract_jpeg_shape(image_bytes))
        return tf.image.decode_and_crop_jpeg(image_bytes, box, channels=3)

    def other_format() -> tf.Tensor:
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        box = crop_box_fn(tf.shape(image))
        return tf.slice(image, [box[0], box[1], 0], [box[2], box[3], 3])

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other_format)


def resize(image: tf.Tensor, image_size: int, method: str) -> tf.Tensor:
    """Resize to a square with `method` (one of RESIZE_METHODS), back to uint8.

    'tf1_bicubic' is the official EfficientNet's `tf.compat.v1.image.resize_bicubic` (preprocessing.py
    `_resize_image`), whose sample grid has no half-pixel centres: TF2's `tf.image.resize(...,
    "bicubic")` ('bicubic') samples other points and differs by several grey levels. 'bilinear' is
    EfficientNetV2's `tf.image.resize` at its default.

    Bicubic interpolation overshoots [0, 255], so values are clipped; rounding to uint8 lets
    augmentations work on the usual pixel type, keeps a cached eval split four times smaller than
    float32 and sends a quarter of float32's bytes to the devices. The official eval keeps the float
    pixels; on the official Lite0 weights the rounding moves the logits by far less than the resize
    method does (BENCHMARKS.md, "Resizing"), so it stays.
    """
    # tf1_bicubic: the kernel of tf.compat.v1.image.resize_bicubic, without its deprecation notice
    if method == "tf1_bicubic":
        resized = tf.raw_ops.ResizeBicubic(
            images=image[tf.newaxis],
            size=[image_size, image_size],
            align_corners=False,
            half_pixel_centers=False,
        )[0]
    elif method in RESIZE_METHODS:
        resized = tf.image.resize(image, [image_size, image_size], method=method)
    else:
        raise DatasetConfigError(
            f"Unknown resize method {method!r}: one of {', '.join(RESIZE_METHODS)} (config.resize_method)."
        )
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def maybe_augment(image: tf.Tensor, seed: tf.Tensor, config: ml_collections.ConfigDict) -> tf.Tensor:
    """AutoAugment/RandAugment (`config.augment`) on the cropped, flipped uint8 image."""
    return augment.apply(
        image,
        seed,
        config.augment,
        config.randaugment_num_layers,
        config.randaugment_magnitude,
        augment_policies.randaugment_constants(config),
    )


def train_image(image_bytes: tf.Tensor, seed: tf.Tensor, config: ml_collections.ConfigDict) -> tf.Tensor:
    """Reference train preprocessing up to normalisation: uint8 [S, S, 3], S the train size
    (configuration.train_image_size: EfficientNetV2's, or a progressive-learning stage's, is smaller
    than the eval size).

    Random crop (`train_crop_box`), resize (`resolve_preprocessing(config).resize_method`), random
    horizontal flip, then the augmentation hook; every random draw is stateless and derived from `seed`. With
    config.augment_on_device the flip and the hook are the train step's
    (steps.augment_on_device), and this stops after the resize.
    """
    crop_seed, flip_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    image = decode_and_crop(image_bytes, lambda shape: train_crop_box(shape, crop_seed, config))
    image = resize(image, train_image_size(config), resolve_preprocessing(config).resize_method)
    if config.augment_on_device:
        return image
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return maybe_augment(image, augment_seed, config)


def eval_image(image_bytes: tf.Tensor, *, image_size: int, preprocessing: Preprocessing) -> tf.Tensor:
    """Reference eval preprocessing up to normalisation: uint8 [S, S, 3]. The evaluation job and
    prediction (prediction.py) both call it, so a checkpoint sees the same pixels in either.

    The crop, `preprocessing.eval_preprocessing` (one of EVAL_PREPROCESSINGS), follows the official
    code of the weights, and so, by default, does the resize (`resize`, `preprocessing.resize_method`;
    configuration.OFFICIAL_RESIZE_METHODS):

    * 'efficientnet' (tensorflow/tpu efficientnet/preprocessing.py, and google/automl's
      efficientnetv2/preprocess_legacy.py, with which V2-B0..B3 were trained and evaluated): the
      centre crop of side size / (size + `eval_crop_padding`) * min(h, w), TF1 bicubic resize.
    * 'efficientnetv2' (google/automl efficientnetv2/preprocessing.py, `preprocess_for_eval`: V2-S, M,
      L and XL, and every ImageNet-21k pre-training): below 320 pixels the same crop (padding 32 in
      the official code, its odd pixel on the other side: `center_crop_box`), from 320 up (V2-S..XL's
      eval sizes, 384..512) no crop: the whole image, squashed to the square; bilinear resize.
    * 'efficientnetv2_finetune' (the same file's `preprocess_for_finetune`, with which the
      ImageNet-21k weights were fine-tuned on ImageNet: datasets.py `ImagenetFt`): the whole image at
      every size, bilinear resize.
    """
    crop = preprocessing.eval_preprocessing
    if crop not in EVAL_PREPROCESSINGS:
        raise DatasetConfigError(
            f"Unknown eval preprocessing {crop!r}: one of {', '.join(EVAL_PREPROCESSINGS)} "
            f"(config.eval_preprocessing)."
        )
    image = decode_and_crop(
        image_bytes,
        lambda shape: eval_crop_box(
            shape, image_size=image_size, padding=preprocessing.eval_crop_padding, preprocessing=crop
        ),
    )
    return resize(image, image_size, preprocessing.resize_method)


# ----------------------------------------------------------------------------
# tf.data plumbing.


def _data_options() -> tf.data.Options:
    """Deterministic order; parallelism across examples, not inside one."""
    options = tf.data.Options()
    options.deterministic = True
    # A private pool keeps the input pipeline from competing with TF's global
    # inter-op pool; one thread per op avoids oversubscribing the host CPU when
    # many examples are processed in parallel.
    options.threading.private_threadpool_size = os.cpu_count() or 1
    options.threading.max_intra_op_parallelism = 1
    return options


def _split_into_devices(batch: dict[str, tf.Tensor], local_device_count: int) -> dict[str, tf.Tensor]:
    """[host_batch, ...] -> [local_devices, per_device_batch, ...]."""
    return {
        key: tf.reshape(value, [local_device_count, -1, *value.shape[1:]]) for key, value in batch.items()
    }


def _epoch_shuffle_seeds(seed: int, epoch: int) -> tuple[int, int]:
    """(file order seed, shuffle buffer seed) for one epoch."""
    file_seed, buffer_seed = np.random.SeedSequence([seed, epoch]).generate_state(2)
    return int(file_seed), int(buffer_seed)


def _epoch_example_seed(seed: int, process_index: int, epoch: int) -> tf.Tensor:
    """Key from which each example's augmentation seed is folded in by index."""
    state = np.random.SeedSequence([seed, process_index, epoch]).generate_state(2)
    return tf.constant(state.astype(np.int64))


def preprocess_train_examples(
    ds: tf.data.Dataset,
    epoch_seed: tf.Tensor,
    config: ml_collections.ConfigDict,
) -> tf.data.Dataset:
    """(index, {"image": bytes, "label"}) -> {"image" (uint8), "label", "index", "valid"},
    one output per input.

    An example whose image cannot be decoded comes out as a zero image with
    valid=False instead of raising or vanishing. Dropping it would shift every
    later example to an earlier batch, so batch k would no longer be the same
    after a resume at step <= k, and the epoch would be a batch short. Each
    example is decoded in its own one-element dataset whose errors are ignored,
    followed by the placeholder, and the first element is taken; `interleave`
    runs these in parallel and keeps the input order. Seeds come from the index,
    which is known before decoding, so no other example's draws change.
    """
    image_size = train_image_size(config)

    def decode(index: tf.Tensor, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        seed = tf.random.experimental.stateless_fold_in(epoch_seed, index)
        return {
            "image": train_image(example["image"], seed, config),
            "label": tf.cast(example["label"], tf.int32),
            "index": index,
            "valid": tf.constant(True),
        }

    def decode_or_placeholder(index: tf.Tensor, example: dict[str, tf.Tensor]) -> tf.data.Dataset:
        decoded = tf.data.Dataset.from_tensors((index, example)).map(decode).ignore_errors()
        placeholder = tf.data.Dataset.from_tensors(
            {
                "image": tf.zeros([image_size, image_size, 3], tf.uint8),
                "label": tf.constant(0, tf.int32),
                "index": index,
                "valid": tf.constant(False),
            }
        )
        return decoded.concatenate(placeholder).take(1)

    return ds.interleave(
        decode_or_placeholder,
        cycle_length=os.cpu_count() or 1,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _fill_invalid_with_first_valid(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Replaces undecodable examples' image and label by the batch's first valid one.

    Keeps the batch full (static shapes for the devices) without inventing an
    all-zero training example; one example counted twice in a batch of
    thousands does not change the gradient noticeably. A batch with no valid
    example at all keeps its zero placeholders.
    """
    valid = batch["valid"]
    first_valid = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)
    source = tf.where(valid, tf.range(tf.shape(valid)[0], dtype=tf.int32), first_valid)
    return {
        **batch,
        "image": tf.gather(batch["image"], source),
        "label": tf.gather(batch["label"], source),
    }


@contextlib.contextmanager
def _tf_global_seed_unset() -> Iterator[None]:
    """TensorFlow mixes every op seed with its global seed, which other code in the process may set
    (keras.utils.set_random_seed does): the shuffles are built with it unset, so that the order of
    the examples depends on config.seed alone, the same in train.py as after such a call. The global
    seed is read through TensorFlow's eager context, the only place that holds it, and set back
    afterwards (which, as any tf.random.set_seed call, restarts the draws of unseeded ops)."""
    previous = tf_context.global_seed()
    if previous is None:
        yield
        return
    tf.random.set_seed(None)
    try:
        yield
    finally:
        tf.random.set_seed(previous)


def _train_epoch_dataset(
    builder: tfds.core.DatasetBuilder,
    shard: tfds.typing.SplitArg,
    config: ml_collections.ConfigDict,
    *,
    epoch: int,
    first_batch: int,
    steps: int,
    process_index: int,
    local_device_count: int,
    host_batch: int,
) -> tf.data.Dataset:
    """Batches `first_batch..steps-1` of one epoch of this host's shard.

    Batches carry "index" (position in the epoch) and "valid" (image decoded)
    besides "image" and "label"; `create_train_iterator` consumes and strips them.
    """
    file_seed, buffer_seed = _epoch_shuffle_seeds(config.seed, epoch)
    with _tf_global_seed_unset():
        ds = builder.as_dataset(
            split=shard,
            shuffle_files=True,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=file_seed, try_autocache=False),
        )
        ds = ds.shuffle(config.shuffle_buffer_size, seed=buffer_seed, reshuffle_each_iteration=False)
    ds = ds.take(steps * host_batch).enumerate()
    # Skipped examples are never decoded: resuming costs reading, not decoding.
    ds = ds.skip(first_batch * host_batch)
    epoch_seed = _epoch_example_seed(config.seed, process_index, epoch)
    ds = preprocess_train_examples(ds, epoch_seed, config)
    ds = ds.batch(host_batch, drop_remainder=True).map(_fill_invalid_with_first_valid)
    ds = ds.map(lambda batch: _split_into_devices(batch, local_device_count))
    mixup_alpha, cutmix_alpha = config.mixup_alpha, config.cutmix_alpha
    if mixup_alpha > 0 or cutmix_alpha > 0:  # Mixup/CutMix: labels become float32 [..., num_classes]
        ds = ds.map(
            functools.partial(
                batch_mixing.mix_train_batch,
                seed=config.seed,
                process_index=process_index,
                epoch=epoch,
                host_batch=host_batch,
                num_classes=builder.info.features["label"].num_classes,
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
            )
        )
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_data_options())


class CorruptImageError(ValueError):
    """A training image could not be decoded and config.skip_corrupt_images is off."""


# Undecodable training images met by this process's train iterators so far.
_corrupt_images_skipped = 0


def corrupt_images_skipped() -> int:
    """Training examples skipped so far in this process because their image did not decode.

    Counted when the host batch leaves tf.data, so it can run ahead of the
    trained step by the batches prefetched to the devices.
    """
    return _corrupt_images_skipped


def _check_decoded(batch: Batch, *, epoch: int, skip_corrupt: bool) -> Batch:
    """Counts (or fails on) the batch's undecodable examples; strips the bookkeeping keys."""
    global _corrupt_images_skipped
    valid, index = batch.pop("valid"), batch.pop("index")
    corrupt = index[~valid].tolist()
    if corrupt and not skip_corrupt:
        raise CorruptImageError(
            f"The image of training example {corrupt[0]} of epoch {epoch} (position in this host's "
            "shuffled shard) could not be decoded (corrupt or truncated file). Set "
            "--config.skip_corrupt_images=True to skip such examples and count them instead."
        )
    if corrupt:
        _corrupt_images_skipped += len(corrupt)
        logging.warning(
            "Skipped %d undecodable training image(s) at epoch %d, example index(es) %s; "
            "%d skipped so far.", len(corrupt), epoch, corrupt, _corrupt_images_skipped,
        )
    return batch


def create_train_iterator(
    config: ml_collections.ConfigDict,
    *,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    local_device_count: int | None = None,
) -> Iterator[Batch]:
    """Infinite iterator of this host's train batches, starting at `start_step`.

    Yields {"image": uint8 [local_devices, per_device, S, S, 3] (the train step
    normalises: steps.normalize), "label": int32 [local_devices, per_device]}; with
    Mixup/CutMix on (config.mixup_alpha, config.cutmix_alpha; batch_mixing.py)
    mixed float32 pixels and float32 labels [local_devices, per_device, num_classes].
    Batch k is the same whether iteration started at 0 or at any step <= k.

    An example whose image does not decode is, with config.skip_corrupt_images
    (default True), replaced in its batch by a copy of the batch's first valid
    example and counted in `corrupt_images_skipped()`; otherwise the iterator
    raises `CorruptImageError` naming the example.
    """
    process_index, process_count, local_device_count = _resolve_topology(
        process_index, process_count, local_device_count
    )
    builder = get_builder(config)
    _check_split(builder, config.train_split, "config.train_split")
    per_device = per_device_batch_size(config.batch_size, process_count, local_device_count)
    host_batch = per_device * local_device_count
    shard = _train_shard(config, process_index, process_count)
    steps = _steps_per_epoch(_num_examples(builder, shard), host_batch)
    start_epoch, first_batch = divmod(start_step, steps)
    skip_corrupt = config.skip_corrupt_images

    def batches() -> Iterator[Batch]:
        for epoch in itertools.count(start_epoch):
            epoch_batches = _train_epoch_dataset(
                builder,
                shard,
                config,
                epoch=epoch,
                first_batch=first_batch if epoch == start_epoch else 0,
                steps=steps,
                process_index=process_index,
                local_device_count=local_device_count,
                host_batch=host_batch,
            ).as_numpy_iterator()
            for batch in epoch_batches:
                yield _check_decoded(batch, epoch=epoch, skip_corrupt=skip_corrupt)

    return batches()


# Eval datasets kept alive so that `.cache()` survives between evaluations;
# only filled when config.cache_eval is set.
_CACHED_EVAL_DATASETS: dict[tuple, tuple[tf.data.Dataset, int]] = {}


def _eval_dataset(
    builder: tfds.core.DatasetBuilder,
    split: str,
    config: ml_collections.ConfigDict,
    *,
    process_index: int,
    process_count: int,
    local_device_count: int,
) -> tuple[tf.data.Dataset, int]:
    """This host's padded eval batches and their count (equal on all hosts)."""
    per_device = per_device_batch_size(
        config.eval_batch_size, process_count, local_device_count, config_key="config.eval_batch_size"
    )
    host_batch = per_device * local_device_count
    shards = tfds.even_splits(split, n=process_count, drop_remainder=False)
    shard_sizes = [_num_examples(builder, shard) for shard in shards]
    num_batches = math.ceil(max(shard_sizes) / host_batch)
    num_padding = num_batches * host_batch - shard_sizes[process_index]
    preprocessing = resolve_preprocessing(config)

    ds = builder.as_dataset(
        split=shards[process_index],
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(try_autocache=False),
    )
    ds = ds.map(
        lambda example: {
            "image": eval_image(
                example["image"],
                image_size=config.image_size,
                preprocessing=preprocessing,
            ),
            "label": tf.cast(example["label"], tf.int32),
        },
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if config.cache_eval:
        ds = ds.cache()
    ds = ds.map(lambda example: {**example, "mask": tf.constant(1.0, tf.float32)})
    padding = tf.data.Dataset.from_tensors(
        {
            "image": tf.zeros([config.image_size, config.image_size, 3], tf.uint8),
            "label": tf.constant(0, tf.int32),
            "mask": tf.constant(0.0, tf.float32),
        }
    ).repeat(num_padding)
    ds = ds.concatenate(padding).batch(host_batch, drop_remainder=True)
    ds = ds.map(lambda batch: _split_into_devices(batch, local_device_count))
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_data_options())
    return ds, num_batches


def create_eval_iterator(
    config: ml_collections.ConfigDict,
    split: str | None = None,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    local_device_count: int | None = None,
) -> tuple[Iterator[Batch], int]:
    """One pass over `split` (default config.eval_split) and its batch count.

    Yields {"image": uint8 [local_devices, per_device, S, S, 3] (the eval step
    normalises: steps.normalize), "label": int32 [...], "mask": float32
    [local_devices, per_device]}, mask 0 marking padding. Across hosts every
    example appears exactly once.
    """
    config_key = "config.eval_split" if split is None else "split"
    split = config.eval_split if split is None else split
    process_index, process_count, local_device_count = _resolve_topology(
        process_index, process_count, local_device_count
    )
    builder = get_builder(config)
    _check_split(builder, split, config_key)
    build = functools.partial(
        _eval_dataset,
        builder,
        split,
        config,
        process_index=process_index,
        process_count=process_count,
        local_device_count=local_device_count,
    )
    if config.cache_eval:
        cache_key = (
            config.dataset,
            config.data_dir,
            split,
            config.image_size,
            resolve_preprocessing(config),
            config.eval_batch_size,
            process_index,
            process_count,
            local_device_count,
        )
        if cache_key not in _CACHED_EVAL_DATASETS:
            _CACHED_EVAL_DATASETS[cache_key] = build()
        ds, num_batches = _CACHED_EVAL_DATASETS[cache_key]
    else:
        ds, num_batches = build()
    return ds.as_numpy_iterator(), num_batches
