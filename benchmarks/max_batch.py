"""The largest per-device batch whose train (or eval) step fits a memory budget, from XLA's own
buffer assignment, without running the step.

    python benchmarks/max_batch.py --model=efficientnet-b7 --dtype=bfloat16 --remat --budget_gib=16,80

The project's pmapped step (built as training builds it, `benchmarks/project_steps.py`) is lowered on
abstract arguments and compiled for the backend JAX sees; the compiled executable's
`memory_analysis()` gives the bytes it needs: arguments (the replicated train state and the batch) +
outputs + temporaries - outputs aliased to donated arguments.

The need is not linear in the batch at small batches (activations then fit in buffers the weight
gradients need anyway), but it is close to linear near the limit. So the search is a secant
iteration on compiled sizes: from two batches (`--start_batches`), predict the batch where the line
through the two points nearest the budget crosses it, compile there, and repeat until the batch that
fits and the next one that does not have both been compiled (exact for the first budget, a few
compiles). Later budgets are extrapolated from the line through the last bracket and marked so.

Caveats: the figures are the buffer assignment of the backend that compiles (on CPU, XLA:CPU's);
another backend's compiler fuses and schedules differently, so treat a CPU prediction for a GPU as
an estimate, and leave headroom for the runtime's own allocations. Nothing is allocated here
beyond the compiler's working memory. The last line printed is a JSON record.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# LLVM's optimisation level changes the generated code, not XLA's buffer assignment (B0 at batch 8:
# the same bytes, in 35 s instead of 60 s): compile without it, nothing here runs.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags

from benchmarks import project_steps
from efficientnet_jax import layers

GIB = 1024**3

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "efficientnet-b0", "Variant: efficientnet-b0 .. efficientnet-b7 (or b0 .. b7).")
flags.DEFINE_integer("resolution", None, "Image side in pixels; default: the variant's.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Which step.")
flags.DEFINE_enum(
    "dtype", "float32", ["float32", "bfloat16"], "Compute dtype (bfloat16: config.half_precision)."
)
flags.DEFINE_bool("remat", False, "config.model.remat: rematerialise each block in the backward pass.")
flags.DEFINE_enum(
    "depthwise_implementation",
    "auto",
    list(layers.DEPTHWISE_IMPLEMENTATIONS),
    "config.model.depthwise_implementation.",
)
flags.DEFINE_list("budget_gib", ["16", "80"], "Memory budgets per device, GiB.")
flags.DEFINE_list("start_batches", ["4", "8"], "Two per-device batches compiled to start the search.")
flags.DEFINE_integer("max_compiles", 6, "Compiles the search may add after the first two.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width.")


def abstract_arguments(
    config: ml_collections.ConfigDict, mode: str, initial_state: Callable
) -> tuple[Any, Any]:
    """Shapes and dtypes of the step's arguments, with the leading device axis pmap expects."""
    num_devices = jax.local_device_count()
    state = jax.eval_shape(initial_state, jax.random.key(0))
    per_device = config.batch_size // num_devices
    size = config.image_size
    batch = {
        "image": jax.ShapeDtypeStruct((per_device, size, size, 3), jnp.float32),
        "label": jax.ShapeDtypeStruct((per_device,), jnp.int32),
    }
    if mode == "eval":
        batch["mask"] = jax.ShapeDtypeStruct((per_device,), jnp.float32)

    def add_device_axis(leaf: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((num_devices,) + leaf.shape, leaf.dtype)

    return jax.tree.map(add_device_axis, state), jax.tree.map(add_device_axis, batch)


def step_memory(per_device_batch: int) -> dict[str, Any]:
    """Bytes the compiled step needs at this per-device batch, and how long compiling took."""
    config = project_steps.benchmark_config(
        FLAGS.model,
        per_device_batch,
        FLAGS.resolution,
        FLAGS.dtype,
        depthwise_implementation=FLAGS.depthwise_implementation,
        remat=FLAGS.remat,
    )
    step, initial_state = project_steps.pmapped_step(config, FLAGS.mode, FLAGS.num_classes)
    args = abstract_arguments(config, FLAGS.mode, initial_state)
    start = time.perf_counter()
    stats = step.lower(*args).compile().memory_analysis()
    compile_seconds = time.perf_counter() - start
    needed = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
    )
    return {
        "per_device_batch": per_device_batch,
        "bytes_needed": needed,
        "temp_bytes": stats.temp_size_in_bytes,
        "argument_bytes": stats.argument_size_in_bytes,
        "output_bytes": stats.output_size_in_bytes,
        "alias_bytes": stats.alias_size_in_bytes,
        "compile_seconds": round(compile_seconds, 1),
        "resolution": config.image_size,
    }


def search_largest_batch(
    budget_bytes: float, needs: dict[int, int], measure: Callable[[int], int], max_compiles: int
) -> bool:
    """Secant search, adding compiled sizes to `needs` (batch -> bytes), until the largest batch within
    `budget_bytes` and the next one above it are both in `needs`. Returns whether it got there."""
    for _ in range(max_compiles):
        fitting = [b for b in needs if needs[b] <= budget_bytes]
        if fitting and max(fitting) + 1 in needs:
            return True
        low, high = bracket(needs, budget_bytes)
        slope = (needs[high] - needs[low]) / (high - low)
        predicted = max(1, math.floor(low + (budget_bytes - needs[low]) / slope))
        for batch in (predicted, predicted + 1):
            if batch not in needs:
                needs[batch] = measure(batch)
                break
    fitting = [b for b in needs if needs[b] <= budget_bytes]
    return bool(fitting) and max(fitting) + 1 in needs


def bracket(needs: dict[int, int], budget_bytes: float) -> tuple[int, int]:
    """The two compiled batches nearest the budget: the largest that fits and the smallest that does
    not, or the two nearest on one side when the budget is not bracketed yet."""
    batches = sorted(needs)
    below = [b for b in batches if needs[b] <= budget_bytes]
    above = [b for b in batches if needs[b] > budget_bytes]
    if below and above:
        return below[-1], above[0]
    side = below[-2:] if below else above[:2]
    return (side[0], side[1]) if len(side) == 2 else (batches[0], batches[-1])


def main(argv: Sequence[str]) -> None:
    del argv
    jax.config.update("jax_enable_compilation_cache", False)
    start = sorted({int(b) for b in FLAGS.start_batches})
    if len(start) != 2 or start[0] < 1:
        raise app.UsageError(
            f"--start_batches needs two different positive batches, got {FLAGS.start_batches}."
        )
    budgets = [float(b) for b in FLAGS.budget_gib]
    records: dict[int, dict[str, Any]] = {}

    def measure(batch: int) -> int:
        records[batch] = step_memory(batch)
        print(json.dumps(records[batch]), flush=True)
        return records[batch]["bytes_needed"]

    needs = {batch: measure(batch) for batch in start}
    exact = search_largest_batch(budgets[0] * GIB, needs, measure, FLAGS.max_compiles)
    low, high = bracket(needs, budgets[0] * GIB)
    bytes_per_example = (needs[high] - needs[low]) / (high - low)
    largest = {}
    for index, budget in enumerate(budgets):
        fitting = [b for b in needs if needs[b] <= budget * GIB]
        if index == 0 and exact:
            largest[f"{budget:g}"] = {"per_device_batch": max(fitting), "method": "compiled"}
        else:
            predicted = math.floor(low + (budget * GIB - needs[low]) / bytes_per_example)
            largest[f"{budget:g}"] = {"per_device_batch": max(0, predicted), "method": "extrapolated"}
    print(
        json.dumps(
            {
                "model": FLAGS.model,
                "resolution": records[start[0]]["resolution"],
                "mode": FLAGS.mode,
                "dtype": FLAGS.dtype,
                "remat": FLAGS.remat,
                "depthwise_implementation": layers.resolve_depthwise_implementation(
                    FLAGS.depthwise_implementation
                ),
                "largest_per_device_batch_by_budget_gib": largest,
                "bytes_per_example_near_limit": round(bytes_per_example),
                "bytes_needed_by_batch": {b: needs[b] for b in sorted(needs)},
                "compile_seconds_median": sorted(r["compile_seconds"] for r in records.values())[
                    len(records) // 2
                ],
                "backend": jax.default_backend(),
                "device_kind": jax.devices()[0].device_kind,
                "jax_version": jax.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
