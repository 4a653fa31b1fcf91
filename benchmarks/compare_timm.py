"""This project against timm's `tf_efficientnet_b*` on the same machine, in one run.

    python benchmarks/compare_timm.py --peer_python=/path/to/venv-with-timm/bin/python \
        --model=efficientnet-b0 --batch=32 --dtype=float32 --modes=train,eval --rounds=3

Runs `benchmarks/throughput.py` (with this interpreter) and `benchmarks/peers/timm_throughput.py` (with
`--peer_python`, an environment that has torch and timm) as subprocesses, alternating them
`--rounds` times per mode, so that load from other processes on a shared machine falls on both alike.
Reported per mode: the median images/second of each, the ratio of the medians, and the median of the
per-round ratios (each round's two runs are neighbours in time). JAX's compilation cache is shared
between this project's runs, so only the first one compiles; its `compile_seconds` is reported.
The 1-minute load average is recorded before and after each run. The last line printed is a JSON
record of the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

# Run from a checkout: the repository root holds `benchmarks/child.py` (standard library only).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.child import run_json

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
OURS = os.path.join(BENCHMARKS, "throughput.py")
PEER = os.path.join(BENCHMARKS, "peers", "timm_throughput.py")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer_python", required=True, help="Python of an environment with torch and timm.")
    parser.add_argument("--model", default="efficientnet-b0")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--modes", default="train,eval", help="Comma-separated: train, eval.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="Timed steps per run.")
    args = parser.parse_args(argv)
    args.modes = args.modes.split(",")
    if not set(args.modes) <= {"train", "eval"}:
        parser.error(f"--modes takes train and/or eval, got {args.modes}.")
    return args


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def benchmark_flags(args: argparse.Namespace, mode: str) -> list[str]:
    flags = [
        f"--model={args.model}",
        f"--batch={args.batch}",
        f"--mode={mode}",
        f"--dtype={args.dtype}",
        f"--steps={args.steps}",
    ]
    return flags + ([f"--resolution={args.resolution}"] if args.resolution else [])


def summarize(runs: list[dict]) -> dict:
    ours = [r["ours"]["images_per_second"] for r in runs]
    timm = [r["timm"]["images_per_second"] for r in runs]
    return {
        "ours_images_per_second_median": statistics.median(ours),
        "timm_images_per_second_median": statistics.median(timm),
        "ratio_of_medians": round(statistics.median(ours) / statistics.median(timm), 3),
        "median_of_round_ratios": round(statistics.median(o / t for o, t in zip(ours, timm)), 3),
        "ours_images_per_second": ours,
        "timm_images_per_second": timm,
        "ours_compile_seconds_first_run": runs[0]["ours"]["compile_seconds"],
        "ours_recompilations_after_first_step": max(
            r["ours"]["recompilations_after_first_step"] for r in runs
        ),
        "ours_peak_memory_bytes": max(r["ours"]["peak_memory_bytes"] for r in runs),
        "timm_peak_memory_bytes": max(r["timm"]["peak_memory_bytes"] for r in runs),
        "load_average_1min": [r["load_before"] for r in runs] + [runs[-1]["load_after"]],
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="compare_timm_xla_cache_") as cache:
        env = dict(
            os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
        )
        runs: dict[str, list[dict]] = {mode: [] for mode in args.modes}
        for round_index in range(args.rounds):
            for mode in args.modes:
                load_before = load_average()
                flags = benchmark_flags(args, mode)
                ours = run_json([sys.executable, OURS, *flags, "--compilation_cache"], env)
                timm = run_json([args.peer_python, PEER, *flags], env)
                record = {
                    "round": round_index,
                    "mode": mode,
                    "ours": ours,
                    "timm": timm,
                    "load_before": load_before,
                    "load_after": load_average(),
                }
                runs[mode].append(record)
                print(
                    json.dumps(
                        {k: record[k] for k in ("round", "mode", "load_before", "load_after")}
                        | {
                            "ours_images_per_second": ours["images_per_second"],
                            "timm_images_per_second": timm["images_per_second"],
                        }
                    ),
                    flush=True,
                )
    first = runs[args.modes[0]][0]
    summary = {
        "model": args.model,
        "batch": args.batch,
        "dtype": args.dtype,
        "rounds": args.rounds,
        "steps": args.steps,
        "resolution": first["ours"]["resolution"],
        **{mode: summarize(mode_runs) for mode, mode_runs in runs.items()},
        "backend": first["ours"]["backend"],
        "device_kind": first["ours"]["device_kind"],
        "cpu_model": first["ours"]["cpu_model"],
        "cpu_count": first["ours"]["cpu_count"],
        "jax_version": first["ours"]["jax_version"],
        "jaxlib_version": first["ours"]["jaxlib_version"],
        "torch_version": first["timm"]["torch_version"],
        "timm_version": first["timm"]["timm_version"],
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
