"""The entry points as a user runs them (subprocesses): a quiet console whose lines are ours while the
log file holds every library's, and a user error ending each one with a single line on stderr naming
the reason, a non-zero exit status and no traceback.

One tiny job (2 steps) is trained per module through train.py; its console is the quiet-console
test's subject and its checkpoint is damaged (on a copy) for eval.py. Every other case fails before
any training or compilation, so it costs only the start-up of a Python process importing TensorFlow.
"""

import os
import shutil
import subprocess
import sys

import pytest

from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "workers", "tiny_config.py")
# Library INFO lines the quick start printed on every save and every epoch, and TensorFlow's start-up.
ORBAX_INFO = "CheckpointManager created"
TFDS_INFO = "Constructing tf.data.Dataset"
TENSORFLOW_STARTUP = ("oneDNN custom operations", "absl::InitializeLog")


def run(*command):
    """`python <command>` from the repository root, on 2 CPU devices, as tests/test_train.py runs train.py."""
    env = dict(os.environ, XLA_FLAGS=xla_flags.for_devices(2), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, *command],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_line_error(result, program, reason):
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last_line = result.stderr.rstrip().splitlines()[-1]
    assert last_line.startswith(f"{program}: ") and reason in last_line, output[-3000:]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A workdir trained for 2 steps by train.py (a checkpoint at step 2), and train.py's console."""
    workdir = str(tmp_path_factory.mktemp("run"))
    result = run(
        "train.py", f"--config={TINY_CONFIG}:{data_dir}", f"--workdir={workdir}", "--config.num_train_steps=2"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, result.stdout + result.stderr


def test_the_console_shows_our_lines_and_the_log_file_every_librarys(trained):
    workdir, console = trained
    for line in (ORBAX_INFO, TFDS_INFO, *TENSORFLOW_STARTUP):
        assert line not in console, console
    for line in (
        "Training efficientnet-b0",
        "step 2/2",
        "img/s",
        "ETA",
        "eval @ step 2",
        "Finished saving checkpoint",
        "Final metrics",
    ):
        assert line in console, console
    assert len(console.splitlines()) <= 12, console
    with open(os.path.join(workdir, "logs", "train.log")) as f:
        log = f.read()
    for line in (ORBAX_INFO, TFDS_INFO, "Final metrics"):
        assert line in log


def test_eval_of_a_damaged_checkpoint_is_one_line(trained, data_dir, tmp_path):
    """Orbax gives up on the first unreadable array while tensorstore still reads others; their late
    callbacks into orbax's closed event loop must not print after the line (console.py)."""
    copy = shutil.copytree(trained[0], tmp_path / "run")
    for root, _, names in os.walk(copy / "checkpoints" / "2" / "state"):
        for name in names:
            if os.path.basename(root) == "d":  # the array data files
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(os.path.getsize(os.path.join(root, name)) // 2)
    result = run("eval.py", f"--config={TINY_CONFIG}:{data_dir}", f"--checkpoint={copy}")
    assert_one_line_error(result, "eval.py", "Cannot read the checkpoint at")


@pytest.mark.parametrize(
    "command, program, reason",
    [
        # Without --config, ml_collections applies the overrides to the default config file at import.
        (
            ["train.py", "--config.batch_sise=8"],
            "train.py",
            "Unknown config key 'batch_sise'. Did you mean \"batch_size\"",
        ),
        (
            ["train.py", "--config={tiny}", "--config.batch_size=eight"],
            "train.py",
            "--config.batch_size=eight",
        ),
        (["eval.py", "--config={tiny}", "--checkpoint={tmp}/missing"], "eval.py", "missing does not exist"),
        (
            ["sweep.py", "--config=configs/scaling/compound.py:phi=2,alpha=0", "--workdir={tmp}/sweep"],
            "sweep.py",
            "Bad sweep: config.sweep.alpha, beta and gamma must all be positive",
        ),
        (["report.py", "--workdir={tmp}"], "report.py", "No sweep in"),
        (
            ["-m", "efficientnet_jax.pretrained", "{tmp}/b0.json", "b0", "{tmp}/out"],
            "python -m efficientnet_jax.pretrained",
            "is not a weights file",
        ),
        (
            ["convert_weights.py", "{tmp}/b0.json", "b0", "{tmp}/out"],
            "convert_weights.py",
            "is not a weights file",
        ),
        (
            ["predict.py", "--checkpoint={tmp}/missing", "{tmp}/b0.json"],
            "predict.py",
            "missing does not exist",
        ),
        (["predict.py", "--checkpoint={tmp}"], "predict.py", "Name at least one image file"),
        (
            ["predict.py", "--checkpoint={tmp}", "--top_k=0", "{tmp}/b0.json"],
            "predict.py",
            "--top_k must be at least 1",
        ),
        (
            ["train.py", "--config={tiny}", "--config.input_normalization=lab", "--workdir={tmp}/run"],
            "train.py",
            "config.input_normalization='lab' is neither one of 'imagenet', 'edge', 'signed_unit'",
        ),
    ],
)
def test_a_user_error_is_one_line(command, program, reason, data_dir, tmp_path):
    (tmp_path / "b0.json").write_text("{}")
    result = run(*(arg.format(tiny=f"{TINY_CONFIG}:{data_dir}", tmp=tmp_path) for arg in command))
    assert_one_line_error(result, program, reason)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "out").exists()


def test_debug_shows_the_traceback():
    result = run("train.py", "--debug", "--config.batch_sise=8")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "batch_sise" in result.stderr
