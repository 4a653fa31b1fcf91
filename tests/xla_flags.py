"""XLA flags for the test processes and the subprocesses they start.

Tests run tiny models for a few steps, so on 2 CPU cores compilation, not execution, dominates the
suite. LLVM optimisation level 0 halves the compile time (four test_model.py tests: 118 s against
245 s in one session) at the cost of slower steps, which tests of a few steps do not notice. XLA's
older loop-fusion emitters (`--xla_cpu_use_fusion_emitters=false`) cut the tiny train step's
compilation by a third more: 11.0-11.9 s against 7.7-7.8 s (`compile_seconds`, two runs each, of
`python benchmarks/throughput.py --width=0.25 --depth=0.25 --resolution=16 --batch=8 --steps=3
--num_classes=10` on 2 devices); with the tests' comparisons moved to the host in the same change,
the suite went from 13 min 0 s to 10 min 3 s. Every comparison in the tests is between results
computed under the same flags; two differently compiled programs agree only up to float rounding.
The quick-start test runs `train.py` with the default flags, as users run it.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def for_devices(device_count: int) -> str:
    """`XLA_FLAGS` for a test process with `device_count` CPU devices."""
    return f"{FAST_COMPILE} --xla_force_host_platform_device_count={device_count}"
