"""Every test sees 8 CPU devices, so pmap, cross-replica batch norm and sharded input run for real."""

import os

from tests import xla_flags

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags.for_devices(8)).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Compiled steps are reused across tests and the subprocesses they start (same model, same step):
# on a 2-core machine compilation, not execution, dominates the suite.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="efficientnet_jax_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import gc

import jax  # noqa: E402  (after the environment above, which JAX reads when first imported)
import pytest

# The longest modules, longest first (their times: BENCHMARKS.md, "Test-suite compilation"). The suite
# runs `-n 2 --dist loadfile --no-loadscope-reorder` (pyproject.toml): xdist hands whole modules to
# its two workers in collection order, so the long ones start first and the short ones fill in the
# gaps, instead of a long module starting last while the other worker idles.
LONGEST_MODULES = (
    "test_multihost.py",
    "test_recovery.py",
    "test_train.py",
    "test_quickstart.py",
    "test_finetune.py",
    "test_benchmarks.py",
    "test_eval.py",
    "test_progressive.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_MODULES.index(name) if name in LONGEST_MODULES else len(LONGEST_MODULES)

    items.sort(key=rank)  # stable: the order within a module stays


# Every executable XLA compiles for the CPU stays mapped into the process while JAX's in-memory caches
# hold it: each tiny training job adds thousands of memory mappings, and Linux allows 65,530 per
# process (vm.max_map_count), so an xdist worker that ran many in-process jobs segfaulted loading the
# next executable (in `compilation_cache.get_executable_and_time`). Clearing JAX's caches unmaps them
# (BENCHMARKS.md, "Test-suite compilation"); the persistent cache above serves the next compilation of
# the same program.
MAX_MEMORY_MAPPINGS = 20_000


def memory_mappings() -> int:
    """The number of this process's memory mappings (0 where /proc is not there)."""
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


@pytest.fixture(autouse=True)
def release_compiled_programs():
    """After a test that leaves the process above MAX_MEMORY_MAPPINGS, JAX's caches are cleared."""
    yield
    if memory_mappings() > MAX_MEMORY_MAPPINGS:
        jax.clear_caches()
        gc.collect()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """sklearn_digits prepared once per test session, offline."""
    from configs import quickstart
    from efficientnet_jax import input_pipeline

    path = str(tmp_path_factory.mktemp("tfds"))
    config = quickstart.get_config()
    config.data_dir = path
    input_pipeline.get_builder(config)
    return path
