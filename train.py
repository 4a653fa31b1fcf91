"""Train an EfficientNet: `python train.py --config=configs/imagenet.py:b0 --workdir=/path/to/run`.

With no flags it runs the offline quick start (configs/quickstart.py into ./workdirs/quickstart).
Restarting the same command resumes from the newest checkpoint in the workdir.
"""

import difflib
import os
from typing import NoReturn

from efficientnet_jax import console  # before anything imports TensorFlow: console.py imports it quietly

# isort: split
import jax
from absl import app, flags, logging

from configs import default
from efficientnet_jax import checkpointing, distributed, trainer
from efficientnet_jax.configuration import ConfigError

FLAGS = flags.FLAGS
console.define_config_flag("configs/quickstart.py", "Training configuration file.")
flags.DEFINE_string(
    "workdir",
    "workdirs/quickstart",
    "Directory for checkpoints, logs (every library's lines in logs/train.log, or in --log_dir) "
    "and the config used.",
)


def check_keys(config, reference, prefix="config") -> None:
    """Every key must exist in configs/default.py: a misspelt key in a config file fails here,
    naming it and the closest valid key, instead of being silently ignored."""
    for key, value in config.items():
        if key not in reference:
            close = difflib.get_close_matches(key, list(reference.keys()), n=1)
            hint = f" Did you mean {prefix}.{close[0]}?" if close else ""
            raise ConfigError(f"Unknown config key {prefix}.{key}.{hint}")
        if hasattr(value, "items") and hasattr(reference[key], "items"):
            check_keys(value, reference[key], f"{prefix}.{key}")


def stop_for_lost_process(loss: distributed.Loss) -> NoReturn:
    """The one line of a job that lost a process: which, at which step, and where a restart resumes."""
    steps = checkpointing.checkpoint_steps(FLAGS.workdir)
    directory = os.path.join(os.path.abspath(FLAGS.workdir), checkpointing.CHECKPOINTS_DIRECTORY)
    newest = f"the checkpoint of step {steps[-1]} in {directory}" if steps else None
    resume = newest or f"scratch (no checkpoint in {directory})"
    console.end_at_once(
        f"{loss} at step {loss.step or 0}; stopping. Restart the job (every process) with the same command: "
        f"it resumes from {resume}.",
        loss.details,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.initialize_from_flags(stop_for_lost_process)
    check_keys(FLAGS.config, default.get_config())
    console.log_to_file(FLAGS.log_dir or os.path.join(FLAGS.workdir, "logs"))
    logging.info(
        "JAX process %d of %d, local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )
    try:
        _, final = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir, distributed.report_step)
    except Exception as error:
        distributed.await_lost_process_report(error)
        raise
    logging.info("Final metrics: %s", final)


if __name__ == "__main__":
    console.run(main)
