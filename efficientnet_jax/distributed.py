"""Joining a multi-process job (TPU pod slices, several GPU hosts), with failure detection bounded
in time: the entry points' multi-host flags and the one call that acts on them.

A process that dies (SIGKILL, a lost machine) stops beating: every process counts up a key of its own
in the coordination service's key-value store each second, and after `--heartbeat_timeout_s` without
a count from a process the others end, and their supervising parents (supervision.py) call the entry
point's `on_lost_process`, which ends them with one line, instead of waiting forever in a collective, a
barrier or a broadcast. When process 0, which runs the service, is lost, JAX itself aborts the others
(a fatal C++ abort with a thread dump of every thread), and their parents give the same kind of line.
The scheduler then restarts the whole job, which resumes from its newest checkpoint.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import NoReturn

import jax
from absl import flags, logging

# The coordination service's client and the job's size without asking a backend: jax 0.10.2 has no
# public accessor (jax.experimental.multihost_utils reads the same `global_state`).
from jax._src import distributed as jax_distributed_internals

from efficientnet_jax import console, supervision

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
# reaction is to end every process from a C++ thread (LOG(FATAL): an abort and a thread dump), which
# the supervising parent (supervision.py) explains only for the loss of process 0.
SERVICE_HEARTBEAT_FACTOR = 3


@dataclasses.dataclass(frozen=True)
class Loss:
    """Processes of the job that were lost, as the entry point's last line names them."""

    lost: list[int]
    num_processes: int
    cause: str  # "no heartbeat for 10 s"
    step: int | None  # the surviving process's step, where it has one
    details: str  # for the log file

    def __str__(self) -> str:
        """'process 1 of 2 was lost (no heartbeat for 10 s)'."""
        names = ", ".join(str(index) for index in self.lost)
        processes, verb = ("processes", "were") if len(self.lost) > 1 else ("process", "was")
        return f"{processes} {names} of {self.num_processes} {verb} lost ({self.cause})"


def _watch(timeout_s: float) -> None:
    """Runs on a daemon thread of the supervised child until the process exits: every second, counts
    up this process's key in the coordination service's key-value store, reads every process's and
    reports the child's state to the parent. When the counts of some processes have not moved for
    `timeout_s`, or the store (in process 0) cannot be reached, it reports the loss and ends the
    process; the parent gives the line. Stops reporting (and keeps counting) once the process is exiting."""
    state = jax_distributed_internals.global_state  # the client; jax.process_index() would ask a backend
    started = time.monotonic()
    last_seen: dict[int, tuple[str, float]] = {}
    for beat in itertools.count():
        try:
            state.client.key_value_set(f"{HEARTBEAT_KEYS}{state.process_id}", str(beat), allow_overwrite=True)
            entries = state.client.key_value_dir_get(HEARTBEAT_KEYS)
            counts = {int(key.rsplit("/", 1)[1]): value for key, value in entries}
        except Exception as error:  # noqa: BLE001  (any failure to reach the service)
            lost, cause, details = [0], supervision.SERVICE_LOST, f"The coordination service: {error}"
        else:
            now = time.monotonic()
            for index, count in counts.items():
                if last_seen.get(index, (None,))[0] != count:
                    last_seen[index] = (count, now)
            lost = [index for index in range(state.num_processes)
                    if now - last_seen.get(index, (None, started))[1] > timeout_s]
            cause = f"no heartbeat for {HEARTBEAT_TIMEOUT_S.value} s"
            details = f"Heartbeat counts {counts}; unchanged for over {timeout_s} s: {lost}."
        if _EXITING.is_set():
            return
        supervision.report(process=state.process_id, processes=state.num_processes, log=console.log_file())
        if lost:
            supervision.report(lost=lost, cause=cause, details=details)
            os._exit(1)
        time.sleep(1.0)


_EXITING = threading.Event()


def _stop(loss: Loss) -> NoReturn:
    console.end_at_once(f"{loss}; stopping.", loss.details)


def _name_the_loss(on_lost_process: Callable[[Loss], NoReturn], state: dict, held_output: str) -> NoReturn:
    """In the supervising parent: the child's log file gets its last output, then the entry point's line."""
    if state.get("log"):
        console.add_log_file(state["log"])
    details = "\n".join(text for text in (state["details"], held_output) if text)
    on_lost_process(Loss(state["lost"], state["processes"], state["cause"], state.get("step"), details))


def report_step(step: int) -> None:
    """The step this process has reached, for its supervising parent's line should another process be
    lost (nothing in a single-process job)."""
    if supervision.is_child():
        supervision.report(step=step)


def initialize_from_flags(on_lost_process: Callable[[Loss], NoReturn] = _stop) -> None:
    """Joins the job the flags describe; a single-process run (no flag set) does nothing. CPU
    processes exchange collectives through gloo, so the same command runs on loopback.

    In a multi-process job this process becomes the supervising parent (supervision.py) of a child that
    runs the same command and joins the job, and never returns: it ends as the child does. When a
    process of the job is lost (no heartbeat for `--heartbeat_timeout_s`, or process 0's service gone),
    the parent calls `on_lost_process(Loss)`, which must end the process with the entry point's line;
    its step is the last the child gave `report_step`."""
    if not (MULTIHOST.value or COORDINATOR_ADDRESS.value):
        return
    if not supervision.is_child():
        supervision.run_child(functools.partial(_name_the_loss, on_lost_process))
    supervision.end_with_parent()
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
        target=_watch, args=(HEARTBEAT_TIMEOUT_S.value,), name="heartbeat", daemon=True
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
