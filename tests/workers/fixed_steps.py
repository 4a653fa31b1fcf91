"""Three pmapped train steps on fixed global batches, with batch-norm groups of 2 replicas over 6
devices in the global device order: run by each process of a 2-process job (3 devices each) in
tests/workers/multihost_worker.py, and by the test process on 6 of its devices as the one-host
reference, so both sides run the very same code."""

import jax
import numpy as np

from efficientnet_jax import configuration, optim, steps
from efficientnet_jax.model import EfficientNet, batch_norm_groups
from efficientnet_jax.normalizations import IMAGENET_NORMALIZATION
from tests.workers import tiny_config

NUM_DEVICES = 6


def config(data_dir):
    """The config of the whole launch (its training loop and its fixed steps) and of the reference."""
    return tiny_config.tiny_config(
        data_dir,
        batch_size=12,  # 2 per device on 6
        eval_batch_size=36,
        num_train_steps=3,
        log_every_steps=1,
        eval_every_steps=3,
        checkpoint_every_steps=3,
        warmup_epochs=0.0,
        **{"model.drop_connect_rate": 0.0, "model.dropout_rate": 0.0},
    )


def flat_params(params):
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }


def run(config, devices=None):
    """Three steps on fixed global batches of 24 uint8 images of 64 pixels, 4 per device; each process
    feeds its devices' slice (`devices`: the pmap's, all local ones by default). Groups of 2 devices on
    images of 16 pixels pool 4 values per channel at the last stages' 1x1 pixels: their statistics
    amplify the hosts' other summation order (gloo's) beyond float32 rounding. Augmentation stays off:
    on the device it is keyed by the example's index on its host, which two hosts and one host number
    differently, and what is compared is the cross-host reduction. Returns the flat parameters and
    (replica 0's) batch statistics."""
    config = config.copy_and_resolve_references()
    config.augment_on_device = False
    spec = configuration.model_spec_from_config(config, num_classes=10)
    model = EfficientNet(spec, batch_norm_axis_name=steps.AXIS_NAME,
                         batch_norm_axis_index_groups=batch_norm_groups(NUM_DEVICES, 2))
    schedule = optim.learning_rate_schedule(0.01, 10, 0.0, 0.97, 2.4)
    tx = optim.rmsprop(schedule, config)
    state = steps.replicate(steps.create_train_state(jax.random.key(0), model, 16, tx), devices)
    step = steps.pmap_train_step(model, tx, schedule, config, jax.random.key(1), IMAGENET_NORMALIZATION,
                                 devices)
    rng = np.random.default_rng(0)
    local = len(devices) if devices else jax.local_device_count()
    mine = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    for _ in range(3):
        images = rng.integers(0, 256, size=(NUM_DEVICES, 4, 64, 64, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(NUM_DEVICES, 4)).astype(np.int32)
        state, _ = step(state, {"image": images[mine], "label": labels[mine]})
    return flat_params(jax.device_get(steps.unreplicate({"params": state.params,
                                                          "batch_stats": state.batch_stats})))
