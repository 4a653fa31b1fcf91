"""Runs the runs of a sweep one after another, each `train.py` in its own subprocess and its own
directory, so a sweep survives anything one run does and can be stopped and restarted at will.

Why subprocesses rather than `train_and_evaluate` in this process: a run that crashes, runs out of
memory or hangs in XLA takes only itself down; each run starts with fresh device memory and
compilation state; a run is exactly the `train.py` command a cluster scheduler would run; and
SIGTERM reaches the run as it reaches any preempted job (it checkpoints and stops).

Per run directory: `train.log` (the run's output, appended over attempts), `status.json`
(pending -> running -> finished | failed | interrupted, the error of a failed run), and what
train.py writes (`checkpoints/`, `config.json`, `final_metrics.json`). A run is finished when its
`final_metrics.json` reports the last step; a restarted sweep skips finished runs, and train.py
resumes a half-finished one from its newest checkpoint. A failed run is recorded and the sweep goes
on; the next start of the sweep tries it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from efficientnet_jax.experiments import SweepError

STATUS_FILE = "status.json"
LOG_FILE = "train.log"
FINAL_METRICS_FILE = "final_metrics.json"
LOCK_FILE = "sweep.lock"
MANIFEST_FILE = "sweep.json"
ERROR_CHARACTERS = 1000  # of the log's last lines kept as a failed run's error


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str, data: dict) -> None:
    """Written to a temporary file and renamed, so a killed sweep never leaves half a file."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(temporary, path)


def final_metrics(run_dir: str) -> dict | None:
    return _read_json(os.path.join(run_dir, FINAL_METRICS_FILE))


def is_finished(run_dir: str) -> bool:
    """train.py has written final metrics at its last step (a preempted run writes them earlier)."""
    metrics = final_metrics(run_dir)
    return bool(metrics) and metrics.get("step") == metrics.get("num_train_steps")


def run_status(run_dir: str) -> dict:
    """{'status': 'finished' | 'failed' | 'interrupted' | 'running' | 'pending', ...}: 'running' for a
    run whose sweep was killed mid-run; a finished run is finished whatever its status file says."""
    status = _read_json(os.path.join(run_dir, STATUS_FILE)) or {"status": "pending"}
    if is_finished(run_dir):
        status["status"] = "finished"
    return status


def check_existing_runs(workdir: str, manifest: dict) -> None:
    """A run directory that already trained (its `config.json`) must have trained the config the
    sweep asks for now: resuming or skipping it otherwise would mix two experiments."""
    for run in manifest["runs"]:
        trained = _read_json(os.path.join(workdir, run["name"], "config.json"))
        if trained is None or trained == run["config"]:
            continue
        expected = _flatten(run["config"])
        found = _flatten(trained)
        differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise SweepError(
            f"{os.path.join(workdir, run['name'])} holds a run trained with other settings "
            f"(differing: {', '.join(differing)}). Use a new --workdir, or delete that run's directory "
            "to retrain it."
        )


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_manifest(workdir: str, manifest: dict) -> None:
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, MANIFEST_FILE), manifest)


def read_manifest(workdir: str) -> dict:
    manifest = _read_json(os.path.join(workdir, MANIFEST_FILE))
    if manifest is None:
        raise SweepError(
            f"No sweep in {workdir}: {MANIFEST_FILE} is missing. Run sweep.py with this --workdir first."
        )
    return manifest


@contextlib.contextmanager
def sweep_lock(workdir: str) -> Iterator[int]:
    """An exclusive lock on the sweep's workdir, held until this process *and the runs it started*
    have exited (they inherit the descriptor): a second sweep.py on the same workdir, or one
    restarted while a killed sweep's last run still trains, stops with a clear error."""
    os.makedirs(workdir, exist_ok=True)
    descriptor = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip()
            raise SweepError(
                f"Another sweep (or a run it started) is still running in {workdir} (pid {holder or '?'}). "
                "Wait for it or stop it, then start this sweep again."
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        yield descriptor
    finally:
        os.close(descriptor)


def _error_from_log(log_path: str, returncode: int) -> str:
    """The log's last non-empty lines (the exception train.py died with), cut to a readable size."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [line.rstrip() for line in f.readlines()[-40:] if line.strip()]
    except OSError:
        lines = []
    tail = "\n".join(lines[-3:])[-ERROR_CHARACTERS:]
    return (
        f"train.py exited with code {returncode}: {tail}"
        if tail
        else f"train.py exited with code {returncode}."
    )


class _StopRequest:
    """SIGTERM or SIGINT to the sweep: forward SIGTERM to the running run (which checkpoints and
    stops, as on preemption), then start no further run."""

    def __init__(self):
        self.requested = False
        self.process: subprocess.Popen | None = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_sweep(
    runs: Sequence[tuple[str, list[str]]],
    workdir: str,
    cwd: str,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Runs each (name, command) not yet finished in `<workdir>/<name>/`, in order. `command` is the
    argument list after the Python interpreter (`['train.py', '--config=...', ...]`), run in `cwd`.
    Returns each run's final status."""
    statuses = {}
    with sweep_lock(workdir) as lock_descriptor, _StopRequest() as stop:
        for index, (name, command) in enumerate(runs, 1):
            run_dir = os.path.join(workdir, name)
            os.makedirs(run_dir, exist_ok=True)
            previous = run_status(run_dir)
            if previous["status"] == "finished":
                log(f"[{index}/{len(runs)}] {name}: finished before, skipped.")
                statuses[name] = previous
                continue
            if stop.requested:
                statuses[name] = previous
                continue
            attempt = previous.get("attempts", 0) + 1
            resuming = " (resuming)" if os.path.isdir(os.path.join(run_dir, "checkpoints")) else ""
            log(
                f"[{index}/{len(runs)}] {name}: attempt {attempt}{resuming}, "
                f"log in {os.path.join(run_dir, LOG_FILE)}"
            )
            started = time.time()
            status = {"name": name, "status": "running", "attempts": attempt, "started_at": started}
            write_json(os.path.join(run_dir, STATUS_FILE), status)
            with open(os.path.join(run_dir, LOG_FILE), "a") as log_file:
                log_file.write(f"\n===== sweep attempt {attempt}: {' '.join(command)}\n")
                log_file.flush()
                stop.process = subprocess.Popen(
                    [sys.executable, *command],
                    cwd=cwd,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    pass_fds=(lock_descriptor,),
                    start_new_session=True,  # signals reach it through the sweep only
                )
                if stop.requested:  # the signal came while the run was starting
                    stop.process.send_signal(signal.SIGTERM)
                returncode = stop.process.wait()
                stop.process = None
            status.update(
                returncode=returncode, ended_at=time.time(), duration_s=round(time.time() - started, 1)
            )
            if is_finished(run_dir):
                status.update(status="finished", error=None)
            elif stop.requested or returncode == 0:  # stopped by a signal: it checkpointed and will resume
                status.update(status="interrupted", error="stopped by a signal before the last step")
            else:
                status.update(
                    status="failed", error=_error_from_log(os.path.join(run_dir, LOG_FILE), returncode)
                )
            write_json(os.path.join(run_dir, STATUS_FILE), status)
            log(
                f"[{index}/{len(runs)}] {name}: {status['status']} after {status['duration_s']} s"
                + (f": {status['error']}" if status["status"] == "failed" else "")
            )
            statuses[name] = status
    return statuses
