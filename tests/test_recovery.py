"""A job that comes back by itself: an overflowing update is never saved, a damaged newest
checkpoint is passed over, a save that fails leaves the previous checkpoint readable, a SIGTERM saves
and stops, and a SIGKILL at any moment costs only the steps since the last checkpoint. Each on the
real training loop with the tiny config, RandAugment on the devices (a resumed step must replay its
augmentation) and the official batch-norm rule; compared with one uninterrupted run of the same steps,
which also shows what every job writes beside its checkpoints.

The `train.py` subprocesses run under the XLA flags of this process (tests/conftest.py) and the
same config as the in-process runs, so they compile the same programs: the persistent compilation
cache serves them, and what they cost is start-up and steps."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from efficientnet_jax import checkpointing, optim, trainer
from efficientnet_jax.checkpointing import CheckpointError, CheckpointSaveError
from tests.checkpoint_damage import DAMAGES, damage_array_files
from tests.workers.tiny_config import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Checkpoints every 2 steps, the newest 3 kept. Runs interrupted after step 2 or 4 resume with steps to
# spare: a SIGTERM sent when step 2 is logged stops the job a step or two later, whatever the load.
TOTAL_STEPS = 10
KEPT_AT_THE_END = ["6", "8", "10"]
# The official batch-norm rule, on 8 devices one group per device: the replicas' moving statistics would
# differ, and resuming must still be bit-exact (steps.train_step keeps replica 0's on every replica).
# RandAugment on the devices: each step's augmentation is drawn from its step number, so resumed steps
# must replay the draws of the uninterrupted run.
RECOVERY_SETTINGS = {
    "num_train_steps": TOTAL_STEPS,
    "checkpoint_every_steps": 2,
    "batch_norm_group_size": "reference",
    "augment": "randaugment",
    "augment_on_device": True,
}


def recovery_config(data_dir, **overrides):
    return tiny_config(data_dir, **{**RECOVERY_SETTINGS, **overrides})


def without_timing(metrics):
    return {key: value for key, value in metrics.items() if "per_second" not in key and "seconds" not in key}


def evaluation_results(metrics):
    return {key: value for key, value in without_timing(metrics).items() if key.startswith(("eval_", "step"))}


def read_state(workdir, step):
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state", "model"))
    try:
        return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
    finally:
        manager.close()


def assert_same_state(a, b):
    for key in ("params", "batch_stats", "opt_state", "ema_params", "ema_batch_stats"):
        for x, y in zip(jax.tree.leaves(a[key]), jax.tree.leaves(b[key])):
            np.testing.assert_array_equal(x, y, err_msg=key)


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    """(workdir, final metrics) of the run every recovery is compared with."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    _, metrics = trainer.train_and_evaluate(recovery_config(data_dir), workdir)
    return workdir, metrics


@pytest.fixture(scope="module")
def stopped_after_step_4(data_dir, tmp_path_factory):
    """A workdir with the checkpoints of steps 2 and 4, as a job stopped there leaves it."""
    workdir = str(tmp_path_factory.mktemp("stopped"))
    trainer.train_and_evaluate(recovery_config(data_dir, num_train_steps=4), workdir)
    assert checkpointing.checkpoint_steps(workdir) == [2, 4]
    return workdir


def test_an_overflowing_update_is_never_saved_and_the_job_names_its_step(data_dir, tmp_path, monkeypatch):
    """The third update overflows while its loss (computed before the update) is finite: the job
    stops naming step 3 and the last good checkpoint, step 2, and writes no checkpoint of step 3."""
    real_optimizer = optim.optimizer
    monkeypatch.setattr(optim, "optimizer", lambda learning_rate_fn, config: optax.chain(
        real_optimizer(learning_rate_fn, config),
        optax.scale_by_schedule(lambda count: jnp.where(count == 2, jnp.inf, 1.0)),
    ))
    workdir = str(tmp_path / "run")
    # Without RandAugment: this job compiles its own train step (the optimizer differs), and the
    # augmentation has no part in what is checked; it halves the compilation.
    config = recovery_config(data_dir, checkpoint_every_steps=1, log_every_steps=1, augment=None)
    with pytest.raises(trainer.NonFiniteError, match=r"Non-finite train state after the update .* at step 3: "
                       r"stopping without saving it; the last good checkpoint is step 2 in "):
        trainer.train_and_evaluate(config, workdir)
    assert checkpointing.checkpoint_steps(workdir) == [1, 2]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]  # nothing half-written
    for step in (1, 2):
        state = read_state(workdir, step)
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state) if leaf.dtype.kind == "f"), (
            step
        )


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_job_resumes_from_the_previous(
    data_dir, uninterrupted, stopped_after_step_4, tmp_path, damage, caplog
):
    workdir = str(shutil.copytree(stopped_after_step_4, tmp_path / "run"))
    damage_array_files(os.path.join(workdir, "checkpoints", "4"), damage)
    _, metrics = trainer.train_and_evaluate(recovery_config(data_dir), workdir)
    straight_workdir, straight_metrics = uninterrupted
    assert without_timing(metrics) == without_timing(straight_metrics)
    assert_same_state(read_state(workdir, TOTAL_STEPS), read_state(straight_workdir, TOTAL_STEPS))
    assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", "4", "state"))  # kept for a person
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        "Checkpoint of step 4 is damaged" in m and "damaged_checkpoints" in m and "resuming from step 2" in m
        for m in messages
    ), messages


def test_when_no_checkpoint_is_readable_the_job_stops_naming_each_and_moves_none(
    data_dir, stopped_after_step_4, tmp_path
):
    workdir = str(shutil.copytree(stopped_after_step_4, tmp_path / "run"))
    for step in (2, 4):
        damage_array_files(os.path.join(workdir, "checkpoints", str(step)), "delete")
    with pytest.raises(
        CheckpointError, match=r"No checkpoint in .*checkpoints can be read \(step 4: .*; step 2: "
    ):
        trainer.train_and_evaluate(recovery_config(data_dir), workdir)
    assert checkpointing.checkpoint_steps(workdir) == [2, 4]
    assert not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))


def test_a_failing_save_stops_the_job_and_leaves_the_previous_checkpoint_readable(
    data_dir, uninterrupted, tmp_path, monkeypatch
):
    """The disk fills up while the checkpoint of step 4 is written (its array files half there):
    the job stops naming step 4 and the intact step 2; a restart resumes from step 2 and ends as
    the uninterrupted run does."""
    real_save = ocp.StandardCheckpointHandler.async_save
    calls = []

    def disk_full_on_second_save(self, directory, *args, **kwargs):
        calls.append(directory)
        if len(calls) == 2:
            # Orbax creates the item's temporary directory on a thread of its own while it calls this
            # (create_directories_asynchronously): creating it here too raced with that (ENOENT, once
            # in a CI run), so the half-written file goes in once Orbax has made the directory.
            deadline = time.monotonic() + 60
            while not os.path.isdir(directory) and time.monotonic() < deadline:
                time.sleep(0.01)
            with open(os.path.join(directory, "half_written"), "wb") as f:
                f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, directory, *args, **kwargs)

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", disk_full_on_second_save)
    workdir = str(tmp_path / "run")
    with pytest.raises(
        CheckpointSaveError,
        match=r"Saving the checkpoint of step 4 to .* failed: .*No space left "
        r"on device.* The previous checkpoint, step 2 in .* is intact",
    ):
        trainer.train_and_evaluate(recovery_config(data_dir), workdir)
    assert checkpointing.checkpoint_steps(workdir) == [2]
    checkpointing.read_items(os.path.join(workdir, "checkpoints", "2"), model=ocp.args.JsonRestore())

    monkeypatch.undo()
    _, metrics = trainer.train_and_evaluate(recovery_config(data_dir), workdir)
    assert without_timing(metrics) == without_timing(uninterrupted[1])
    # the half-written one gone
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == KEPT_AT_THE_END


def _start_train(workdir, data_dir, *flags):
    """train.py with the recovery config (`--config.num_train_steps=...` among `flags` overrides it)."""
    config = f"--config={os.path.join(REPO, 'tests', 'workers', 'tiny_config.py')}:{data_dir}"
    settings = [f"--config.{key}={value}" for key, value in RECOVERY_SETTINGS.items()]
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), f"--workdir={workdir}", config, *settings, *flags],
        cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _signal_once_logged(process, step, signal_number):
    """Sends `signal_number` once the job has logged `step` (of its 1000); returns what it printed."""
    output = []
    for line in process.stdout:
        output.append(line)
        if f"step {step}/1000" in line:
            process.send_signal(signal_number)
            break
    rest, _ = process.communicate(timeout=300)
    return "".join(output) + rest


def _finish(workdir, data_dir):
    """The same command, restarted to run to TOTAL_STEPS: its output and final metrics."""
    process = _start_train(workdir, data_dir)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        return output, json.load(f)


def assert_same_result(workdir, metrics, uninterrupted):
    """Bit-identical train state to the uninterrupted run, and its evaluation: the same state evaluated
    by an eval step compiled in another process, so the counts agree exactly and the mean losses to
    float32 summation order (the training-loss window is a log statistic of the steps a run did)."""
    straight_workdir, straight_metrics = uninterrupted
    assert_same_state(read_state(workdir, TOTAL_STEPS), read_state(straight_workdir, TOTAL_STEPS))
    resumed, straight = evaluation_results(metrics), evaluation_results(straight_metrics)
    assert resumed.keys() == straight.keys()
    for key in resumed:
        if key.endswith("_loss"):
            np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, err_msg=key)
        else:
            assert resumed[key] == straight[key], key


def test_sigterm_saves_and_a_restart_resumes_bit_exactly(data_dir, uninterrupted, tmp_path):
    """Preempt a job with SIGTERM (a fresh process each time, as a preemption ends a job): it saves the
    step it stopped at and exits 0; the same command resumes from that checkpoint and ends as the
    uninterrupted run."""
    workdir = str(tmp_path / "run")
    process = _start_train(workdir, data_dir, "--config.num_train_steps=1000")
    log = _signal_once_logged(process, 2, signal.SIGTERM)
    assert process.returncode == 0, log[-3000:]
    stopped_at = int(log.split("Stopped at step ")[1].split(" ")[0])
    assert 2 <= stopped_at < TOTAL_STEPS, log[-3000:]
    assert checkpointing.checkpoint_steps(workdir)[-1] == stopped_at

    output, metrics = _finish(workdir, data_dir)
    assert f"Resumed from the checkpoint of step {stopped_at}" in output
    assert_same_result(workdir, metrics, uninterrupted)


def test_a_job_killed_with_sigkill_resumes_to_the_uninterrupted_result(data_dir, uninterrupted, tmp_path):
    """SIGKILL (no handler runs) right after step 4 is logged, while the save of step 2 may still be
    in flight and that of step 4 may have begun; the same command then resumes from the newest
    complete checkpoint, whichever that was, and ends bit-identical to the uninterrupted run."""
    workdir = str(tmp_path / "run")
    process = _start_train(workdir, data_dir, "--config.num_train_steps=1000")
    log = _signal_once_logged(process, 4, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL, log[-3000:]
    assert not os.path.exists(os.path.join(workdir, "final_metrics.json"))

    _, metrics = _finish(workdir, data_dir)
    # A save cut off mid-write leaves a temporary directory: it is removed, never taken for a checkpoint.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == KEPT_AT_THE_END
    assert_same_result(workdir, metrics, uninterrupted)


def test_the_job_writes_its_config_and_event_files(uninterrupted):
    """Beside its checkpoints, the uninterrupted run left the config it ran (config.json), TensorBoard
    event files, and final metrics that count every test image once."""
    workdir, metrics = uninterrupted
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read().count('"dataset": "sklearn_digits"') == 1
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
    assert metrics["eval_raw_num_examples"] == 360 and metrics["step"] == TOTAL_STEPS
