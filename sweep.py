"""Run a scaling experiment: `python sweep.py --config=configs/scaling/grid_search.py --workdir=runs/grid`.

Expands the sweep config into runs, checks everything before the first run starts, then trains each
run (`train.py` in a subprocess, in `<workdir>/<run name>/`) one after another. Restart the same
command after a stop or a crash: finished runs are skipped, a half-finished one resumes from its
checkpoint, failed ones are tried again. A failed run never stops the others; its error is in its
`status.json`. Ctrl-C or SIGTERM checkpoints the running run and stops.

    --dry_run                 list the runs and their train.py commands; run nothing
    --commands_file=PATH      write the train.py commands of the unfinished runs, one a line, for a
                              cluster scheduler (run them from the repository root); run nothing

Then `python report.py --workdir=runs/grid` tabulates and plots the results.
"""

import os
import shlex
import sys

from efficientnet_jax import console  # before anything imports TensorFlow: console.py imports it quietly

# isort: split
from absl import app, flags

from efficientnet_jax import experiments, sweep_runner

REPO = os.path.dirname(os.path.abspath(__file__))

FLAGS = flags.FLAGS
console.define_config_flag(None, "Sweep config file (configs/scaling/*.py).")
flags.DEFINE_string("workdir", None, "Directory of the sweep: one subdirectory per run.")
flags.DEFINE_bool("dry_run", False, "List the runs and their commands without running anything.")
flags.DEFINE_string(
    "commands_file", None, "Write the train.py commands of unfinished runs here and run nothing."
)
flags.mark_flags_as_required(["config", "workdir"])


def describe(entry: dict) -> str:
    overrides = entry["overrides"]
    return (
        f"{entry['name']:<28} {', '.join(entry['methods']):<24} depth x{entry['depth_multiplier']:.3g} "
        f"width x{entry['width_multiplier']:.3g} resolution x{entry['resolution_multiplier']:.3g} -> "
        f"model.depth={overrides['model.depth']:.4g} model.width={overrides['model.width']:.4g} "
        f"image_size={overrides['image_size']}"
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    console.log_to_file(FLAGS.log_dir)
    workdir = os.path.abspath(FLAGS.workdir)
    try:
        runs = experiments.expand_sweep(FLAGS.config)
        manifest = experiments.manifest(FLAGS.config, runs, workdir, REPO)
        sweep_runner.check_existing_runs(workdir, manifest)
    except experiments.SweepError as error:
        raise experiments.SweepError(f"Bad sweep: {error}") from error
    entries = manifest["runs"]
    print(f"{FLAGS.config.sweep.method}: {len(entries)} runs in {workdir}")
    for entry in entries:
        print("  " + describe(entry))
    if FLAGS.dry_run:
        for entry in entries:
            print(shlex.join(["python", *entry["command"]]))
        return
    sweep_runner.write_manifest(workdir, manifest)
    if FLAGS.commands_file:
        pending = [e for e in entries if not sweep_runner.is_finished(os.path.join(workdir, e["name"]))]
        with open(FLAGS.commands_file, "w") as f:
            f.writelines(shlex.join(["python", *entry["command"]]) + "\n" for entry in pending)
        print(f"Wrote {len(pending)} train.py commands to {FLAGS.commands_file} (run them from {REPO}).")
        return
    try:
        statuses = sweep_runner.run_sweep([(e["name"], e["command"]) for e in entries], workdir, cwd=REPO)
    except experiments.SweepError as error:
        raise experiments.SweepError(f"Cannot run the sweep: {error}") from error
    counts = {}
    for status in statuses.values():
        counts[status["status"]] = counts.get(status["status"], 0) + 1
    print("Sweep: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    for name, status in statuses.items():
        if status["status"] == "failed":
            print(f"  {name} failed: {status['error']}")
    if counts.get("finished", 0) != len(entries):
        sys.exit(f"Not every run finished; run the same command again to resume ({workdir}).")
    print(f"Done. Report: python report.py --workdir={workdir}")


if __name__ == "__main__":
    console.run(main)
