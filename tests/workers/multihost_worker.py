"""One process of a multi-process job on loopback, for tests/test_multihost.py. Both checks share one
launch (each process pays its imports, the distributed start-up and compilation once), on 6 devices in
all: 3 per process of a 2-process job.

usage: multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR DATA_DIR
  First the real `train_and_evaluate` on the quick-start data (each host reads its shard), resumed once
  more; its final parameters go to OUT_DIR/params_train_<process_id>.npz.
  Then `tests/workers/fixed_steps.py`: pmapped train steps on fixed global batches, each host feeding its
  slice, with batch-norm groups of 2 replicas: the group of devices 2 and 3 spans both hosts. Its
  parameters and batch statistics go to OUT_DIR/params_steps_<process_id>.npz.
"""

import os
import sys

process_id, num_processes, port, out_dir, data_dir = sys.argv[1:6]
process_id, num_processes = int(process_id), int(num_processes)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tests import xla_flags  # noqa: E402

os.environ["XLA_FLAGS"] = xla_flags.for_devices(6 // num_processes)  # before JAX starts
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)

import numpy as np  # noqa: E402

from efficientnet_jax import trainer  # noqa: E402
from tests.workers import fixed_steps  # noqa: E402

assert jax.device_count() == fixed_steps.NUM_DEVICES, jax.devices()

config = fixed_steps.config(data_dir)
workdir = os.path.join(out_dir, f"workdir_{process_id}")
trainer.train_and_evaluate(config, workdir)
# Resume once more so the restore-and-broadcast path runs on every host.
config.num_train_steps = 5
state, _ = trainer.train_and_evaluate(config, workdir)
np.savez(os.path.join(out_dir, f"params_train_{process_id}.npz"),
         **fixed_steps.flat_params(jax.device_get(state.params)))
fixed = fixed_steps.run(fixed_steps.config(data_dir))  # the reference's config, not the resumed one
np.savez(os.path.join(out_dir, f"params_steps_{process_id}.npz"), **fixed)
print("worker done", process_id)
