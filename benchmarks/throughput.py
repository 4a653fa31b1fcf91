"""Training and evaluation throughput of the project's own pmapped steps on the devices JAX sees.

    python benchmarks/throughput.py --model=efficientnet-b0 --batch=32 --resolution=224 \
        --mode=train --dtype=float32 --steps=10

It builds the step exactly as training does (`configuration.model_spec_from_config`, `create_train_state`,
`replicate`, `pmap_train_step` / `pmap_eval_step`, the RMSProp and schedule of `optim`), over all
local devices with `--batch` examples per device, on synthetic batches already on the devices, so
the figure is the step's speed and not the input pipeline's (see `benchmarks/input_pipeline.py`).

The first call pays for tracing, lowering and XLA compilation; it is timed on its own and the
compile events JAX reports during it are summed into `compile_seconds`. Then `--steps` steps are
timed one by one (each waits for its results). Every XLA compilation seen after the first step is
counted in `recompilations_after_first_step`, which should be 0. The last line printed is a JSON
record of the run.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

# Run from a checkout without installing: `python benchmarks/throughput.py`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jaxlib
import ml_collections
from absl import app, flags

from benchmarks.machine import cpu_model
from benchmarks.project_steps import benchmark_config, build_step
from efficientnet_jax import layers
from efficientnet_jax.configuration import batch_norm_group_size, model_spec_from_config

COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
BACKEND_COMPILE_EVENT = COMPILE_EVENTS[-1]

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "efficientnet-b0", "Variant: efficientnet-b0 .. efficientnet-b7 (or b0 .. b7).")
flags.DEFINE_integer(
    "batch", 32, "Examples per device; the global batch is this times the local device count."
)
flags.DEFINE_integer("resolution", None, "Image side in pixels; default: the variant's (224 for B0).")
flags.DEFINE_enum(
    "mode", "train", ["train", "eval"], "The train step (forward, backward, RMSProp, EMA) or eval."
)
flags.DEFINE_enum(
    "dtype", "float32", ["float32", "bfloat16"], "Compute dtype (bfloat16: config.half_precision)."
)
flags.DEFINE_integer("steps", 10, "Steps timed after the first (compiling) one.")
flags.DEFINE_float("width", None, "Override the variant's width coefficient (e.g. tiny test models).")
flags.DEFINE_float("depth", None, "Override the variant's depth coefficient.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width.")
flags.DEFINE_enum(
    "depthwise_implementation",
    "auto",
    list(layers.DEPTHWISE_IMPLEMENTATIONS),
    "config.model.depthwise_implementation.",
)
flags.DEFINE_bool("remat", False, "config.model.remat: rematerialise each block in the backward pass.")
flags.DEFINE_string(
    "batch_norm_group_size",
    "reference",
    "config.batch_norm_group_size: 'reference', 'all', or replicas per group ('1'). With more than one "
    "group the train step also broadcasts replica 0's moving statistics (steps.from_first_replica).",
)
flags.DEFINE_bool(
    "compilation_cache",
    False,
    "Allow JAX's persistent compilation cache (off: compile_seconds is a real compile).",
)


class CompileCounter:
    """Collects JAX's compile events (tracing, lowering, XLA compilation) from the moment it is made."""

    def __init__(self):
        self.events: list[tuple[str, float]] = []
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event: str, duration: float, **kwargs) -> None:
        if event in COMPILE_EVENTS:
            self.events.append((event, duration))

    def reset(self) -> None:
        self.events.clear()

    def seconds(self) -> float:
        return sum(duration for _, duration in self.events)

    def backend_compiles(self) -> int:
        return sum(event == BACKEND_COMPILE_EVENT for event, _ in self.events)


def time_steps(
    step: Callable, args: tuple[Any, ...], mode: str, num_steps: int, counter: CompileCounter
) -> dict[str, Any]:
    """Times the first call (compilation) and then `num_steps` calls, each to completion. In train
    mode the state is donated and fed back, as in the training loop."""
    state, batch = args
    counter.reset()
    start = time.perf_counter()
    out = jax.block_until_ready(step(state, batch))
    first_step_seconds = time.perf_counter() - start
    compile_seconds = counter.seconds()
    counter.reset()
    step_seconds = []
    for _ in range(num_steps):
        if mode == "train":
            state = out[0]
        start = time.perf_counter()
        out = jax.block_until_ready(step(state, batch))
        step_seconds.append(time.perf_counter() - start)
    return {
        "first_step_seconds": first_step_seconds,
        "compile_seconds": compile_seconds,
        "step_seconds": step_seconds,
        "recompilations_after_first_step": counter.backend_compiles(),
    }


def peak_memory() -> tuple[int, str]:
    """The devices' peak allocation where the backend tracks it (GPU, TPU), else the process's peak
    resident set (CPU, where device buffers are host memory)."""
    peaks = [(device.memory_stats() or {}).get("peak_bytes_in_use") for device in jax.local_devices()]
    if all(peak is not None for peak in peaks):
        return max(peaks), "device_peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_max_rss"


def run(config: ml_collections.ConfigDict, mode: str, num_classes: int, num_steps: int) -> dict[str, Any]:
    """Builds and times the step; returns the JSON record."""
    if num_steps < 1:
        raise ValueError(f"--steps must be at least 1, got {num_steps}.")
    counter = CompileCounter()
    step, args = build_step(config, mode, num_classes)
    timings = time_steps(step, args, mode, num_steps, counter)
    spec = model_spec_from_config(config, num_classes)
    median = statistics.median(timings["step_seconds"])
    peak_bytes, peak_source = peak_memory()
    device = jax.local_devices()[0]
    return {
        "images_per_second": round(config.batch_size / median, 2),
        "step_seconds_median": round(median, 4),
        "step_seconds_min": round(min(timings["step_seconds"]), 4),
        "step_seconds_max": round(max(timings["step_seconds"]), 4),
        "compile_seconds": round(timings["compile_seconds"], 2),
        "first_step_seconds": round(timings["first_step_seconds"], 2),
        "recompilations_after_first_step": timings["recompilations_after_first_step"],
        "peak_memory_bytes": peak_bytes,
        "peak_memory_source": peak_source,
        "model": spec.name,
        "width": spec.width,
        "depth": spec.depth,
        "mode": mode,
        "dtype": spec.dtype,
        "resolution": config.image_size,
        "per_device_batch": config.batch_size // jax.local_device_count(),
        "global_batch": config.batch_size,
        "steps": num_steps,
        "depthwise_implementation": layers.resolve_depthwise_implementation(spec.depthwise_implementation),
        "remat": spec.remat,
        "batch_norm_group_size": batch_norm_group_size(config, jax.device_count()),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "num_devices": jax.local_device_count(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
    }


def main(argv: Sequence[str]) -> None:
    del argv
    if not FLAGS.compilation_cache:
        jax.config.update("jax_enable_compilation_cache", False)
    config = benchmark_config(
        FLAGS.model,
        FLAGS.batch,
        FLAGS.resolution,
        FLAGS.dtype,
        FLAGS.width,
        FLAGS.depth,
        FLAGS.depthwise_implementation,
        FLAGS.remat,
    )
    config.batch_norm_group_size = FLAGS.batch_norm_group_size
    print(json.dumps(run(config, FLAGS.mode, FLAGS.num_classes, FLAGS.steps)), flush=True)


if __name__ == "__main__":
    app.run(main)
