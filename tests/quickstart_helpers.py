"""The README's quick start (`python train.py`) as the tests run it, and the finished run CI keeps.

tests/test_quickstart.py trains it in the main pytest phase; the export phase's int8 test
(tests/test_export.py) reuses that run when .ci/run names its workdir in WORKDIR_VARIABLE, instead of
paying minutes for a second training.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR_VARIABLE = "EFFICIENTNET_JAX_QUICKSTART_WORKDIR"
STEPS = 880


def train(workdir: str, data_dir: str) -> subprocess.CompletedProcess:
    """`python train.py` on one CPU device (the tests' 8 simulated devices are not passed on)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run(
        [sys.executable, "train.py", f"--workdir={workdir}", f"--config.data_dir={data_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )


def finished(workdir: str) -> bool:
    """Whether `workdir` holds a quick start trained to its last step."""
    try:
        with open(os.path.join(workdir, "final_metrics.json")) as f:
            return json.load(f)["step"] == STEPS
    except (OSError, ValueError, KeyError):
        return False
