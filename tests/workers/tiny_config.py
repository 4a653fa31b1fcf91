"""A seconds-long variant of the quick start, for tests and their subprocesses
(`tiny_config.py:<data_dir>`)."""

from configs import quickstart


def get_config(data_dir: str):
    config = quickstart.get_config()
    config.data_dir = data_dir
    config.model.width = 0.25
    config.model.depth = 0.25
    config.image_size = 16
    config.batch_size = 16
    config.eval_batch_size = 64
    config.log_every_steps = 2
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    # Pooled batch-norm statistics, as the tests' learning margins were measured with: 2 examples per
    # device on 8 devices give per-device statistics (the reference rule there) of little meaning. The
    # recovery tests set 'reference'.
    config.batch_norm_group_size = "all"
    return config


def with_overrides(config, **overrides):
    """`config` with dotted-key overrides: `with_overrides(c, **{"model.width": 0.5})`."""
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def tiny_config(data_dir: str, **overrides):
    """The tiny config with dotted-key overrides."""
    return with_overrides(get_config(data_dir), **overrides)
