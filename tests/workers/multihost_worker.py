"""One process of a multi-process job on loopback, for tests/test_multihost.py.

usage: multihost_worker.py MODE PROCESS_ID NUM_PROCESSES PORT OUT_DIR DATA_DIR
  MODE 'train': the real `train_and_evaluate` on the quick-start data (each host reads its shard).
  MODE 'steps': pmapped train steps on fixed global batches, each host feeding its slice, on 6 devices
    with batch-norm groups of 2 replicas: the group of devices 2 and 3 spans both hosts of a 2-process job.
Writes OUT_DIR/params_<process_id>.npz with the final parameters (and, MODE 'steps', batch statistics).
"""

import os
import sys

mode, process_id, num_processes, port, out_dir, data_dir = sys.argv[1:7]
process_id, num_processes = int(process_id), int(num_processes)
NUM_DEVICES = 6 if mode == "steps" else 4
devices_per_process = NUM_DEVICES // num_processes
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tests import xla_flags  # noqa: E402

os.environ["XLA_FLAGS"] = xla_flags.for_devices(devices_per_process)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)

import functools  # noqa: E402

import numpy as np  # noqa: E402

from efficientnet_jax import configuration, optim, steps, trainer  # noqa: E402
from efficientnet_jax.model import EfficientNet, batch_norm_groups  # noqa: E402
from efficientnet_jax.normalizations import IMAGENET_NORMALIZATION  # noqa: E402
from tests.workers import tiny_config as tiny_config_module  # noqa: E402


def tiny_config():
    config = tiny_config_module.get_config(data_dir)
    config.batch_size = 8
    config.eval_batch_size = 40
    config.num_train_steps = 3
    config.log_every_steps = 1
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 3
    config.warmup_epochs = 0.0
    config.model.drop_connect_rate = 0.0
    config.model.dropout_rate = 0.0
    return config


def flat_params(params):
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }


def run_fixed_steps(config):
    """Three steps on fixed global batches of 24 uint8 images of 64 pixels, 4 per device; host p feeds its
    devices'. Groups of 2 devices on images of 16 pixels pool 4 values per channel at the last stages'
    1x1 pixels: their statistics amplify the hosts' other summation order (gloo's) beyond float32 rounding.
    Augmentation stays off: on the device it is keyed by the example's index on its host, which two
    hosts and one host number differently, and what is compared here is the cross-host reduction."""
    config = config.copy_and_resolve_references()
    config.augment_on_device = False
    spec = configuration.model_spec_from_config(config, num_classes=10)
    model = EfficientNet(spec, batch_norm_axis_name=steps.AXIS_NAME,
                         batch_norm_axis_index_groups=batch_norm_groups(NUM_DEVICES, 2))
    schedule = optim.learning_rate_schedule(0.01, 10, 0.0, 0.97, 2.4)
    tx = optim.rmsprop(schedule, config)
    state = steps.replicate(steps.create_train_state(jax.random.key(0), model, 16, tx))
    step = jax.pmap(
        functools.partial(
            steps.train_step,
            model=model,
            tx=tx,
            learning_rate_fn=schedule,
            config=config,
            rng=jax.random.key(1),
            normalization=IMAGENET_NORMALIZATION,
        ),
        axis_name=steps.AXIS_NAME,
    )
    rng = np.random.default_rng(0)
    local = jax.local_device_count()
    for _ in range(3):
        images = rng.integers(0, 256, size=(NUM_DEVICES, 4, 64, 64, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(NUM_DEVICES, 4)).astype(np.int32)
        mine = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
        state, _ = step(state, {"image": images[mine], "label": labels[mine]})
    return steps.unreplicate({"params": state.params, "batch_stats": state.batch_stats})


config = tiny_config()
if mode == "train":
    workdir = os.path.join(out_dir, f"workdir_{process_id}")
    trainer.train_and_evaluate(config, workdir)
    # Resume once more so the restore-and-broadcast path runs on every host.
    config.num_train_steps = 5
    state, _ = trainer.train_and_evaluate(config, workdir)
    params = jax.device_get(state.params)
else:
    params = jax.device_get(run_fixed_steps(config))
np.savez(os.path.join(out_dir, f"params_{mode}_{num_processes}_{process_id}.npz"), **flat_params(params))
print("worker done", process_id)
