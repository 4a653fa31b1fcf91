"""Several hosts on loopback: two processes (2 or 3 CPU devices each, gloo collectives) against one
process with all their devices, and a job that loses one of its processes."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import quickstart
from efficientnet_jax import checkpointing, input_pipeline, supervision
from tests import xla_flags
from tests.workers import supervised_worker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "workers", "multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_workers(mode, num_processes, out_dir, data_dir):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the worker sets its own
    processes = [
        subprocess.Popen(
            [sys.executable, WORKER, mode, str(i), str(num_processes), str(port), str(out_dir), data_dir],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(num_processes)
    ]
    try:
        logs = [p.communicate(timeout=600)[0] for p in processes]
    finally:  # a hung launch must not outlive its test, competing with the rest of the suite
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-4000:]
    return [dict(np.load(out_dir / f"params_{mode}_{num_processes}_{i}.npz")) for i in range(num_processes)]


def test_two_hosts_train_the_quick_start_together(data_dir, tmp_path):
    """The real loop on two processes, each reading its own shard: identical parameters on both,
    and only the coordinator writes checkpoints, config and event files."""
    host0, host1 = _run_workers("train", 2, tmp_path, data_dir)
    for name in host0:
        np.testing.assert_array_equal(host0[name], host1[name], err_msg=name)
    coordinator, other = tmp_path / "workdir_0", tmp_path / "workdir_1"
    assert sorted(os.listdir(coordinator / "checkpoints")) == ["3", "5"]
    assert (coordinator / "config.json").exists()
    assert not other.exists() or os.listdir(other) == []


def test_two_hosts_equal_one_host_with_the_same_devices_in_batch_norm_groups_across_hosts(data_dir, tmp_path):
    """The same global batches, split over 2 processes x 3 devices or 1 process x 6 devices, batch norm
    in groups of 2 replicas in the global device order: devices 2 and 3, one on each host, pool their
    statistics. Parameters and (replica 0's) batch statistics agree."""
    host0, host1 = _run_workers("steps", 2, tmp_path, data_dir)
    (single,) = _run_workers("steps", 1, tmp_path, data_dir)
    # Hosts agree bit for bit. Against one host only up to summation order (gloo's cross-process
    # all-reduce adds in another order), which RMSProp's division by the root mean square of small
    # gradients amplifies: 2.2e-5 was seen on a depthwise kernel entry after the three steps.
    for name in single:
        np.testing.assert_array_equal(host0[name], host1[name], err_msg=name)
        np.testing.assert_allclose(host0[name], single[name], rtol=1e-4, atol=5e-5, err_msg=name)
    moved = max(float(np.max(np.abs(v))) for v in single.values())
    assert moved > 0


def test_each_host_reads_its_own_shard(data_dir):
    """Whole-image crops make training images identifiable (up to the random flip): over one epoch
    the two hosts' examples are disjoint and together cover the training split."""
    config = quickstart.get_config()
    config.data_dir = data_dir
    config.batch_size = 32
    config.crop_area_range = (1.0, 1.0)
    config.crop_aspect_range = (1.0, 1.0)
    seen = []
    for process_index in range(2):
        steps = input_pipeline.steps_per_epoch(config, process_index=process_index, process_count=2,
                                               local_device_count=2)
        batches = input_pipeline.create_train_iterator(
            config,
            process_index=process_index,
            process_count=2,
            local_device_count=2,
        )
        images = np.concatenate([next(batches)["image"].reshape(-1, 32, 32, 3) for _ in range(steps)])
        seen.append({min(im.tobytes(), im[:, ::-1].tobytes()) for im in np.round(images, 3)})
        assert len(seen[-1]) == steps * 16  # no example twice within a host's epoch
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 2 * (1437 // 2 // 16) * 16


@pytest.mark.parametrize("killed", [1, 0], ids=["a worker", "the coordinator"])
def test_a_killed_host_stops_the_other_with_one_line_within_the_heartbeat_timeout(data_dir, tmp_path, killed):
    """Two train.py processes on loopback sharing a workdir; one is SIGKILLed mid-run. The other must not
    wait forever in a collective, nor end through JAX's C++ abort (what JAX does when process 0, which
    runs the coordination service, is gone): within --heartbeat_timeout_s (10 s here) and the watch's
    one-second beat it ends with status 1 and one line naming the lost process, the step and the
    checkpoint a restart resumes from (the newest complete one), the details in its log."""
    heartbeat_timeout_s, bound_s = 10, 25
    survivor_id = 1 - killed
    port = _free_port()
    env = dict({k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, XLA_FLAGS=xla_flags.for_devices(2),
               PYTHONUNBUFFERED="1")

    def start(process_id, **streams):
        return subprocess.Popen(
            [sys.executable, os.path.join(REPO, "train.py"), f"--workdir={tmp_path}",
             f"--config={os.path.join(REPO, 'tests', 'workers', 'tiny_config.py')}:{data_dir}",
             "--config.num_train_steps=100000", "--config.checkpoint_every_steps=2",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={process_id}",
             f"--heartbeat_timeout_s={heartbeat_timeout_s}"],
            cwd=REPO, env=env, text=True, **streams,
        )

    survivor = start(survivor_id, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = start(killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        output = []
        for line in survivor.stdout:
            output.append(line)
            if "step 4/100000" in line:
                break
        assert victim.poll() is None and survivor.poll() is None, "".join(output)[-3000:]
        victim.kill()  # the supervising parent: its child, the process in the job, ends within a second
        killed_at = time.monotonic()
        rest, _ = survivor.communicate(timeout=bound_s + 60)
        elapsed = time.monotonic() - killed_at
    finally:
        for process in (survivor, victim):
            if process.poll() is None:
                process.kill()
    assert survivor.returncode == 1, rest[-3000:]
    assert elapsed < bound_s, (elapsed, rest[-3000:])
    for sign_of_a_crash in ("Traceback", "Fatal Python error", "Check failure", "Terminating process"):
        assert sign_of_a_crash not in rest, rest[-3000:]
    ours = [line for line in rest.splitlines() if line.startswith("train.py:")]
    assert len(ours) == 1 and rest.rstrip().endswith(ours[0]), rest[-3000:]
    newest = max(checkpointing.checkpoint_steps(str(tmp_path)))
    cause = f"no heartbeat for {heartbeat_timeout_s} s" if killed else supervision.SERVICE_LOST
    match = re.fullmatch(
        rf"train.py: process {killed} of 2 was lost \({cause}\) at step (\d+); "
        rf"stopping\. Restart the job \(every process\) with the same command: it resumes from the "
        rf"checkpoint of step {newest} in {re.escape(str(tmp_path / 'checkpoints'))}\.",
        ours[0],
    )
    assert match and int(match.group(1)) >= max(newest, 4), ours[0]
    log = (tmp_path / "logs" / f"train.process{survivor_id}.log").read_text()
    assert ("Heartbeat counts" if killed else "coordination service") in log, log[-3000:]


SUPERVISED = supervised_worker.__file__


def _supervised(mode, **streams):
    return subprocess.Popen([sys.executable, SUPERVISED, mode], cwd=REPO, text=True, **streams)


def _ended(pid, within_s):
    """Whether process `pid` is gone or a zombie within `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode", ["abort", "lost", "crash"])
def test_the_supervising_parent_names_a_lost_process_and_passes_any_other_ending_through(mode):
    """supervision.run_child, acted out without JAX (tests/workers/supervised_worker.py): JAX's abort for
    an unreachable coordination service, and a loss the child's watch reported, end with the entry
    point's one line, whatever C++ records and abort output came before it (held, handed to the line's
    callback for the log file); any other ending passes through with its output and exit status."""
    process = _supervised(mode, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=60)
    if mode == "crash":
        assert process.returncode == 3
        assert stderr.startswith("E1205")
        assert stderr.endswith("Traceback (most recent call last):\nRuntimeError: a bug\n")
        return
    assert process.returncode == 1, stderr
    expected = {
        "abort": "supervised_worker.py: process [0] of 2 lost (its coordination service stopped answering) "
        "at step 7; no details\n",
        "lost": "supervised_worker.py: process [1] of 2 lost (no heartbeat for 10 s) at step 5; "
        "counts unchanged\n",
    }[mode]
    assert stderr == expected
    if mode == "abort":
        assert stdout == supervised_worker.CPP_WARNING + supervised_worker.JAX_ABORT


def test_the_supervising_parent_forwards_sigterm_and_its_loss_ends_the_child():
    """SIGTERM to the parent reaches the child (which stops and exits 0, so does the parent); a SIGKILLed
    parent's child ends within a second, as a lost host's process must."""
    for parent_signal in (signal.SIGTERM, signal.SIGKILL):
        process = _supervised("sigterm", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready = process.stderr.readline()
        assert ready.startswith("ready "), ready
        child = int(ready.split()[1])
        process.send_signal(parent_signal)
        if parent_signal == signal.SIGTERM:
            _, stderr = process.communicate(timeout=60)
            assert process.returncode == 0 and stderr.endswith("trainer.py:1] stopped by signal 15\n"), stderr
        else:
            process.wait(timeout=60)
            assert _ended(child, within_s=3), "the child outlived its parent"
