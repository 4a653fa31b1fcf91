"""Single EfficientNet layers in LiteRT, float32 against full-integer int8: whether this CPU's XNNPACK
int8 kernels are faster than its float32 ones, the question behind deploy.py's int8 rows.

    python benchmarks/litert_ops.py --repeats=200

Each layer (shapes of B0's and Lite0's blocks) is converted alone by TensorFlow's converter, once in
float32 and once full-integer int8 with per-channel weights (as export.py converts a network), and run
by the LiteRT interpreter on one thread with its default XNNPACK delegate. All the interpreters run in
turn, `--repeats` times, so that load from other processes falls on all alike; medians are reported.
XNNPACK's int8 matrix kernels need dot-product instructions (x86 VNNI, Arm dotprod) to beat float32;
the record names which of them the CPU has. The last line printed is a JSON record of the run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 200, "Timed calls of each layer and precision, interleaved.")
flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads.")

DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "asimddp")


def layers(tf, rng) -> dict:
    """{name: (function of one float32 input, input shape)}."""

    def weights(*shape):
        return tf.constant(rng.normal(size=shape).astype(np.float32) * 0.1)

    expand, project, depthwise = weights(1, 1, 24, 144), weights(1, 1, 480, 80), weights(3, 3, 144, 1)
    return {
        "1x1 conv 56x56 24->144, relu6": (
            lambda x: tf.nn.relu6(tf.nn.conv2d(x, expand, 1, "SAME")),
            (1, 56, 56, 24),
        ),
        "1x1 conv 14x14 480->80": (lambda x: tf.nn.conv2d(x, project, 1, "SAME"), (1, 14, 14, 480)),
        "3x3 depthwise 56x56x144, relu6": (
            lambda x: tf.nn.relu6(tf.nn.depthwise_conv2d(x, depthwise, [1, 1, 1, 1], "SAME")),
            (1, 56, 56, 144),
        ),
        "swish 56x56x144 (LOGISTIC, MUL)": (lambda x: x * tf.sigmoid(x), (1, 56, 56, 144)),
    }


def convert(tf, function, shape: tuple, int8: bool, rng) -> bytes:
    concrete = tf.function(function).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.normal(size=shape).astype(np.float32)] for _ in range(8)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            present = next((line for line in f if line.startswith(("flags", "Features"))), "").split()
    except OSError:
        return []
    return [flag for flag in DOT_PRODUCT_FLAGS if flag in present]


def main(argv):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from benchmarks.machine import cpu_model

    rng = np.random.default_rng(0)
    interpreters = {}
    for name, (function, shape) in layers(tf, rng).items():
        for precision in ("float32", "int8"):
            interpreter = Interpreter(
                model_content=convert(tf, function, shape, precision == "int8", rng),
                num_threads=FLAGS.threads,
            )
            interpreter.allocate_tensors()
            (detail,) = interpreter.get_input_details()
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            interpreter.invoke()  # warm-up: XNNPACK packs the weights on the first call
            interpreters[name, precision] = interpreter
    times = {key: [] for key in interpreters}
    for _ in range(FLAGS.repeats):
        for key, interpreter in interpreters.items():
            start = time.perf_counter()
            interpreter.invoke()
            times[key].append(time.perf_counter() - start)
    results = {}
    print("| layer | float32 (ms) | int8 (ms) | int8 / float32 |\n|---|---|---|---|")
    for name in layers(tf, rng):
        float_ms, int8_ms = (1000 * statistics.median(times[name, p]) for p in ("float32", "int8"))
        results[name] = {"float32_ms": float_ms, "int8_ms": int8_ms}
        print(f"| {name} | {float_ms:.3f} | {int8_ms:.3f} | {int8_ms / float_ms:.2f} |")
    print(
        json.dumps(
            {
                "cpu_model": cpu_model(),
                "dot_product_flags": cpu_flags(),
                "threads": FLAGS.threads,
                "repeats": FLAGS.repeats,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
