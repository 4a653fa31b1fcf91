"""Host-CPU throughput of the training input pipeline, in images per second per core.

The training loop needs the host to decode and augment `batch / hosts` images per step; whether that keeps
the accelerators fed is a question of images per second per CPU core, which this measures on real JPEGs:

    python -m benchmarks.input_pipeline --image_size=224 --augment=randaugment --threads=1
    python -m benchmarks.input_pipeline --image_size=224 --augment_on_device --threads=1

It runs the pipeline's own per-example code (`input_pipeline.preprocess_train_examples`: fused JPEG decode
and random crop, bicubic resize, then, unless --augment_on_device, flip and optional AutoAugment/RandAugment,
with the per-example skip of undecodable images), then batches the uint8 images as the pipeline does (one
device). --augment_on_device is the host's whole work when the train step augments
(config.augment_on_device): decode, crop and resize only. The JPEGs are sklearn's two sample photographs
re-encoded at ImageNet-like sizes, held in memory: file reading and TFRecord parsing are not measured (they
are cheap next to decoding). `--threads` sizes tf.data's private thread pool; with 1 thread the figure is
per core. The last line printed is a JSON record of the result.

    python -m benchmarks.input_pipeline --cost_split --image_size=224 --threads=1 --rounds=3

measures, interleaved over the rounds so that ratios compare like with like on a shared machine: the three
modes above (host RandAugment, host flip only, the on-device mode), then the on-device mode's host work split
into cumulative stages on the same images and crops (full JPEG decode; decode of the crop window only;
+ bicubic resize; + the per-example isolation of undecodable images; + batching, which is the on-device
mode), and the next lever: libjpeg's reduced-resolution decode (`ratio=2/4/8`, DCT scaling), on whole
images and on the crop where its shorter side allows it (side >= ratio x image_size, so that the
resize still only shrinks), with the share of crops that allow it and how far its pixels are from the
pipeline's.
"""

import datetime
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
import sklearn.datasets
import tensorflow as tf
from absl import app, flags

from benchmarks.machine import cpu_model
from configs import default
from efficientnet_jax import configuration, input_pipeline

# (height, width) of typical ImageNet photographs (the median is about 375x500).
SOURCE_SIZES = ((375, 500), (500, 375), (333, 500), (500, 500))
SAMPLE_IMAGES = ("china.jpg", "flower.jpg")
BATCH_SIZE = 32

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 224, "Training resolution (224 for B0, 380 for B4, ...).")
flags.DEFINE_enum("augment", "none", ["none", "autoaugment", "randaugment"], "Augmentation policy.")
flags.DEFINE_bool(
    "augment_on_device", False, "The host's work when the step augments: decode+crop+resize only."
)
flags.DEFINE_enum(
    "resize_method", None, ["tf1_bicubic", "bicubic", "bilinear"],
    "config.resize_method of the full pipeline (default: the recipe's, TF1 bicubic for B0).",
)
flags.DEFINE_integer("threads", 1, "tf.data private thread pool size; 1 gives the per-core figure.")
flags.DEFINE_integer("num_images", 320, "Images timed, after one warm-up batch.")
flags.DEFINE_integer("jpeg_quality", 90, "Quality of the re-encoded JPEGs (ImageNet's are mostly ~90).")
flags.DEFINE_bool(
    "cost_split",
    False,
    "Time, interleaved over --rounds: host RandAugment, host flip only and the on-device mode (full "
    "pipeline), then the on-device mode's host work stage by stage (decode, crop window, resize, "
    "isolation of undecodable images, batching) and reduced-resolution decodes.",
)
flags.DEFINE_integer("rounds", 3, "--cost_split: interleaved rounds; medians are reported.")


def source_jpegs(quality: int) -> list[bytes]:
    """The sample photographs resized to ImageNet-like shapes and JPEG-encoded."""
    encoded = []
    for name in SAMPLE_IMAGES:
        image = tf.constant(sklearn.datasets.load_sample_image(name))
        for height, width in SOURCE_SIZES:
            resized = tf.image.resize(image, [height, width], method="area")
            pixels = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
            encoded.append(tf.io.encode_jpeg(pixels, quality=quality).numpy())
    return encoded


def benchmark_config(image_size: int, augment: str, augment_on_device: bool) -> ml_collections.ConfigDict:
    """The default recipe at `image_size`, with `augment` ('none' = no policy) on the host or not."""
    config = default.get_config()
    config.image_size = image_size
    config.augment = None if augment == "none" else augment
    config.augment_on_device = augment_on_device
    return config


def _examples(jpegs: Sequence[bytes], num_images: int) -> tf.data.Dataset:
    """(index, {"image": JPEG bytes, "label"}) for `num_images` examples cycling over `jpegs`."""
    sources = tf.data.Dataset.from_tensor_slices(list(jpegs)).repeat().take(num_images).enumerate()
    return sources.map(lambda index, image: (index, {"image": image, "label": index % 1000}))


def _epoch_seed(config: ml_collections.ConfigDict) -> tf.Tensor:
    return tf.constant([config.seed, 0], tf.int64)


def _per_core(ds: tf.data.Dataset, threads: int) -> tf.data.Dataset:
    """`ds` on a private pool of `threads` threads, one thread per op (the pipeline's own options)."""
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.prefetch(2).with_options(options)


def train_batches(
    jpegs: Sequence[bytes], config: ml_collections.ConfigDict, num_images: int, threads: int
) -> tf.data.Dataset:
    """Device-shaped batches (one device) of `num_images` examples cycling over `jpegs`, made as
    `input_pipeline._train_epoch_dataset` makes them: per-example preprocessing with its isolation of
    undecodable images, batching, the stand-in for undecodable examples, the split over devices."""
    examples = _examples(jpegs, num_images)
    ds = input_pipeline.preprocess_train_examples(examples, _epoch_seed(config), config)
    ds = ds.batch(BATCH_SIZE, drop_remainder=True).map(input_pipeline._fill_invalid_with_first_valid)
    ds = ds.map(lambda batch: input_pipeline._split_into_devices(batch, 1))
    return _per_core(ds, threads)


def images_per_second(ds: tf.data.Dataset) -> tuple[float, int]:
    """Throughput after the first batch, which pays for tracing and pool start-up."""
    iterator = iter(ds)
    next(iterator)
    count, start = 0, time.perf_counter()
    for batch in iterator:
        count += int(tf.size(batch["label"]))
    return count / (time.perf_counter() - start), count


# ---------------------------------------------------------------------------------------------------------
# --cost_split: the on-device mode's host work, stage by stage, and a reduced-resolution decode
# ---------------------------------------------------------------------------------------------------------

# Reduced-resolution JPEG decodes (libjpeg's DCT scaling: `decode_jpeg(..., ratio=r)`), by decreasing r.
DECODE_RATIOS = (8, 4, 2)


def _crop_seed(epoch_seed: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """The seed `input_pipeline.train_image` draws example `index`'s crop with (so the stages below cut
    the same windows as the pipeline)."""
    seed = tf.random.experimental.stateless_fold_in(epoch_seed, index)
    return tf.random.experimental.stateless_split(seed, num=3)[0]


def _crop_box(image_bytes: tf.Tensor, seed: tf.Tensor, config: ml_collections.ConfigDict) -> tf.Tensor:
    return input_pipeline.train_crop_box(tf.image.extract_jpeg_shape(image_bytes), seed, config)


def allowed_ratio(crop_box: tf.Tensor, image_size: int) -> tf.Tensor:
    """The largest of DECODE_RATIOS (else 1) at which the crop's shorter side still has `image_size`
    pixels, i.e. side >= ratio * image_size: decoding at 1/ratio then only downscales less."""
    side = tf.minimum(crop_box[2], crop_box[3])
    ratio = tf.constant(1, tf.int32)
    for r in reversed(DECODE_RATIOS):  # 2, 4, 8: the last that fits wins
        ratio = tf.where(side >= r * image_size, r, ratio)
    return ratio


def reduced_decode_and_crop(image_bytes: tf.Tensor, crop_box: tf.Tensor, ratio: tf.Tensor) -> tf.Tensor:
    """The crop decoded at 1/ratio of the resolution (ratio in 1, DECODE_RATIOS): the window in the
    scaled image's coordinates (libjpeg crops after scaling), rounded down."""
    ratios = (1, *reversed(DECODE_RATIOS))

    def decode_at(r: int):
        return lambda: tf.image.decode_and_crop_jpeg(image_bytes, crop_box // r, channels=3, ratio=r)

    branch = tf.argmax(tf.cast(tf.equal(tf.constant(ratios), ratio), tf.int32), output_type=tf.int32)
    return tf.switch_case(branch, [decode_at(r) for r in ratios])


def host_stages(config: ml_collections.ConfigDict) -> dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]:
    """(example index, JPEG bytes) -> uint8 image, for each cumulative stage of the on-device mode's host
    work up to the resize, and for the reduced-resolution decodes."""
    epoch_seed = _epoch_seed(config)
    size = config.image_size
    resize_method = configuration.resolve_preprocessing(config).resize_method

    def decode(index, image_bytes):
        return tf.io.decode_jpeg(image_bytes, channels=3)

    def decode_crop(index, image_bytes):
        box = _crop_box(image_bytes, _crop_seed(epoch_seed, index), config)
        return tf.image.decode_and_crop_jpeg(image_bytes, box, channels=3)

    def decode_crop_resize(index, image_bytes):
        seed = tf.random.experimental.stateless_fold_in(epoch_seed, index)
        return input_pipeline.train_image(image_bytes, seed, config)  # config.augment_on_device: no flip

    def reduced_decode_crop_resize(index, image_bytes):
        box = _crop_box(image_bytes, _crop_seed(epoch_seed, index), config)
        return input_pipeline.resize(
            reduced_decode_and_crop(image_bytes, box, allowed_ratio(box, size)), size, resize_method
        )

    stages = {"decode": decode, "decode_crop": decode_crop, "decode_crop_resize": decode_crop_resize}
    for r in DECODE_RATIOS:
        stages[f"decode_ratio_{r}"] = lambda index, image_bytes, r=r: tf.io.decode_jpeg(
            image_bytes, channels=3, ratio=r
        )
    stages["reduced_decode_crop_resize_where_allowed"] = reduced_decode_crop_resize
    return stages


def stage_dataset(
    jpegs: Sequence[bytes],
    stage: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    num_images: int,
    threads: int,
) -> tf.data.Dataset:
    """`stage` on each example, one pixel of each result kept (the stage runs in full; batching the
    images would add the cost that `train_batches` measures)."""
    examples = _examples(jpegs, num_images)
    ds = examples.map(
        lambda index, example: {"pixel": stage(index, example["image"])[0, 0, 0], "label": index}
    )
    return _per_core(ds.batch(BATCH_SIZE), threads)


def isolation_dataset(
    jpegs: Sequence[bytes], config: ml_collections.ConfigDict, num_images: int, threads: int
) -> tf.data.Dataset:
    """`input_pipeline.preprocess_train_examples` (decode, crop, resize, each example in its own
    error-isolating dataset), one pixel of each image kept: the pipeline up to its batching."""
    ds = input_pipeline.preprocess_train_examples(_examples(jpegs, num_images), _epoch_seed(config), config)
    ds = ds.map(lambda example: {"pixel": example["image"][0, 0, 0], "label": example["label"]})
    return _per_core(ds.batch(BATCH_SIZE), threads)


def crop_statistics(jpegs: Sequence[bytes], config: ml_collections.ConfigDict, num_images: int) -> dict:
    """Over the timed examples' crops: the share that allows each reduced decode, and how far the
    reduced decode's pixels are from the pipeline's (full decode, bicubic resize) where allowed."""
    epoch_seed, size = _epoch_seed(config), config.image_size

    def both(index, example):
        image_bytes = example["image"]
        box = _crop_box(image_bytes, _crop_seed(epoch_seed, index), config)
        ratio = allowed_ratio(box, size)
        exact = input_pipeline.train_image(
            image_bytes, tf.random.experimental.stateless_fold_in(epoch_seed, index), config
        )
        reduced = input_pipeline.resize(
            reduced_decode_and_crop(image_bytes, box, ratio),
            size,
            configuration.resolve_preprocessing(config).resize_method,
        )
        difference = tf.abs(tf.cast(exact, tf.int32) - tf.cast(reduced, tf.int32))
        return ratio, tf.minimum(box[2], box[3]), tf.reduce_mean(tf.cast(difference, tf.float32))

    ratios, sides, differences = (
        np.asarray(x) for x in next(iter(_examples(jpegs, num_images).map(both).batch(num_images)))
    )
    reduced = ratios > 1
    return {
        "crop_shorter_side_median": int(np.median(sides)),
        "share_allowing_ratio": {str(r): round(float((sides >= r * size).mean()), 4) for r in DECODE_RATIOS},
        "mean_abs_pixel_difference_where_reduced": (
            round(float(differences[reduced].mean()), 2) if reduced.any() else None
        ),
    }


def cost_split(jpegs: Sequence[bytes], image_size: int, num_images: int, threads: int, rounds: int) -> dict:
    """Every measurement `rounds` times, interleaved, so that the ratios compare like with like on a
    machine whose load changes: the full pipeline in three modes, then the on-device mode's host work
    stage by stage. Returns the medians, the split and the ratio; prints one JSON line per timing."""
    on_device = benchmark_config(image_size, "none", augment_on_device=True)
    measurements = {
        "host_randaugment": lambda: train_batches(
            jpegs, benchmark_config(image_size, "randaugment", False), num_images, threads
        ),
        "host_flip_only": lambda: train_batches(
            jpegs, benchmark_config(image_size, "none", False), num_images, threads
        ),
        "on_device_mode": lambda: train_batches(jpegs, on_device, num_images, threads),
        "isolation": lambda: isolation_dataset(jpegs, on_device, num_images, threads),
        **{
            name: (lambda stage=stage: stage_dataset(jpegs, stage, num_images, threads))
            for name, stage in host_stages(on_device).items()
        },
    }
    rates = {name: [] for name in measurements}
    for round_index in range(rounds):
        for name, make in measurements.items():
            rate, count = images_per_second(make())
            rates[name].append(rate / threads)
            timing = {"round": round_index, "measurement": name, "images_timed": count}
            print(json.dumps({**timing, "images_per_second_per_core": round(rate / threads, 1)}), flush=True)
    median = {name: statistics.median(values) for name, values in rates.items()}
    ms = {name: 1000.0 / rate for name, rate in median.items()}  # per image, per core
    return {
        "images_per_second_per_core": {name: round(rate, 1) for name, rate in median.items()},
        "on_device_over_host_randaugment": {
            "of_medians": round(median["on_device_mode"] / median["host_randaugment"], 2),
            "per_round": [
                round(a / b, 2) for a, b in zip(rates["on_device_mode"], rates["host_randaugment"])
            ],
        },
        "on_device_host_ms_per_image": {
            "decode": round(ms["decode"], 3),
            "crop_window_saving": round(ms["decode"] - ms["decode_crop"], 3),
            "resize": round(ms["decode_crop_resize"] - ms["decode_crop"], 3),
            "isolation": round(ms["isolation"] - ms["decode_crop_resize"], 3),
            "batching": round(ms["on_device_mode"] - ms["isolation"], 3),
            "total": round(ms["on_device_mode"], 3),
        },
        "crops": crop_statistics(jpegs, on_device, num_images),
    }


def main(argv: Sequence[str]) -> None:
    del argv
    record = {
        "image_size": FLAGS.image_size,
        "threads": FLAGS.threads,
        "load_average_1min_start": round(os.getloadavg()[0], 2),
        "tf_version": tf.__version__,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    jpegs = source_jpegs(FLAGS.jpeg_quality)
    if FLAGS.cost_split:
        record.update(
            cost_split(jpegs, FLAGS.image_size, FLAGS.num_images + BATCH_SIZE, FLAGS.threads, FLAGS.rounds)
        )
    else:
        config = benchmark_config(FLAGS.image_size, FLAGS.augment, FLAGS.augment_on_device)
        config.resize_method = FLAGS.resize_method
        rate, count = images_per_second(
            train_batches(jpegs, config, FLAGS.num_images + BATCH_SIZE, FLAGS.threads)
        )
        record.update(
            images_per_second=round(rate, 1),
            images_per_second_per_core=round(rate / FLAGS.threads, 1),
            augment=FLAGS.augment,
            augment_on_device=FLAGS.augment_on_device,
            resize_method=configuration.resolve_preprocessing(config).resize_method,
            images_timed=count,
        )
    record["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(record))


if __name__ == "__main__":
    app.run(main)
