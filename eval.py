"""Evaluate a checkpoint: `python eval.py --config=configs/imagenet.py:b0 --checkpoint=/runs/b0`.

--checkpoint is a step directory (`<workdir>/checkpoints/<step>`), or a workdir (its newest step, or
--step=N). The eval preprocessing runs on --split (default config.eval_split) over all devices of
all hosts, every example counted once, the images cropped, resized (to their size) and normalised as
the checkpoint's weights were (its model record, unless --config.image_size, --config.eval_preprocessing,
--config.eval_crop_padding, --config.resize_method or --config.input_normalization say otherwise); the
metrics are printed and written as JSON to --output (default
`<workdir>/eval_<split>_<step>_<weights>.json`). With --follow it evaluates every checkpoint of a
training workdir as it appears, and stops after the job's final step.
"""

import json

from efficientnet_jax import console  # before anything imports TensorFlow: console.py imports it quietly

# isort: split
import jax
from absl import app, flags, logging

from efficientnet_jax import checkpointing, distributed, evaluation

FLAGS = flags.FLAGS
console.define_config_flag("configs/quickstart.py", "Configuration the checkpoint was trained with.")
flags.DEFINE_string(
    "checkpoint", None, "A checkpoint step directory, or a workdir (newest step, or --step).", required=True
)
flags.DEFINE_integer(
    "step", None, "With a workdir as --checkpoint: the step to evaluate (default: the newest)."
)
flags.DEFINE_enum(
    "weights",
    "ema",
    sorted(checkpointing.WEIGHT_FIELDS),
    "Evaluate the EMA weights (as the reference does) or the raw ones.",
)
flags.DEFINE_string(
    "split", None, "TFDS split to evaluate, e.g. 'validation' or 'test[:50%]' (default: config.eval_split)."
)
flags.DEFINE_string(
    "output", None, "JSON file to write (default: eval_<split>_<step>_<weights>.json in the workdir)."
)
flags.DEFINE_bool(
    "follow", False, "Watch the workdir and evaluate each new checkpoint once, until the job's final step."
)
flags.DEFINE_float("poll_interval_s", 60.0, "With --follow: seconds between looks for new checkpoints.")
flags.DEFINE_float(
    "follow_timeout_s", None, "With --follow: stop after this many seconds even if training has not finished."
)


def report(results: dict, path: str) -> None:
    if jax.process_index() == 0:  # the one that wrote it (evaluation.write_results)
        logging.info("Wrote %s", path)
        print(json.dumps(results, indent=2, sort_keys=True), flush=True)


def run() -> None:
    if FLAGS.follow and (FLAGS.step is not None or FLAGS.output):
        raise app.UsageError("--follow evaluates every step into its own file: drop --step and --output.")
    if FLAGS.follow:
        evaluator = evaluation.Evaluator(FLAGS.config, FLAGS.split)
        for results, path in evaluation.follow(
            evaluator, FLAGS.checkpoint, FLAGS.weights, FLAGS.poll_interval_s, FLAGS.follow_timeout_s
        ):
            report(results, path)
        return
    location = checkpointing.locate_checkpoint(FLAGS.checkpoint, FLAGS.step)  # before any slow set-up
    evaluator = evaluation.Evaluator(FLAGS.config, FLAGS.split)
    report(*evaluation.evaluate_to_file(evaluator, location, FLAGS.weights, FLAGS.output))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.initialize_from_flags()
    console.log_to_file(FLAGS.log_dir)
    run()


if __name__ == "__main__":
    console.run(main)
