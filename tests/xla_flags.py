"""XLA flags for the test processes and the subprocesses they start.

Tests run tiny models for a few steps, so on 2 CPU cores compilation, not execution, dominates the
suite. LLVM optimisation level 0 compiles faster at the cost of slower steps, which tests of a few steps
do not notice, and XLA's older loop-fusion emitters (`--xla_cpu_use_fusion_emitters=false`) compile the
tiny train step faster still (BENCHMARKS.md, "Test-suite compilation"). Every comparison in the tests is
between results computed under the same flags; two differently compiled programs agree only up to float
rounding. The quick-start test runs `train.py` with the default flags, as users run it.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def for_devices(device_count: int) -> str:
    """`XLA_FLAGS` for a test process with `device_count` CPU devices."""
    return f"{FAST_COMPILE} --xla_force_host_platform_device_count={device_count}"
