"""The README's main command learns: `python train.py`, the offline quick start, end to end. Its own
module because it is the suite's longest test: the scheduler in conftest.py starts it first."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_learns_real_digits_to_90_percent(data_dir, tmp_path):
    """The README's main command (`python train.py`, the offline quick start) on one CPU device:
    held-out top-1 of at least 90% with the EMA weights and 85% with the raw ones, a checkpoint
    left, and a console of at most 40 lines. The margins below the runs of three seeds (BENCHMARKS.md,
    "Quick-start ablations") are wider for the raw weights: the last iterate of a schedule that ends
    at lr 1.2e-3 is the noisier of the two."""
    workdir = tmp_path / "quickstart"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [sys.executable, "train.py", f"--workdir={workdir}", f"--config.data_dir={data_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((workdir / "final_metrics.json").read_text())
    print("quick start:", metrics)
    assert metrics["step"] == metrics["num_train_steps"] == 880
    assert metrics["eval_ema_num_examples"] == metrics["eval_raw_num_examples"] == 360
    assert metrics["eval_ema_top1"] >= 0.90, metrics
    assert metrics["eval_raw_top1"] >= 0.85, metrics
    assert os.path.isdir(workdir / "checkpoints" / "880")
    assert "img/s" in result.stderr and "ETA" in result.stderr
    # Our lines only (the summary, progress lines, evaluations, checkpoints and the final metrics);
    # every library's INFO goes to the log file in the workdir.
    console = (result.stdout + result.stderr).splitlines()
    assert len(console) <= 40, "\n".join(console)
    assert os.path.isfile(workdir / "logs" / "train.log")
