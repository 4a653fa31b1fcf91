"""A seconds-long variant of the quick start for subprocess tests: `tiny_config.py:<data_dir>`."""

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
    return config
