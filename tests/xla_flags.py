"""XLA flags for the test processes and the subprocesses they start.

Tests run tiny models for a few steps, so on 2 CPU cores compilation, not execution, dominates the
suite. LLVM optimisation level 0 halves the compile time (four test_model.py tests: 118 s against
245 s in one session) at the cost of slower steps, which tests of a few steps do not notice. Every
comparison in the tests is between results computed under the same flags. The quick-start test runs
`train.py` with the default flags, as users run it.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0"


def for_devices(device_count: int) -> str:
    """`XLA_FLAGS` for a test process with `device_count` CPU devices."""
    return f"{FAST_COMPILE} --xla_force_host_platform_device_count={device_count}"
