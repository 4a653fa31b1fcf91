"""16 CPU devices in one process, for tests/test_model.py: the tiny network's training-mode forward pass
on 16 devices with batch-norm groups of 8, and on 8 devices with one group ("all") for each half of the
same batch.

usage: batch_norm_groups_worker.py OUT_FILE
Writes OUT_FILE (.npz): `grouped/<leaf>` [16, ...] and `half<h>/<leaf>` [8, ...] for the logits and the
updated batch statistics.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tests import xla_flags  # noqa: E402

os.environ["XLA_FLAGS"] = xla_flags.for_devices(16)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from efficientnet_jax.model import EfficientNet, batch_norm_groups  # noqa: E402
from efficientnet_jax.scaling import ModelSpec  # noqa: E402

SPEC = ModelSpec(width=0.25, depth=0.3, resolution=64, num_classes=10, name="tiny", drop_connect_rate=0.0,
                 dropout_rate=0.0)
PER_DEVICE, SIZE = 4, 64


def pmapped_forward(devices, groups):
    """A training-mode pass pmapped over `devices`: (variables, images) -> logits and updated batch
    statistics, by leaf name."""
    model = EfficientNet(SPEC, batch_norm_axis_name="batch", batch_norm_axis_index_groups=groups)
    apply = jax.pmap(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), axis_name="batch",
                     in_axes=(None, 0), devices=devices)

    def forward(variables, images):
        shards = images.reshape(len(devices), PER_DEVICE, SIZE, SIZE, 3)
        logits, state = jax.device_get(apply(variables, shards))
        return {"logits": logits, **{jax.tree_util.keystr(path): leaf
                                     for path, leaf in jax.tree_util.tree_leaves_with_path(state)}}

    return forward


devices = jax.devices()
assert len(devices) == 16
images = np.random.default_rng(0).normal(0.5, 2.0, size=(16 * PER_DEVICE, SIZE, SIZE, 3)).astype(np.float32)
variables = jax.jit(EfficientNet(SPEC).init)(jax.random.key(1), images[:1])
grouped = pmapped_forward(devices, batch_norm_groups(16, 8))(variables, images)
results = {f"grouped/{name}": value for name, value in grouped.items()}
on_8 = pmapped_forward(devices[:8], None)
for half in range(2):
    shard = images[half * 8 * PER_DEVICE:(half + 1) * 8 * PER_DEVICE]
    results.update({f"half{half}/{name}": value for name, value in on_8(variables, shard).items()})
np.savez(sys.argv[1], **results)
