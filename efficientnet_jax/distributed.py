"""Joining a multi-process job (TPU pod slices, several GPU hosts), with failure detection bounded
in time: the entry points' multi-host flags and the one call that acts on them.

A process that dies (SIGKILL, a lost machine) stops beating: every process counts up a key of its own
in the coordination service's key-value store each second, and after `--heartbeat_timeout_s` without
a count from a process the others call the entry point's `on_lost_process`, which ends them with one
line, instead of waiting forever in a collective, a barrier or a broadcast (or ending through JAX's own
reaction, a fatal C++ abort with a thread dump of every thread). The scheduler then restarts the whole
job, which resumes from its newest checkpoint.
"""

from __future__ import annotations

import atexit
import itertools
import threading
import time
from collections.abc import Callable

import jax
from absl import flags, logging
from jax._src import distributed as jax_distributed_internals

from efficientnet_jax import console

MULTIHOST = flags.DEFINE_bool(
    "multihost", False,
    "Call jax.distributed.initialize() (TPU pods and SLURM clusters are detected automatically); "
    "or give --coordinator_address, --num_processes and --process_id.",
)
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process jobs."
)
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process job.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process job.")
HEARTBEAT_TIMEOUT_S = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100,
    "Multi-process jobs: seconds without a heartbeat after which a process counts as lost and the "
    "others stop with one line naming it (JAX's coordination service waits 3x this before acting itself).",
)
INITIALIZATION_TIMEOUT_S = flags.DEFINE_integer(
    "initialization_timeout_s", 300, "Multi-process jobs: seconds to wait for every process to join."
)
SHUTDOWN_TIMEOUT_S = flags.DEFINE_integer(
    "shutdown_timeout_s", 60, "Multi-process jobs: seconds a finished process waits for the others to finish."
)


HEARTBEAT_KEYS = "efficientnet_jax/heartbeat/"
# The coordination service's own bound, a backstop: ours must end the job first, since the service's
# reaction is to end every process from a C++ thread (LOG(FATAL): an abort and a thread dump on the
# console), and jax 0.10.2's client takes no Python callback instead.
SERVICE_HEARTBEAT_FACTOR = 3


def _watch(on_lost_process: Callable[[list[int], str], None], timeout_s: float) -> None:
    """Runs on a daemon thread until the process exits: every second, counts up this process's key in the
    coordination service's key-value store and reads every process's; calls `on_lost_process` for the
    processes whose count has not moved for `timeout_s`, or for process 0, which runs the service, when
    the store cannot be reached. Stops reporting (and keeps counting) once the process is exiting."""
    state = jax_distributed_internals.global_state
    started = time.monotonic()
    last_seen: dict[int, tuple[str, float]] = {}
    for beat in itertools.count():
        try:
            state.client.key_value_set(f"{HEARTBEAT_KEYS}{state.process_id}", str(beat), allow_overwrite=True)
            entries = state.client.key_value_dir_get(HEARTBEAT_KEYS)
            counts = {int(key.rsplit("/", 1)[1]): value for key, value in entries}
        except Exception as error:  # noqa: BLE001  (any failure to reach the service)
            lost, details = [0], f"The coordination service did not answer: {error}"
        else:
            now = time.monotonic()
            for index, count in counts.items():
                if last_seen.get(index, (None,))[0] != count:
                    last_seen[index] = (count, now)
            lost = [index for index in range(state.num_processes)
                    if now - last_seen.get(index, (None, started))[1] > timeout_s]
            details = f"Heartbeat counts {counts}; unchanged for over {timeout_s} s: {lost}."
        if lost and not _EXITING.is_set():
            on_lost_process(lost, details)
            return
        time.sleep(1.0)


_EXITING = threading.Event()


def describe_lost(lost: list[int]) -> str:
    """'process 1 of 2 was lost (no heartbeat for 10 s)'."""
    names = ", ".join(str(index) for index in lost)
    processes, verb = ("processes", "were") if len(lost) > 1 else ("process", "was")
    count = jax_distributed_internals.global_state.num_processes  # asks no backend, from any thread
    return f"{processes} {names} of {count} {verb} lost (no heartbeat for {HEARTBEAT_TIMEOUT_S.value} s)"


def _stop(lost: list[int], message: str) -> None:
    console.end_at_once(f"{describe_lost(lost)}; stopping.", message)


def initialize_from_flags(on_lost_process: Callable[[list[int], str], None] = _stop) -> None:
    """Joins the job the flags describe; a single-process run (no flag set) does nothing. CPU
    processes exchange collectives through gloo, so the same command runs on loopback.

    When a process of the job stops beating for `--heartbeat_timeout_s` (`_watch`),
    `on_lost_process(lost_process_indices, details)` runs on a thread of its own while the main thread
    may be blocked in a collective that will never complete: it must end the process."""
    if not (MULTIHOST.value or COORDINATOR_ADDRESS.value):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        COORDINATOR_ADDRESS.value,
        NUM_PROCESSES.value,
        PROCESS_ID.value,
        initialization_timeout=INITIALIZATION_TIMEOUT_S.value,
        heartbeat_timeout_seconds=SERVICE_HEARTBEAT_FACTOR * HEARTBEAT_TIMEOUT_S.value,
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S.value,
    )
    atexit.register(_EXITING.set)  # after JAX's shutdown, registered at its import: so it runs first
    threading.Thread(
        target=_watch, args=(on_lost_process, HEARTBEAT_TIMEOUT_S.value), name="heartbeat", daemon=True
    ).start()


def await_lost_process_report(error: Exception) -> None:
    """In a multi-process job, a runtime error from a collective (gloo: "Connection reset by peer")
    usually means another process died, seconds before the heartbeat watch (`_watch`) names it: the
    error goes to the log file and this waits for that report, which ends the process. Returns, for the
    caller to raise the error, when the job has one process or no report comes within twice the bound."""
    if jax.process_count() == 1 or not isinstance(error, jax.errors.JaxRuntimeError):
        return
    logging.info("A collective failed; waiting up to %d s for the coordination service to name a lost "
                 "process.", 2 * HEARTBEAT_TIMEOUT_S.value, exc_info=error, extra=console.LOG_FILE_ONLY)
    time.sleep(2 * HEARTBEAT_TIMEOUT_S.value)
