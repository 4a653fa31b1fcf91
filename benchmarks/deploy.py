"""Deployment speed: the jitted JAX model against its exports in ONNX Runtime and LiteRT (float32, int8).

    python benchmarks/deploy.py --variants=efficientnet-b0,lite0,edgetpu-s,v2-b0 --latency_repeats=20

For each variant (random weights, batch norm recalibrated: speed does not depend on their values)
it exports, with efficientnet_jax.export, LiteRT float32 and full-integer int8 (uint8 pixels in,
calibrated on crops of the three photographs the environment ships) at batch 1 and ONNX with a
dynamic batch; each export's own check against JAX runs as it is written. Then a fresh process per
thread setting (one thread; all cores) times, on the same inputs, per-image latency at batch 1 (the
median of --latency_repeats calls) and images/s at batch 32 (LiteRT runs its batch-1 model 32 times, as a
phone app does). The JAX model is predict.py's (prediction.Classifier.forward: the `auto` depthwise;
one thread through XLA's CPU flags). The machine may be shared: compare ratios within one run. The
last line printed is a JSON record of the run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "variants", ["efficientnet-b0", "lite0", "edgetpu-s", "v2-b0"], "Variants to export and time."
)
flags.DEFINE_integer("latency_repeats", 20, "Timed batch-1 calls per model (the median is reported).")
flags.DEFINE_integer("batch_repeats", 3, "Timed batch-32 calls per model (the median is reported).")
flags.DEFINE_integer(
    "child_threads", None, "Internal: time the exports in --directory with this many threads (0: all cores)."
)
flags.DEFINE_string("child_directory", None, "Internal: where the parent process wrote the exports.")

BATCH = 32
RUNTIMES = ("jax", "onnx", "litert_float32", "litert_int8")


def random_classifier(variant: str, **overrides):
    """The variant with random weights and batch-norm statistics recalibrated on crops of the
    photographs (the statistics of one batch of them), as prediction.load_classifier returns a
    checkpoint's network: activations of a trained network's scale, which random statistics are not."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from efficientnet_jax import prediction, steps
    from efficientnet_jax.checkpointing import CheckpointLocation, ModelRecord
    from efficientnet_jax.model import EfficientNet, model_spec
    from efficientnet_jax.normalizations import IMAGENET_NORMALIZATION

    spec = model_spec(variant, num_classes=1000, **overrides)
    model = EfficientNet(spec)
    # Compiled, not op by op, and on a 32-pixel input (the variables do not depend on the image size):
    # eagerly, they were the full-size export tests' largest cost (BENCHMARKS.md, "Deployment").
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    # momentum 0: the moving statistics become the batch's; no dropout or stochastic depth
    calibrating = EfficientNet(
        dataclasses.replace(spec, batch_norm_momentum=0.0, dropout_rate=0.0, drop_connect_rate=0.0)
    )
    images = steps.normalize(photograph_crops(spec.resolution, 8), IMAGENET_NORMALIZATION)
    _, recalibrated = jax.jit(
        lambda v, x: calibrating.apply(v, x, train=True, mutable=["batch_stats"])
    )(variables, images)
    variables = {**variables, **recalibrated}
    record = ModelRecord.of(spec, IMAGENET_NORMALIZATION, eval_crop_padding=0)
    forward = jax.jit(
        lambda v, pixels: model.apply(v, steps.normalize(pixels, IMAGENET_NORMALIZATION), train=False)
    )
    return prediction.Classifier(
        CheckpointLocation(f"random {variant}", 0, ""), record, spec, "ema", variables, forward
    )


def photograph_crops(resolution: int, count: int):
    """uint8 [count, resolution, resolution, 3]: random squares of the environment's photographs."""
    import matplotlib
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_sample_images

    paths = [
        *load_sample_images().filenames,
        os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"),
    ]
    photos = [tf.io.decode_jpeg(tf.io.read_file(path)).numpy() for path in paths]
    rng = np.random.default_rng(0)
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        side = rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2]))
        top, left = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        crop = tf.image.resize(photo[top : top + side, left : left + side], [resolution] * 2, "bicubic")
        crops.append(np.clip(np.round(crop.numpy()), 0, 255).astype(np.uint8))
    return np.stack(crops)


def write_exports(directory: str) -> dict:
    """Every variant's exports, and each export's check against JAX."""
    from efficientnet_jax import export

    checks = {}
    for variant in FLAGS.variants:
        classifier = random_classifier(variant)
        images = photograph_crops(classifier.spec.resolution, 32)
        for name, format, quantization, batch in [
            ("onnx", "onnx", "none", "dynamic"),
            ("litert_float32", "litert", "none", "1"),
            ("litert_int8", "litert", "int8", "1"),
        ]:
            path = os.path.join(directory, f"{variant}.{name}")
            _, check = export.export_classifier(
                classifier, format, path, images, quantization=quantization, batch=batch, input="uint8"
            )
            checks[f"{variant} {name}"] = check.summary()
            print(f"{variant} {name}: {check.summary()}", flush=True)
    return checks


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up (JAX: compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_exports(directory: str, threads: int) -> dict:
    """{variant: {runtime: {"batch1_ms", "batch32_images_per_second"}}} with `threads` (0: all cores)."""
    import jax
    import numpy as np

    from efficientnet_jax import deployed

    results = {}
    for variant in FLAGS.variants:
        classifier = random_classifier(variant)
        one = photograph_crops(classifier.spec.resolution, 1)
        many = np.concatenate([one] * BATCH)
        runners = {"jax": lambda x, c=classifier: jax.block_until_ready(c.forward(c.variables, x))}
        for runtime in RUNTIMES[1:]:
            runners[runtime] = deployed.load(
                os.path.join(directory, f"{variant}.{runtime}"), threads or None
            ).logits
        results[variant] = {
            runtime: {
                "batch1_ms": 1000
                * median_seconds(lambda run=run, one=one: run(one), FLAGS.latency_repeats),
                "batch32_images_per_second": BATCH
                / median_seconds(lambda run=run, many=many: run(many), FLAGS.batch_repeats),
            }
            for runtime, run in runners.items()
        }
    return results


def table(by_threads: dict) -> str:
    lines = [
        "| variant | runtime | batch 1, 1 thread (ms) | batch 1, all cores (ms) "
        "| batch 32, all cores (images/s) |",
        "|---|---|---|---|---|",
    ]
    for variant in FLAGS.variants:
        for runtime in RUNTIMES:
            one, all_cores = (by_threads[threads][variant][runtime] for threads in ("1", "0"))
            lines.append(
                f"| {variant} | {runtime} | {one['batch1_ms']:.1f} | {all_cores['batch1_ms']:.1f} "
                f"| {all_cores['batch32_images_per_second']:.1f} |"
            )
    return "\n".join(lines)


def main(argv):
    if FLAGS.child_threads is not None:
        print(json.dumps(time_exports(FLAGS.child_directory, FLAGS.child_threads)))
        return
    from benchmarks.child import run_json
    from benchmarks.machine import cpu_model

    with tempfile.TemporaryDirectory() as directory:
        checks = write_exports(directory)
        by_threads = {}
        for threads in (1, 0):
            env = dict(os.environ)
            if threads == 1:  # XLA's CPU client: one thread for the program, none for Eigen
                env["XLA_FLAGS"] = (
                    env.get("XLA_FLAGS", "")
                    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
                ).strip()
            command = [
                sys.executable,
                os.path.abspath(__file__),
                f"--child_threads={threads}",
                f"--child_directory={directory}",
            ]
            command += [
                f"--variants={','.join(FLAGS.variants)}",
                f"--latency_repeats={FLAGS.latency_repeats}",
                f"--batch_repeats={FLAGS.batch_repeats}",
            ]
            by_threads[str(threads)] = run_json(command, env)
    print(table(by_threads))
    print(
        json.dumps(
            {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "checks": checks, "results": by_threads}
        )
    )


if __name__ == "__main__":
    app.run(main)
