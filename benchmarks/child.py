"""Running a benchmark script in its own process and reading the JSON record on its last output line.

Each measurement gets a fresh process so that a crash, an out-of-memory error or a time-out stays
with that measurement, the device's peak-memory counter starts from zero, and PyTorch and JAX never
hold the same GPU at once. Standard library only."""

from __future__ import annotations

import json
import subprocess


class ChildError(RuntimeError):
    """A benchmark process that failed or ran out of time; the message is one line."""


def run_json(command: list[str], env: dict[str, str], timeout: float | None = None) -> dict:
    """Runs `command` and returns the JSON object printed on the last line of its output."""
    try:
        completed = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise ChildError(f"timed out after {timeout:.0f} s") from None
    if completed.returncode != 0:
        raise ChildError(f"exit status {completed.returncode}: {last_error_line(completed.stderr)}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def last_error_line(stderr: str) -> str:
    """The most telling line of a failed child's stderr: the first that names an exhausted resource
    (XLA's out-of-memory error), else the last non-empty one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "RESOURCE_EXHAUSTED" in line or "out of memory" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no error output"
