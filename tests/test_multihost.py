"""Several hosts on loopback: two processes (2 or 3 CPU devices each, gloo collectives) against one
process with all their devices, and a job that loses one of its processes."""

import os
import re
import socket
import subprocess
import sys
import time

import numpy as np

from configs import quickstart
from efficientnet_jax import checkpointing, input_pipeline
from tests import xla_flags

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


def test_a_killed_host_stops_the_other_with_one_line_within_the_heartbeat_timeout(data_dir, tmp_path):
    """Two train.py processes on loopback; process 1 is SIGKILLed mid-run. Process 0 must not wait
    forever in a collective, nor end through JAX's C++ abort: within --heartbeat_timeout_s (10 s here)
    and the watch's one-second beat it ends with status 1 and one line naming the lost process, the
    step and the checkpoint a restart resumes from (the newest complete one), the details in its log."""
    heartbeat_timeout_s, bound_s = 10, 25
    port = _free_port()
    env = dict({k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, XLA_FLAGS=xla_flags.for_devices(2),
               PYTHONUNBUFFERED="1")

    def start(process_id, **streams):
        return subprocess.Popen(
            [sys.executable, os.path.join(REPO, "train.py"), f"--workdir={tmp_path / f'host{process_id}'}",
             f"--config={os.path.join(REPO, 'tests', 'workers', 'tiny_config.py')}:{data_dir}",
             "--config.num_train_steps=100000", "--config.checkpoint_every_steps=2",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={process_id}",
             f"--heartbeat_timeout_s={heartbeat_timeout_s}"],
            cwd=REPO, env=env, text=True, **streams,
        )

    survivor = start(0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = start(1, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        output = []
        for line in survivor.stdout:
            output.append(line)
            if "step 4/100000" in line:
                break
        assert victim.poll() is None and survivor.poll() is None, "".join(output)[-3000:]
        victim.kill()
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
    checkpoints = tmp_path / "host0" / "checkpoints"
    newest = max(checkpointing.checkpoint_steps(str(tmp_path / "host0")))
    match = re.fullmatch(
        rf"train.py: process 1 of 2 was lost \(no heartbeat for {heartbeat_timeout_s} s\) at step (\d+); "
        rf"stopping\. Restart the job \(every process\) with the same command: it resumes from the "
        rf"checkpoint of step {newest} in {re.escape(str(checkpoints))}\.",
        ours[0],
    )
    assert match and int(match.group(1)) >= max(newest, 4), ours[0]
    assert "Heartbeat counts" in (tmp_path / "host0" / "logs" / "train.process0.log").read_text()
