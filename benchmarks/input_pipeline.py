"""Host-CPU throughput of the training input pipeline, in images per second per core.

The training loop needs the host to decode and augment `batch / hosts` images per step; whether that keeps
the accelerators fed is a question of images per second per CPU core, which this measures on real JPEGs:

    python -m benchmarks.input_pipeline --image_size=224 --augment=randaugment --threads=1
    python -m benchmarks.input_pipeline --image_size=224 --augment_on_device --threads=1

It runs the pipeline's own per-example code (`input_pipeline.preprocess_train_examples`: fused JPEG decode
and random crop, bicubic resize, then, unless --augment_on_device, flip and optional AutoAugment/RandAugment,
with the per-example skip of undecodable images), then batches the uint8 images. --augment_on_device is the
host's whole work when the train step augments (config.augment_on_device): decode, crop and resize only. The JPEGs are sklearn's two sample photographs re-encoded at
ImageNet-like sizes, held in memory: file reading and TFRecord parsing are not measured (they are cheap
next to decoding). `--threads` sizes tf.data's private thread pool; with 1 thread the figure is per core.
The last line printed is a JSON record of the result.
"""

import json
import time
from collections.abc import Sequence

import ml_collections
import sklearn.datasets
import tensorflow as tf
from absl import app, flags

from benchmarks.machine import cpu_model
from configs import default
from efficientnet_jax import input_pipeline

# (height, width) of typical ImageNet photographs (the median is about 375x500).
SOURCE_SIZES = ((375, 500), (500, 375), (333, 500), (500, 500))
SAMPLE_IMAGES = ("china.jpg", "flower.jpg")
BATCH_SIZE = 32

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 224, "Training resolution (224 for B0, 380 for B4, ...).")
flags.DEFINE_enum("augment", "none", ["none", "autoaugment", "randaugment"], "Augmentation policy.")
flags.DEFINE_bool("augment_on_device", False, "The host's work when the step augments: decode+crop+resize only.")
flags.DEFINE_integer("threads", 1, "tf.data private thread pool size; 1 gives the per-core figure.")
flags.DEFINE_integer("num_images", 320, "Images timed, after one warm-up batch.")
flags.DEFINE_integer("jpeg_quality", 90, "Quality of the re-encoded JPEGs (ImageNet's are mostly ~90).")


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


def train_batches(
    jpegs: Sequence[bytes], config: ml_collections.ConfigDict, num_images: int, threads: int
) -> tf.data.Dataset:
    """Batches of `num_images` preprocessed examples cycling over `jpegs`, on `threads` threads."""
    sources = tf.data.Dataset.from_tensor_slices(list(jpegs)).repeat().take(num_images).enumerate()
    examples = sources.map(lambda index, image: (index, {"image": image, "label": index % 1000}))
    epoch_seed = tf.constant([config.seed, 0], tf.int64)
    ds = input_pipeline.preprocess_train_examples(examples, epoch_seed, config)
    ds = ds.batch(BATCH_SIZE).prefetch(2)
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def images_per_second(ds: tf.data.Dataset) -> tuple[float, int]:
    """Throughput after the first batch, which pays for tracing and pool start-up."""
    iterator = iter(ds)
    next(iterator)
    count, start = 0, time.perf_counter()
    for batch in iterator:
        count += int(batch["image"].shape[0])
    return count / (time.perf_counter() - start), count


def main(argv: Sequence[str]) -> None:
    del argv
    config = benchmark_config(FLAGS.image_size, FLAGS.augment, FLAGS.augment_on_device)
    ds = train_batches(source_jpegs(FLAGS.jpeg_quality), config, FLAGS.num_images + BATCH_SIZE, FLAGS.threads)
    rate, count = images_per_second(ds)
    print(
        json.dumps(
            {
                "images_per_second": round(rate, 1),
                "images_per_second_per_core": round(rate / FLAGS.threads, 1),
                "image_size": FLAGS.image_size,
                "augment": FLAGS.augment,
                "augment_on_device": FLAGS.augment_on_device,
                "threads": FLAGS.threads,
                "images_timed": count,
                "tf_version": tf.__version__,
                "cpu_model": cpu_model(),
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
