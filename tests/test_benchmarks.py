"""The accelerator suite runs at tiny sizes (`--smoke`) on one CPU device and must produce a line for
every kind of measurement it makes on a GPU. Its throughput lines are `benchmarks/throughput.py`'s
records of the project's real train and eval steps, so they also check what that benchmark promises:
the JSON record's keys, one device's batch, and no XLA compilation after the first step. Timings are
printed by the benchmarks, never asserted."""

import importlib.util
import json
import os
import subprocess
import sys

from tests import tensorflow_free, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


SUITE = os.path.join(REPO, "benchmarks", "accelerator_suite.py")
SUITE_KINDS = {"versions", "throughput", "depthwise", "timm", "precision", "large_variant", "largest_batch"}


def run_suite(tmp_path, *flags: str) -> list[dict]:
    """The accelerator suite in an interpreter that cannot import TensorFlow (as on the accelerator
    image), on one CPU device; its results.jsonl, line by line."""
    env = tensorflow_free.environment(str(tmp_path), xla_flags.for_devices(1))
    out = tmp_path / "out"
    command = [sys.executable, SUITE, f"--out={out}", *flags]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "results:" in completed.stdout  # the summary was printed
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_accelerator_suite_smoke_measures_every_kind(tmp_path):
    records = run_suite(tmp_path, "--smoke")
    by_kind = {}
    for record in records:
        by_kind.setdefault(record["kind"], []).append(record)
    versions = records[0]
    assert versions["kind"] == "versions" and versions["backend"] == "cpu" and versions["device_count"] == 1
    assert SUITE_KINDS <= by_kind.keys()

    for record in by_kind["throughput"] + by_kind["large_variant"]:
        assert record["status"] == "ok", record
        assert RECORD_KEYS <= record.keys()
        assert record["images_per_second"] > 0 and record["peak_memory_bytes"] > 0
        assert record["compile_seconds"] > 0  # the compile listener saw the first step's compilation...
        assert record["recompilations_after_first_step"] == 0  # ...and none after it
        assert record["backend"] == "cpu" and record["num_devices"] == 1
        assert record["peak_device_memory_bytes"] is None  # CPU: no device memory counter
    assert {r["mode"] for r in by_kind["throughput"]} == {"train", "eval"}
    for record in by_kind["throughput"]:  # throughput.py's record says which step it timed
        step = f"_{record['mode']}_{record['global_batch']}_{record['depthwise_implementation']}"
        assert record["name"].endswith(step), record
    assert {r["depthwise_implementation"] for r in by_kind["throughput"]} == {"xla", "shift"}
    assert any(r["remat"] for r in by_kind["large_variant"])
    assert by_kind["largest_batch"][0]["per_device_batch"] == 2

    (depthwise,) = by_kind["depthwise"]
    assert depthwise["faster"] in ("xla", "shift") and depthwise["speedup"] >= 1
    assert depthwise["auto_uses"] == "shift"  # what training's default resolves to on CPU
    assert depthwise["xla_images_per_second"] > 0 and depthwise["shift_images_per_second"] > 0

    (precision,) = by_kind["precision"]
    assert 0 <= precision["mean_abs_diff"] <= precision["max_abs_diff"]
    assert 0 <= precision["top1_agreement"] <= 1

    timm_importable = importlib.util.find_spec("timm") and importlib.util.find_spec("torch")
    for record in by_kind["timm"]:
        if timm_importable:
            assert record["status"] == "ok" and record["ours_over_timm"] > 0
        else:
            assert record["status"] == "skipped" and "timm" in record["reason"]


def test_accelerator_suite_records_what_the_deadline_leaves_no_time_for(tmp_path):
    records = run_suite(tmp_path, "--smoke", "--deadline=1")
    assert records[0]["kind"] == "versions"
    assert SUITE_KINDS - {"versions"} <= {record["kind"] for record in records[1:]}
    for record in records[1:]:
        assert record["status"] == "skipped" and record["reason"], record


def test_accelerator_suite_refuses_a_jax_older_than_the_minimum_in_one_line(tmp_path):
    # A distribution record that shadows the installed jax's: the suite reads versions before importing.
    (tmp_path / "jax-0.1.0.dist-info").mkdir()
    (tmp_path / "jax-0.1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: jax\nVersion: 0.1.0\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    command = [sys.executable, SUITE, f"--out={tmp_path / 'out'}"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2
    assert completed.stderr.strip().count("\n") == 0 and "jax 0.1.0 is older" in completed.stderr
    assert not (tmp_path / "out").exists()
