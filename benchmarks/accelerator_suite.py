"""Everything we want to know from one short loan of an accelerator, in one command.

    python3 benchmarks/accelerator_suite.py --out=DIR            # within --deadline (450 s) on a GPU
    python3 benchmarks/accelerator_suite.py --out=DIR --smoke    # tiny sizes, on CPU, for the tests

Measures, in order of importance: B0 at 224 in bfloat16 (train and eval step, per-device batch 128),
the depthwise convolution's `xla` against `shift` implementation on that train step (the evidence for
`auto` on this backend), timm's `tf_efficientnet_b0` on the same device and batch (bfloat16
autocast, channels-last), bfloat16 against float32 logits of B0, B0 at batch 256, B0 in float32,
B4 at 380, and B7 at 600 with rematerialisation at the largest batch that fits.

Every measurement runs in its own process (`benchmarks/child.py`): `throughput.py` times the
project's step built exactly as training builds it, `peers/timm_throughput.py` times timm and
`precision.py` compares the logits. Each part has a time budget; when the overall `--deadline` is
too near for a part's budget, the part is recorded as skipped. One JSON line per measurement goes
to DIR/results.jsonl as soon as it is known (the first line: versions and devices), so a run that
is cut off still leaves what it measured; a short summary is printed at the end.

The accelerator image has neither TensorFlow nor ml-collections. Nothing here imports TensorFlow;
ml-collections comes from the wheels in `.whl/` (`benchmarks/fetch_wheels.sh`) when it is not
installed. Standard library only until the version check has passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.child import ChildError, run_json  # noqa: E402

BENCHMARKS = os.path.join(REPO, "benchmarks")
WHEELS = os.path.join(REPO, ".whl")
SUMMARY_SECONDS = 5  # kept free at the end of the deadline for the summary


class Unsupported(Exception):
    """This interpreter cannot run the suite; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What a run measures. The full run's sizes are the ones we want figures for; `--smoke` keeps
    every part but makes it tiny, to check the plumbing on a CPU in seconds per part."""

    width: float | None  # None: each variant's own coefficients and resolution
    depth: float | None
    resolution: int | None
    num_classes: int
    b0_batches: tuple[int, ...]
    float32_batches: tuple[int, ...]
    b4_batch: int | None  # None: B7 alone stands for the large variants (--smoke: one compile less)
    b7_batches: tuple[int, ...]  # tried largest first; the first that runs is the answer
    precision_batch: int
    steps: int
    large_steps: int  # timed steps of B4 and B7
    # The step the depthwise comparison and the large variants time: 'train' (what we want to know);
    # 'eval' in --smoke, where two more train compiles would double the run and the train path is
    # already exercised by B0.
    comparison_mode: str


FULL = Sizes(None, None, None, 1000, (128, 256), (128,), 64, (64, 32, 16), 64, 20, 5, "train")
SMOKE = Sizes(0.25, 0.25, 32, 10, (2,), (), None, (2,), 2, 1, 1, "eval")


@dataclasses.dataclass(frozen=True)
class Step:
    """One timed step of this project: the arguments of `throughput.py`."""

    model: str
    mode: str
    dtype: str
    batch: int
    depthwise: str
    remat: bool = False

    @property
    def name(self) -> str:
        short = self.model.removeprefix("efficientnet-")
        dtype = {"bfloat16": "bf16", "float32": "fp32"}[self.dtype]
        suffix = ("_remat" if self.remat else "") + f"_{self.depthwise}"
        return f"{short}_{dtype}_{self.mode}_{self.batch}{suffix}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="Folder for results.jsonl (created if missing).")
    parser.add_argument("--deadline", type=float, default=450, help="Seconds for the whole run.")
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes, one step each (CPU tests).")
    return parser.parse_args(argv)


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.10.2' -> (0, 10, 2); a pre-release suffix ('0.11.0rc1') is dropped."""
    return tuple(int(re.match(r"\d+", part).group()) for part in version.split(".")[:3])


def minimum_jax() -> str:
    """The lowest jax the project supports, read from requirements.txt (its one statement of it)."""
    with open(os.path.join(REPO, "requirements.txt")) as f:
        return re.search(r"^jax>=([\d.]+)", f.read(), re.MULTILINE).group(1)


def ensure_ml_collections() -> str:
    """ml-collections is pure Python: when it is not installed, the wheels in `.whl/` go on the path
    as they are (Python imports from a wheel like from a zip; PyYAML falls back to its pure-Python
    code there). Children find them through PYTHONPATH."""
    if importlib.util.find_spec("ml_collections"):
        return "installed"
    wheels = sorted(glob.glob(os.path.join(WHEELS, "*.whl")))
    if not wheels:
        raise Unsupported(
            "accelerator_suite: ml_collections is not installed and .whl/ holds no wheels; run "
            "benchmarks/fetch_wheels.sh on a machine with internet and carry .whl/ here."
        )
    sys.path.extend(wheels)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), *wheels]))
    if not importlib.util.find_spec("ml_collections"):
        raise Unsupported(f"accelerator_suite: ml_collections is in none of {wheels}.")
    return ".whl"


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_versions() -> dict[str, Any]:
    """The versions record, or `Unsupported` if a required package is missing or jax is too old."""
    versions = {package: installed_version(package) for package in ("jax", "jaxlib", "flax", "optax")}
    missing = [package for package, version in versions.items() if version is None]
    if missing:
        raise Unsupported(
            f"accelerator_suite: {', '.join(missing)} not installed; the suite needs jax, "
            "jaxlib, flax and optax."
        )
    if version_tuple(versions["jax"]) < version_tuple(minimum_jax()):
        raise Unsupported(
            f"accelerator_suite: jax {versions['jax']} is older than the project's minimum "
            f"{minimum_jax()} (requirements.txt)."
        )
    versions["ml_collections"] = ensure_ml_collections()
    try:
        import jax  # after the checks: an old or missing jax fails above with one line

        device = jax.local_devices()[0]
    except (ImportError, RuntimeError) as error:  # a broken install, a backend that does not start
        first_line = str(error).strip().partition("\n")[0]
        raise Unsupported(f"accelerator_suite: jax {versions['jax']} does not start: {first_line}") from None
    return {
        "python": sys.version.split()[0],
        **versions,
        "torch": installed_version("torch"),
        "timm": installed_version("timm"),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.local_device_count(),
    }


class Results:
    """results.jsonl, appended to and closed one line at a time (so a run killed at any moment leaves
    every line it finished), and the records kept for the summary."""

    def __init__(self, out: str, deadline_seconds: float):
        os.makedirs(out, exist_ok=True)
        self.path = os.path.join(out, "results.jsonl")
        open(self.path, "w").close()
        self.start = time.monotonic()
        self.deadline = self.start + deadline_seconds
        self.records: list[dict[str, Any]] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def timeout(self, budget: float) -> float | None:
        """Seconds a part with this budget may run now, or None if the deadline leaves it less than
        half its budget (then it would most likely be cut off and measure nothing)."""
        left = self.deadline - time.monotonic() - SUMMARY_SECONDS
        return min(budget, left) if left >= budget / 2 else None

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "elapsed_seconds": round(self.elapsed(), 1)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.records.append(record)
        print(
            f"[{record['elapsed_seconds']:6.1f} s] {record['kind']} {record.get('name', '')}: "
            f"{describe(record)}",
            flush=True,
        )
        return record


def describe(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return f"{record['status']} ({record['reason']})"
    if "images_per_second" in record:
        return f"{record['images_per_second']} img/s"
    return "ok"


class Suite:
    """The parts of one run. Each part records one line; a child that fails or times out records
    its reason, and the run goes on."""

    def __init__(self, sizes: Sizes, results: Results, depthwise: str):
        self.sizes = sizes
        self.results = results
        self.depthwise = depthwise  # the implementation of every step but the depthwise comparison's
        self.measured: dict[Step, dict[str, Any]] = {}

    def skipped(self, kind: str, name: str, reason: str) -> dict[str, Any]:
        return self.results.write({"kind": kind, "name": name, "status": "skipped", "reason": reason})

    def child(self, kind: str, name: str, budget: float, command: list[str]) -> dict[str, Any]:
        """Runs one measurement process within its budget; its record (ok, failed or skipped), not
        yet written, so that the caller can add to it."""
        record = {"kind": kind, "name": name}
        timeout = self.results.timeout(budget)
        if timeout is None:
            reason = f"deadline: {budget:.0f} s budget, {self.results.elapsed():.0f} s of the run used"
            return {**record, "status": "skipped", "reason": reason}
        try:
            return {**record, "status": "ok", **run_json(command, dict(os.environ), timeout)}
        except ChildError as error:
            return {**record, "status": "failed", "reason": str(error)}

    def step(self, kind: str, step: Step, budget: float, steps: int) -> dict[str, Any]:
        """This project's step timed by throughput.py; each distinct step is measured once per run."""
        if step not in self.measured:
            command = [
                sys.executable,
                os.path.join(BENCHMARKS, "throughput.py"),
                f"--model={step.model}",
                f"--mode={step.mode}",
                f"--dtype={step.dtype}",
                f"--batch={step.batch}",
                f"--depthwise_implementation={step.depthwise}",
                f"--remat={step.remat}",
                f"--steps={steps}",
                f"--num_classes={self.sizes.num_classes}",
                *self.size_flags(),
            ]
            record = self.child(kind, step.name, budget, command)
            if record["status"] == "ok":
                on_device = record["peak_memory_source"] == "device_peak_bytes_in_use"
                record["peak_device_memory_bytes"] = record["peak_memory_bytes"] if on_device else None
            self.measured[step] = self.results.write(record)
        return self.measured[step]

    def size_flags(self) -> list[str]:
        """The model-size overrides of --smoke, as flags of throughput.py and precision.py."""
        sizes = self.sizes
        return [
            f"--{key}={value}" for key in ("width", "depth", "resolution") if (value := getattr(sizes, key))
        ]

    def b0(self, mode: str, dtype: str, batch: int, depthwise: str | None = None) -> Step:
        return Step("efficientnet-b0", mode, dtype, batch, depthwise or self.depthwise)

    def throughput(self, dtype: str, batch: int) -> None:
        self.step("throughput", self.b0("train", dtype, batch), 90, self.sizes.steps)
        self.step("throughput", self.b0("eval", dtype, batch), 45, self.sizes.steps)

    def depthwise_comparison(self) -> None:
        """Both implementations on the B0 bfloat16 train step; the one `auto` already uses is
        measured by the throughput part and not again."""
        batch, mode = self.sizes.b0_batches[0], self.sizes.comparison_mode
        name = f"b0_bf16_{mode}_{batch}"
        records = {
            impl: self.step("throughput", self.b0(mode, "bfloat16", batch, impl), 90, self.sizes.steps)
            for impl in ("xla", "shift")
        }
        failed = [impl for impl, record in records.items() if record["status"] != "ok"]
        if failed:
            self.skipped("depthwise", name, f"no measurement of {', '.join(failed)}")
            return
        speeds = {impl: record["images_per_second"] for impl, record in records.items()}
        faster = max(speeds, key=speeds.get)
        self.results.write(
            {
                "kind": "depthwise",
                "name": name,
                "status": "ok",
                **{f"{impl}_images_per_second": speed for impl, speed in speeds.items()},
                "faster": faster,
                "speedup": round(max(speeds.values()) / min(speeds.values()), 3),
                "auto_uses": auto_depthwise(),
            }
        )

    def timm(self, mode: str) -> None:
        """timm's tf_efficientnet_b0 on the same device and batch, and ours over it."""
        batch = self.sizes.b0_batches[0]
        name = f"b0_bf16_{mode}_{batch}"
        if not (importlib.util.find_spec("torch") and importlib.util.find_spec("timm")):
            self.skipped("timm", name, "torch or timm not importable")
            return
        command = [
            sys.executable,
            os.path.join(BENCHMARKS, "peers", "timm_throughput.py"),
            "--model=efficientnet-b0",
            f"--mode={mode}",
            "--dtype=bfloat16",
            "--channels_last",
            f"--batch={batch}",
            f"--steps={self.sizes.steps}",
            f"--num_classes={self.sizes.num_classes}",
        ]
        command += [f"--resolution={self.sizes.resolution}"] if self.sizes.resolution else []
        ours = self.measured.get(self.b0(mode, "bfloat16", batch), {})
        record = self.child("timm", name, 75, command)
        if record["status"] == "ok" and ours.get("status") == "ok":
            record["ours_images_per_second"] = ours["images_per_second"]
            record["ours_over_timm"] = round(ours["images_per_second"] / record["images_per_second"], 3)
        self.results.write(record)

    def precision(self) -> None:
        sizes = self.sizes
        command = [
            sys.executable,
            os.path.join(BENCHMARKS, "precision.py"),
            "--model=efficientnet-b0",
            f"--batch={sizes.precision_batch}",
            f"--num_classes={sizes.num_classes}",
            *self.size_flags(),
        ]
        self.results.write(
            self.child("precision", f"b0_bf16_vs_fp32_eval_{sizes.precision_batch}", 60, command)
        )

    def large_variants(self) -> None:
        mode = self.sizes.comparison_mode
        if self.sizes.b4_batch:
            b4 = Step("efficientnet-b4", mode, "bfloat16", self.sizes.b4_batch, self.depthwise)
            self.step("large_variant", b4, 90, self.sizes.large_steps)
        tried = []
        for batch in self.sizes.b7_batches:
            step = Step("efficientnet-b7", mode, "bfloat16", batch, self.depthwise, remat=True)
            tried.append(batch)
            if self.step("large_variant", step, 150, self.sizes.large_steps)["status"] == "ok":
                self.results.write(
                    {
                        "kind": "largest_batch",
                        "name": f"b7_bf16_{mode}_remat",
                        "status": "ok",
                        "per_device_batch": batch,
                        "tried": tried,
                    }
                )
                return
        self.skipped("largest_batch", f"b7_bf16_{mode}_remat", f"none of the batches {tried} ran")

    def parts(self) -> list[Callable[[], None]]:
        """In order of importance: what a cut-off run loses is at the end."""
        first, *others = self.sizes.b0_batches
        return [
            lambda: self.throughput("bfloat16", first),
            self.depthwise_comparison,
            lambda: self.timm("train"),
            lambda: self.timm("eval"),
            self.precision,
            *[lambda batch=batch: self.throughput("bfloat16", batch) for batch in others],
            *[lambda batch=batch: self.throughput("float32", batch) for batch in self.sizes.float32_batches],
            self.large_variants,
        ]


def auto_depthwise() -> str:
    """What `config.model.depthwise_implementation='auto'` resolves to on this backend."""
    from efficientnet_jax import layers  # after check_versions: it needs flax

    return layers.resolve_depthwise_implementation("auto")


def summary(records: list[dict[str, Any]]) -> str:
    """A few lines a person reads: one per measurement, then the verdicts."""
    lines = [f"{'kind':<14} {'name':<32} {'status':<8} {'img/s':>9} {'compile s':>9} {'peak GiB':>8}"]
    for r in records[1:]:
        peak = r.get("peak_device_memory_bytes")
        lines.append(
            f"{r['kind']:<14} {r.get('name', ''):<32} {r['status']:<8} "
            f"{r.get('images_per_second', ''):>9} {r.get('compile_seconds') or '':>9} "
            f"{round(peak / 2**30, 2) if peak else '':>8}"
        )
        if r["kind"] == "depthwise" and r["status"] == "ok":
            lines.append(f"  depthwise: {r['faster']} is {r['speedup']}x faster; auto uses {r['auto_uses']}")
        if r["kind"] == "timm" and "ours_over_timm" in r:
            lines.append(f"  ours / timm: {r['ours_over_timm']}")
        if r["kind"] == "precision" and r["status"] == "ok":
            lines.append(
                f"  bf16 vs fp32 logits: max {r['max_abs_diff']:.3g}, mean {r['mean_abs_diff']:.3g}, "
                f"top-1 agreement {r['top1_agreement']:.3f}"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    # Before JAX starts: this process and each child take GPU memory as they need it, so a timm
    # child and this process's context share the device, and each child's peak is its own.
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    try:
        versions = check_versions()
    except Unsupported as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    results = Results(args.out, args.deadline)
    sizes = SMOKE if args.smoke else FULL
    # In --smoke every step but the comparison's uses `xla`: on CPU it compiles about 3x faster than
    # `shift`. The full run uses what training would use on this backend.
    suite = Suite(sizes, results, depthwise="xla" if args.smoke else auto_depthwise())
    results.write(
        {
            "kind": "versions",
            "status": "ok",
            "smoke": args.smoke,
            "deadline_seconds": args.deadline,
            **versions,
        }
    )
    for part in suite.parts():
        part()
    print(summary(results.records), flush=True)
    print(f"results: {results.path}", flush=True)


if __name__ == "__main__":
    main()
