"""Joining a multi-process job (TPU pod slices, several GPU hosts), with failure detection bounded
in time: the entry points' multi-host flags and the one call that acts on them.

A process that dies (SIGKILL, a lost machine) stops sending heartbeats to the coordination service;
after `--heartbeat_timeout_s` the service declares it dead and every other process is terminated
with an error naming the missing task, instead of waiting forever in a collective, a barrier or a
broadcast. The scheduler then restarts the whole job, which resumes from its newest checkpoint.
"""

from __future__ import annotations

import jax
from absl import flags

MULTIHOST = flags.DEFINE_bool(
    "multihost", False,
    "Call jax.distributed.initialize() (TPU pods and SLURM clusters are detected automatically); "
    "or give --coordinator_address, --num_processes and --process_id.",
)
COORDINATOR_ADDRESS = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process jobs.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process job.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process job.")
HEARTBEAT_TIMEOUT_S = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100,
    "Multi-process jobs: seconds without a heartbeat after which a process counts as dead and the "
    "others stop with an error (JAX's default).",
)
INITIALIZATION_TIMEOUT_S = flags.DEFINE_integer(
    "initialization_timeout_s", 300, "Multi-process jobs: seconds to wait for every process to join."
)
SHUTDOWN_TIMEOUT_S = flags.DEFINE_integer(
    "shutdown_timeout_s", 60, "Multi-process jobs: seconds a finished process waits for the others to finish."
)


def initialize_from_flags() -> None:
    """Joins the job the flags describe; a single-process run (no flag set) does nothing. CPU
    processes exchange collectives through gloo, so the same command runs on loopback."""
    if not (MULTIHOST.value or COORDINATOR_ADDRESS.value):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        COORDINATOR_ADDRESS.value,
        NUM_PROCESSES.value,
        PROCESS_ID.value,
        initialization_timeout=INITIALIZATION_TIMEOUT_S.value,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S.value,
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S.value,
    )
