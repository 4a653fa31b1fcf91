"""Train an EfficientNet: `python train.py --config=configs/imagenet.py:b0 --workdir=/path/to/run`.

With no flags it runs the offline quick start (configs/quickstart.py into ./workdirs/quickstart).
Restarting the same command resumes from the newest checkpoint in the workdir.
"""

import difflib

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from configs import default
from efficientnet_jax import distributed, trainer
from efficientnet_jax.configuration import ConfigError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Training configuration file.", lock_config=True)
flags.DEFINE_string("workdir", "workdirs/quickstart", "Directory for checkpoints, logs and the config used.")


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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.initialize_from_flags()
    check_keys(FLAGS.config, default.get_config())
    logging.info("JAX process %d of %d, local devices: %s", jax.process_index(), jax.process_count(), jax.local_devices())
    _, final = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    logging.info("Final metrics: %s", final)


if __name__ == "__main__":
    app.run(main)
