"""The throughput benchmark runs the project's real train step and reports what it promises: the
JSON record's keys, one device's batch, and no XLA compilation after the first step. Timings are
printed by the benchmark, never asserted."""

import json
import os
import subprocess
import sys

from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THROUGHPUT = os.path.join(REPO, "benchmarks", "throughput.py")
RECORD_KEYS = {
    "images_per_second",
    "step_seconds_median",
    "compile_seconds",
    "peak_memory_bytes",
    "backend",
    "device_kind",
    "num_devices",
    "jax_version",
    "jaxlib_version",
    "recompilations_after_first_step",
}


def test_throughput_benchmark_reports_the_train_step_without_recompilation():
    # One CPU device, as a user's machine has: the benchmark must not depend on the tests' 8 fake ones.
    env = dict(os.environ, XLA_FLAGS=xla_flags.for_devices(1))
    command = [
        sys.executable,
        THROUGHPUT,
        "--model=efficientnet-b0",
        "--width=0.25",
        "--depth=0.25",
        "--resolution=16",
        "--batch=2",
        "--num_classes=10",
        "--mode=train",
        "--steps=2",
        "--compilation_cache",
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads(completed.stdout.strip().splitlines()[-1])

    assert RECORD_KEYS <= record.keys()
    assert record["compile_seconds"] > 0  # the compile listener saw the first step's compilation...
    assert record["recompilations_after_first_step"] == 0  # ...and none after it
    assert record["num_devices"] == 1 and record["global_batch"] == 2 and record["mode"] == "train"
    assert record["backend"] == "cpu" and record["depthwise_implementation"] == "shift"
    assert record["images_per_second"] > 0 and record["peak_memory_bytes"] > 0
