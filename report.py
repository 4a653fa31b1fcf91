"""Report a scaling experiment: `python report.py --workdir=runs/grid` after `sweep.py`.

Writes `<workdir>/report/` (or --output_dir): report.csv and report.md (one row per run: scaling
settings, parameters, multiply-adds, top-1, status, Pareto front), accuracy_vs_flops.png and, for a
grid search, grid_search.png with the chosen alpha, beta, gamma. Runs not finished yet appear with
their status and no accuracy; run it again when they are.
"""

from efficientnet_jax import console  # before anything imports TensorFlow: console.py imports it quietly

# isort: split
from absl import app, flags

from efficientnet_jax import scaling_report

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The sweep's --workdir.")
flags.DEFINE_string("output_dir", None, "Where to write the report (default: <workdir>/report).")
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    console.log_to_file(FLAGS.log_dir)
    paths = scaling_report.write_report(FLAGS.workdir, FLAGS.output_dir)
    for kind, path in paths.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    console.run(main)
