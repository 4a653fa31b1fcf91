"""Time of the device augmentation (`efficientnet_jax.device_augment`) per batch, alone and as a fraction
of the train step it would run in.

    python benchmarks/device_augment.py --resolution=224 --batches=32,128 --step_batch=32

For each policy (none = the random flip only, autoaugment, randaugment), batch and batching strategy
(`augment_batch`'s `batching`: `vmap`, every example through a select over the op families; `map`,
`lax.map` over the examples, each running only its chosen ops), the jitted augmentation of a uint8 batch
of real photographs (scikit-learn's samples, resized) already on the device: the first call (compilation) and
then `--repeats` calls at successive steps (so the ops drawn change), each to completion. Then the
project's B0 train step at `--step_batch` (`benchmarks/throughput.py` in its own process, float32),
and each augmentation at that batch as a fraction of it. One JSON line per measurement; the last line
is the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

# Run from a checkout without installing: `python benchmarks/device_augment.py`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

from benchmarks.child import run_json
from benchmarks.machine import cpu_model
from benchmarks.throughput import CompileCounter
from efficientnet_jax import device_augment

THROUGHPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py")
POLICIES = ("none", "autoaugment", "randaugment")
BATCHINGS = ("vmap", "map")  # what `augment_batch`'s "auto" chooses between


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=224, help="Image side (B0: 224).")
    parser.add_argument("--batches", default="32,128", help="Comma-separated batch sizes to augment.")
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"Comma-separated, of {POLICIES}.")
    parser.add_argument("--batchings", default=",".join(BATCHINGS), help=f"Comma-separated, of {BATCHINGS}.")
    parser.add_argument("--randaugment_num_layers", type=int, default=2)
    parser.add_argument("--randaugment_magnitude", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls after the compiling one.")
    parser.add_argument("--model", default="efficientnet-b0", help="The train step's model.")
    parser.add_argument("--step_batch", type=int, default=32, help="The train step's batch; 0: no step.")
    parser.add_argument("--step_steps", type=int, default=3, help="Timed train steps.")
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.policies = args.policies.split(",")
    args.batchings = args.batchings.split(",")
    if not set(args.policies) <= set(POLICIES) or not set(args.batchings) <= set(BATCHINGS):
        parser.error(f"--policies takes {POLICIES}, --batchings {BATCHINGS}.")
    return args


def photographs(resolution: int, batch: int) -> jax.Array:
    """The two sample photographs resized to resolution x resolution, alternating, uint8 on the device."""
    images = [
        np.asarray(Image.fromarray(load_sample_image(name)).resize((resolution, resolution), Image.BICUBIC))
        for name in ("china.jpg", "flower.jpg")
    ]
    return jax.device_put(np.stack([images[i % 2] for i in range(batch)]))


def augmentation(policy: str, batching: str, num_layers: int, magnitude: float) -> Callable:
    """The jitted augmentation of a batch at a step, as the train step would call it."""
    augment = None if policy == "none" else policy
    key = jax.random.key(0)

    def augment_at_step(images: jax.Array, step: jax.Array) -> jax.Array:
        keys = device_augment.example_keys(key, step, jnp.arange(images.shape[0]))
        return device_augment.augment_batch(images, keys, augment, num_layers, magnitude, batching=batching)

    return jax.jit(augment_at_step)


def time_augmentation(fn: Callable, images: jax.Array, repeats: int, counter: CompileCounter) -> dict:
    counter.reset()
    start = time.perf_counter()
    jax.block_until_ready(fn(images, 0))
    first_call_seconds = time.perf_counter() - start
    compile_seconds = counter.seconds()
    counter.reset()
    seconds = []
    for step in range(1, repeats + 1):
        start = time.perf_counter()
        jax.block_until_ready(fn(images, step))
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "seconds_median": round(median, 4),
        "seconds_min": round(min(seconds), 4),
        "seconds_max": round(max(seconds), 4),
        "images_per_second": round(images.shape[0] / median, 1),
        "compile_seconds": round(compile_seconds, 2),
        "first_call_seconds": round(first_call_seconds, 2),
        "recompilations_after_first_call": counter.backend_compiles(),
    }


def train_step(model: str, batch: int, resolution: int, steps: int) -> dict:
    """`benchmarks/throughput.py` in its own process, on one device (this process's view of the machine)."""
    command = [
        sys.executable,
        THROUGHPUT,
        f"--model={model}",
        f"--batch={batch}",
        f"--resolution={resolution}",
    ]
    return run_json(command + ["--mode=train", f"--steps={steps}"], env=dict(os.environ))


def main(argv=None) -> None:
    args = parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)  # compile_seconds is a real compile
    counter = CompileCounter()
    records = []
    for batch in args.batches:
        images = photographs(args.resolution, batch)
        for policy in args.policies:
            for batching in args.batchings:
                fn = augmentation(policy, batching, args.randaugment_num_layers, args.randaugment_magnitude)
                record = {
                    "kind": "augmentation",
                    "policy": policy,
                    "batching": batching,
                    "batch": batch,
                    "resolution": args.resolution,
                    **time_augmentation(fn, images, args.repeats, counter),
                }
                records.append(record)
                print(json.dumps(record), flush=True)
    summary = {"kind": "summary", "load_average_1min": round(os.getloadavg()[0], 2)}
    if args.step_batch:
        step = train_step(args.model, args.step_batch, args.resolution, args.step_steps)
        print(json.dumps({"kind": "train_step", **step}), flush=True)
        summary["train_step_seconds_median"] = step["step_seconds_median"]
        summary["fraction_of_train_step"] = {
            f"{r['policy']}/{r['batching']}": round(r["seconds_median"] / step["step_seconds_median"], 4)
            for r in records
            if r["batch"] == args.step_batch
        }
    summary.update(
        backend=jax.default_backend(),
        device_kind=jax.local_devices()[0].device_kind,
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count(),
        jax_version=jax.__version__,
        randaugment=[args.randaugment_num_layers, args.randaugment_magnitude],
    )
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
