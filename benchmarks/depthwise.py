"""Depthwise convolution: the implementations of `layers.DepthwiseConv` timed against each other.

    python benchmarks/depthwise.py --shape=32,112,112,96 --kernel_size=3 --stride=1 --rounds=5

Times the forward pass and forward plus backward (the gradient with respect to the input and the
kernel, as training needs) of every implementation in `layers.DEPTHWISE_IMPLEMENTATIONS` but 'auto',
on the backend JAX sees. The implementations run in turn, `--rounds` times, so that load from other
processes falls on all of them alike; medians are reported. Before timing, their outputs and
gradients are checked to agree. `layers.resolve_depthwise_implementation('auto')` picks per backend
from these figures (see BENCHMARKS.md). The last line printed is a JSON record of the run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from efficientnet_jax import layers

IMPLEMENTATIONS = tuple(name for name in layers.DEPTHWISE_IMPLEMENTATIONS if name != "auto")

FLAGS = flags.FLAGS
flags.DEFINE_list("shape", ["32", "112", "112", "96"], "Input batch, height, width, channels (NHWC).")
flags.DEFINE_integer("kernel_size", 3, "Depthwise kernel side.")
flags.DEFINE_integer("stride", 1, "Stride on both axes.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_integer("rounds", 5, "Timed calls of each function, interleaved.")


def compiled_functions(implementation: str, stride: int, dtype: jnp.dtype) -> tuple[Callable, Callable]:
    """Jitted forward and forward+backward of `DepthwiseConv` with this implementation. The backward
    takes the output cotangent as an argument, as a train step receives it."""

    def forward(x, kernel):
        module = layers.DepthwiseConv(kernel.shape[0], stride, implementation, dtype)
        return module.apply({"params": {"kernel": kernel}}, x)

    def gradients(x, kernel, cotangent):
        output, vjp = jax.vjp(forward, x, kernel)
        return vjp(cotangent.astype(output.dtype))

    return jax.jit(forward), jax.jit(gradients)


def time_call(fn: Callable, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def run(shape: Sequence[int], kernel_size: int, stride: int, dtype: str, rounds: int) -> dict:
    batch, height, width, channels = shape
    x = jax.random.normal(jax.random.key(0), (batch, height, width, channels), jnp.float32).astype(dtype)
    kernel = layers.depthwise_kernel_init(jax.random.key(1), (kernel_size, kernel_size, 1, channels))
    out_shape = (batch, -(-height // stride), -(-width // stride), channels)
    cotangent = jax.random.normal(jax.random.key(2), out_shape, jnp.float32)

    functions = {name: compiled_functions(name, stride, jnp.dtype(dtype)) for name in IMPLEMENTATIONS}
    results, compile_seconds = {}, {}
    for name, (forward, gradients) in functions.items():
        start = time.perf_counter()
        results[name] = jax.block_until_ready((forward(x, kernel), gradients(x, kernel, cotangent)))
        compile_seconds[name] = round(time.perf_counter() - start, 2)
    reference = results[IMPLEMENTATIONS[0]]
    tolerance = 1e-4 if dtype == "float32" else 5e-2
    for name, result in results.items():
        for got, want in zip(jax.tree.leaves(result), jax.tree.leaves(reference)):
            scale = float(jnp.max(jnp.abs(want.astype(jnp.float32)))) or 1.0
            np.testing.assert_allclose(
                np.asarray(got, np.float32) / scale,
                np.asarray(want, np.float32) / scale,
                atol=tolerance,
                err_msg=f"{name} disagrees with {IMPLEMENTATIONS[0]}",
            )

    seconds = {(name, part): [] for name in IMPLEMENTATIONS for part in ("forward", "forward_backward")}
    for _ in range(rounds):
        for name, (forward, gradients) in functions.items():
            seconds[(name, "forward")].append(time_call(forward, x, kernel))
            seconds[(name, "forward_backward")].append(time_call(gradients, x, kernel, cotangent))
    medians_ms = {
        f"{name}_{part}_ms": round(1e3 * statistics.median(v), 1) for (name, part), v in seconds.items()
    }
    return {
        **medians_ms,
        "compile_and_first_call_seconds": compile_seconds,
        "auto_picks": layers.resolve_depthwise_implementation("auto"),
        "shape": list(shape),
        "kernel_size": kernel_size,
        "stride": stride,
        "dtype": dtype,
        "rounds": rounds,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
    }


def main(argv: Sequence[str]) -> None:
    del argv
    jax.config.update("jax_enable_compilation_cache", False)
    shape = [int(s) for s in FLAGS.shape]
    if len(shape) != 4:
        raise app.UsageError(f"--shape needs batch,height,width,channels; got {FLAGS.shape}.")
    print(json.dumps(run(shape, FLAGS.kernel_size, FLAGS.stride, FLAGS.dtype, FLAGS.rounds)), flush=True)


if __name__ == "__main__":
    app.run(main)
