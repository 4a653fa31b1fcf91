"""A multi-process job's process runs as the child of a supervising parent: the only place that can
report the one ending no code inside the process sees, JAX's C++ client aborting it.

JAX's distributed client long-polls the coordination service for errors. When process 0, which runs
the service, dies, that poll fails and the client ends its process with `LOG(FATAL)` ("Terminating
process because the JAX distributed service detected fatal errors"): a C++ stack trace, a Python
thread dump and status 134, usually before the heartbeat watch (distributed.py) beats again, and
jaxlib 0.10.2's client takes no Python callback instead. So `train.py` and `eval.py`, given the
multi-process flags, start themselves again as a child with the same command line and wait for it:

- the child's stdout is the parent's; its stderr passes through the parent line by line, except the
  C++ log records (held until a Python record or the entry point's own line follows them) and
  everything after JAX's fatal line;
- the child reports, on a pipe of its own (`report`), its process index, the job's process count and
  its log file once a second, its step as each is dispatched, and a lost process when its heartbeat
  watch finds one (it then exits at once, leaving the line to the parent);
- when the child reported a lost process, or was aborted by JAX because process 0's coordination
  service stopped answering, the parent ends with the entry point's one line (the held lines go to
  the log file); any other ending passes through as it came, with the child's exit status;
- SIGTERM and SIGINT to the parent reach the child (started in a session of its own, so a terminal's
  signals reach it once), and a child whose parent is gone ends within a second, as a lost host does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

# In the child: "<parent pid>:<report pipe's descriptor>".
SUPERVISOR_ENV = "EFFICIENTNET_JAX_SUPERVISOR"
# The first line of an absl log record, Python's or C++'s: severity, date, time, thread, file:line.
LOG_RECORD = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ (?P<file>[^\]:]+):\d+\] ")
JAX_FATAL = "Terminating process because the JAX distributed service detected fatal errors"
# The status in JAX's fatal line when the coordination service, in process 0, no longer answers.
SERVICE_UNREACHABLE = "Failed to send RPC to coordination service"
SERVICE_LOST = "its coordination service stopped answering"


def is_child() -> bool:
    return SUPERVISOR_ENV in os.environ


def _parent_and_descriptor() -> tuple[int, int]:
    parent, descriptor = os.environ[SUPERVISOR_ENV].split(":")
    return int(parent), int(descriptor)


def end_with_parent() -> None:
    """In the child: a daemon thread that ends the process within a second of its parent's end (a
    SIGKILLed parent is a lost host, and its child must not keep the job's collectives alive)."""
    parent, _ = _parent_and_descriptor()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def report(**fields) -> None:
    """In the child: fields for the parent's copy of its state (JSON values). Ends the process when the
    parent can no longer read them."""
    try:
        os.write(_parent_and_descriptor()[1], (json.dumps(fields) + "\n").encode())
    except OSError:
        os._exit(1)


class _Reports:
    """The parent's copy of the child's reported state, read on a thread of its own."""

    def __init__(self, descriptor: int):
        self.state: dict = {}
        self._thread = threading.Thread(target=self._read, args=(descriptor,), name="reports", daemon=True)
        self._thread.start()

    def _read(self, descriptor: int) -> None:
        with os.fdopen(descriptor, "r") as lines:
            for line in lines:
                fields = json.loads(line)
                if "lost" not in self.state:  # the first loss named is the one that ended the child
                    self.state.update(fields)

    def final(self) -> dict:
        self._thread.join(timeout=5)  # the pipe closes with the child
        return self.state


def _forward_signals(child: subprocess.Popen) -> None:
    def forward(signum, frame):
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)


def run_child(on_lost_process: Callable[[dict, str], NoReturn]) -> NoReturn:
    """In the parent: runs this command again as the child and ends as it ends, except when the child
    reported a lost process or JAX aborted it for the loss of process 0: then it calls
    `on_lost_process(state, held_output)` with the child's reported state ("lost", "cause", "details",
    "processes", "step", "log"), which must end the process."""
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, *sys.orig_argv[1:]],
        env=dict(os.environ, **{SUPERVISOR_ENV: f"{os.getpid()}:{write_end}"}),
        stderr=subprocess.PIPE,
        pass_fds=(write_end,),
        start_new_session=True,
    )
    os.close(write_end)
    _forward_signals(child)
    reports = _Reports(read_end)
    own_line = f"{os.path.basename(sys.argv[0])}: "
    held: list[str] = []
    fatal = holding = False
    for raw in child.stderr:
        line = raw.decode(errors="replace")
        fatal = fatal or JAX_FATAL in line
        record = LOG_RECORD.match(line)
        if record or line.startswith(own_line):
            # A C++ record is held with the lines that continue it; a Python one or our line ends that.
            holding = bool(record) and not record.group("file").endswith(".py")
        if fatal or holding:
            held.append(line)
            continue
        sys.stderr.write("".join(held) + line)
        sys.stderr.flush()
        held.clear()
    returncode = child.wait()
    state, output = reports.final(), "".join(held)
    if returncode != 0 and "processes" in state:
        if "lost" in state:
            on_lost_process(state, output)
        if fatal and SERVICE_UNREACHABLE in output and state["process"] != 0:
            on_lost_process(dict(state, lost=[0], cause=SERVICE_LOST, details=""), output)
    sys.stderr.write(output)
    sys.stderr.flush()
    sys.exit(returncode if returncode >= 0 else 128 - returncode)
