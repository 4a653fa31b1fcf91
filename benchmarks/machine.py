"""What machine a benchmark ran on, with the standard library only, so that the peer scripts (run
by another environment's Python, without JAX) report it the same way as this project's."""

import platform


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
