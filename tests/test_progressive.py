"""EfficientNetV2's progressive learning: the schedule against the official formula, and one real run
in 3 stages on the offline digits (one compilation of the train step per stage, a log line per stage,
a SIGTERM in stage 2 resumed to the uninterrupted run's result)."""

import contextlib
import dataclasses
import logging
import os
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import imagenet
from efficientnet_jax import checkpointing, progressive, steps, trainer
from efficientnet_jax.checkpointing import CheckpointError
from efficientnet_jax.configuration import ConfigError
from efficientnet_jax.progressive import Stage
from tests.workers.tiny_config import tiny_config, with_overrides

# ------------------------------------------------------------------------------------------------
# The schedule, by hand from google/automl efficientnetv2/main.py: stage s of N ends at step
# int((s + 1) / N * T); its image size is int(ibase + (train size - ibase) * (s + 1) / N) with ibase 128;
# magnitude and alphas are np.linspace(minimum, final, N)[s], minima 5 and 0; dropout stays.


def test_v2_s_schedule_is_the_official_one():
    """V2-S (train 300, eval 384, RandAugment 10, no mixing) over 1001 steps: the boundaries truncate
    250.25, 500.5 and 750.75."""
    schedule = progressive.stage_schedule(imagenet.get_config("v2-s"), 1001, 0.2)
    magnitudes = [5.0, 5 + 5 / 3, 5 + 10 / 3, 10.0]
    expected = [
        Stage(0, 0, 250, 171, 0.2, magnitudes[0], 0.0, 0.0),
        Stage(1, 250, 500, 214, 0.2, magnitudes[1], 0.0, 0.0),
        Stage(2, 500, 750, 257, 0.2, magnitudes[2], 0.0, 0.0),
        Stage(3, 750, 1001, 300, 0.2, magnitudes[3], 0.0, 0.0),
    ]
    for stage, want in zip(schedule, expected, strict=True):
        # The magnitudes are linspace's floats: equal to the hand fractions within a few ulps.
        assert stage.randaugment_magnitude == pytest.approx(want.randaugment_magnitude, rel=1e-12)
        assert stage == dataclasses.replace(want, randaugment_magnitude=stage.randaugment_magnitude)


def test_v2_m_schedule_grows_the_alphas_and_paper_dropout_on_request():
    """V2-M (train 384, RandAugment 15, Mixup/CutMix 0.2) in 4 stages of 100 steps; with the paper's
    dropout minimum 0.1 (Table 6) the dropout grows to the variant's 0.3 as the magnitude does."""
    config = imagenet.get_config("v2-m")
    config.progressive.min_dropout_rate = 0.1
    schedule = progressive.stage_schedule(config, 400, 0.3)
    assert [(s.first_step, s.end_step, s.image_size) for s in schedule] == [
        (0, 100, 192),
        (100, 200, 256),
        (200, 300, 320),
        (300, 400, 384),
    ]
    fractions = np.array([0, 1, 2, 3]) / 3
    for values, first, last in (
        ([s.randaugment_magnitude for s in schedule], 5.0, 15.0),
        ([s.mixup_alpha for s in schedule], 0.0, 0.2),
        ([s.cutmix_alpha for s in schedule], 0.0, 0.2),
        ([s.dropout_rate for s in schedule], 0.1, 0.3),
    ):
        np.testing.assert_allclose(values, first + (last - first) * fractions, rtol=1e-12)
        assert (values[0], values[-1]) == (first, last)  # the ends exactly


def test_v1_configs_train_in_one_stage_at_their_own_values():
    config = imagenet.get_config("b0")
    assert not progressive.is_enabled(config)
    assert progressive.stage_schedule(config, 77, 0.2) == (Stage(0, 0, 77, 224, 0.2, 10.0, 0.0, 0.0),)
    assert imagenet.get_config("v2-b0").train_image_size == 192  # V2 trains at its own size
    assert imagenet.get_config("v2-b0").image_size == 224


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"progressive.num_stages": -1}, r"config.progressive.num_stages must be >= 0"),
        (
            {"progressive.min_image_size": 400},
            r"min_image_size=400 must lie between 1 and the final train size 300",
        ),
        (
            {"progressive.min_randaugment_magnitude": 12.0},
            r"min_randaugment_magnitude=12.0 must lie between 0 and 10.0, the value it grows to",
        ),
        (
            {"progressive.min_mixup_alpha": 0.1},
            r"min_mixup_alpha=0.1 must lie between 0 and 0.0, the value it grows to \(config.mixup_alpha\)",
        ),
        (
            {"progressive.min_dropout_rate": 0.5},
            r"min_dropout_rate=0.5 must lie between 0 and 0.2, .* raise config.model.dropout_rate",
        ),
        ({"num_train_steps": 3}, r"num_stages=4 leaves stages without a step in a run of 3 steps"),
    ],
)
def test_a_schedule_that_cannot_be_trained_is_a_config_error(overrides, match):
    config = with_overrides(imagenet.get_config("v2-s"), **overrides)
    with pytest.raises(ConfigError, match=match):
        progressive.stage_schedule(config, config.num_train_steps or 1000, 0.2)


# ------------------------------------------------------------------------------------------------
# A real run: 9 steps in 3 stages of 3, train sizes 16, 24, 32 (evaluation at 32), host RandAugment
# magnitude 4 -> 10, Mixup/CutMix 0 -> 0.2 (labels become probabilities from stage 2 on), dropout 0 -> 0.1.
# A network of one block: compilation is the cost (3 train steps here, 2 more on resume), and one block
# compiles in a fraction of the tiny B0's time (BENCHMARKS.md, "Test-suite compilation").

TOTAL_STEPS = 9
EXPECTED_STAGE_LINES = [
    "Stage 1/3 from step 0: image size 16, dropout 0, RandAugment magnitude 4, Mixup/CutMix alpha 0/0.",
    "Stage 2/3 from step 3: image size 24, dropout 0.05, RandAugment magnitude 7, "
    "Mixup/CutMix alpha 0.1/0.1.",
    "Stage 3/3 from step 6: image size 32, dropout 0.1, RandAugment magnitude 10, "
    "Mixup/CutMix alpha 0.2/0.2.",
]


def progressive_config(data_dir, **overrides):
    return tiny_config(
        data_dir,
        **{
            "num_train_steps": TOTAL_STEPS,
            "image_size": 32,
            "checkpoint_every_steps": 3,
            "augment": "randaugment",
            "augment_on_device": False,
            "randaugment_magnitude": 10.0,
            "mixup_alpha": 0.2,
            "cutmix_alpha": 0.2,
            "model.dropout_rate": 0.1,
            "model.block_strings": ("r1_k3_s11_e1_i32_o16",),
            "progressive.num_stages": 3,
            "progressive.min_image_size": 8,
            "progressive.min_randaugment_magnitude": 4.0,
            "progressive.min_dropout_rate": 0.0,
            **overrides,
        },
    )


class _Messages(logging.Handler):
    """The job's log lines; `on_message(text)` runs in the logging call, in the job's thread."""

    def __init__(self, on_message=lambda text: None):
        super().__init__(logging.INFO)
        self.messages, self.on_message = [], on_message

    def emit(self, record):
        self.messages.append(record.getMessage())
        self.on_message(record.getMessage())


@contextlib.contextmanager
def observed_job(monkeypatch, on_message=lambda text: None):
    """Records the job's log lines, each train step's batch (image size, label rank) and the
    lowerings to an XLA program (every compilation, whether XLA compiles it or the persistent cache
    holds it, begins with one) that happen inside train-step calls."""
    observed = {"batches": [], "train_step_compilations": 0}
    inside = []

    def count(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration" and inside:
            observed["train_step_compilations"] += 1

    real_pmap_train_step = steps.pmap_train_step

    def pmap_train_step(*args, **kwargs):
        p_train_step = real_pmap_train_step(*args, **kwargs)

        def observed_step(state, batch):
            observed["batches"].append((batch["image"].shape[2], batch["label"].ndim))
            inside.append(True)
            try:
                return p_train_step(state, batch)
            finally:
                inside.pop()

        return observed_step

    monkeypatch.setattr(steps, "pmap_train_step", pmap_train_step)
    handler = _Messages(on_message)
    absl_logger = logging.getLogger("absl")
    previous_level = absl_logger.level
    absl_logger.setLevel(logging.INFO)
    absl_logger.addHandler(handler)
    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        yield observed, handler.messages
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
        absl_logger.removeHandler(handler)
        absl_logger.setLevel(previous_level)
        monkeypatch.undo()


def without_timing(metrics):
    return {key: value for key, value in metrics.items() if "per_second" not in key and "seconds" not in key}


def stage_lines(messages):
    return [message for message in messages if message.startswith("Stage ")]


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    """(workdir, final metrics, observed, log lines) of the 3-stage run."""
    workdir = str(tmp_path_factory.mktemp("progressive"))
    with pytest.MonkeyPatch.context() as monkeypatch, observed_job(monkeypatch) as (observed, messages):
        _, metrics = trainer.train_and_evaluate(progressive_config(data_dir), workdir)
    return workdir, metrics, observed, messages


def test_each_stage_compiles_its_train_step_once_and_logs_its_values(uninterrupted):
    workdir, metrics, observed, messages = uninterrupted
    assert observed["train_step_compilations"] == 3
    # [devices, per device] class ids, then [devices, per device, classes] probabilities once mixing starts.
    assert observed["batches"] == [(16, 2)] * 3 + [(24, 3)] * 3 + [(32, 3)] * 3
    assert stage_lines(messages) == EXPECTED_STAGE_LINES
    assert metrics["step"] == TOTAL_STEPS and metrics["eval_ema_num_examples"] == 360  # evaluated at 32
    saved = checkpointing.read_progressive_schedule(os.path.join(workdir, "checkpoints", str(TOTAL_STEPS)))
    assert [stage["image_size"] for stage in saved["stages"]] == [16, 24, 32]


def test_sigterm_in_stage_2_resumes_in_stage_2_to_the_uninterrupted_result(data_dir, uninterrupted, tmp_path):
    """SIGTERM when step 4 is logged: the job saves at the next step check (4 or 5, in stage 2) and
    stops; a changed schedule refuses to resume it; the same config resumes in stage 2 and ends with
    the uninterrupted run's metrics and state, bit for bit."""
    workdir = str(tmp_path / "run")

    def preempt_at_step_4(text):
        if text.startswith(f"step 4/{TOTAL_STEPS} "):
            signal.raise_signal(signal.SIGTERM)

    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        observed_job(monkeypatch, preempt_at_step_4) as (_, messages),
    ):
        trainer.train_and_evaluate(progressive_config(data_dir), workdir)
    stopped = [m for m in messages if m.startswith("Stopped at step")]
    assert stopped, messages
    stopped_at = int(stopped[0].split()[3])
    assert 3 < stopped_at < 6 and checkpointing.checkpoint_steps(workdir)[-1] == stopped_at

    changed = progressive_config(data_dir, **{"progressive.min_randaugment_magnitude": 5.0})
    with pytest.raises(
        CheckpointError,
        match=r"another progressive-learning schedule than the config gives "
        r"\(stage 1's randaugment magnitude: 4.0 saved, 5.0 now; stage 2's randaugment magnitude",
    ):
        trainer.train_and_evaluate(changed, workdir)

    with pytest.MonkeyPatch.context() as monkeypatch, observed_job(monkeypatch) as (observed, messages):
        _, metrics = trainer.train_and_evaluate(progressive_config(data_dir), workdir)
    straight_workdir, straight_metrics, _, _ = uninterrupted
    assert stage_lines(messages) == [
        EXPECTED_STAGE_LINES[1].replace("from step 3:", f"from step 3, resumed at step {stopped_at}:"),
        EXPECTED_STAGE_LINES[2],
    ]
    assert observed["train_step_compilations"] == 2
    assert without_timing(metrics) == without_timing(straight_metrics)
    final = [
        checkpointing.read_items(
            os.path.join(directory, "checkpoints", str(TOTAL_STEPS)),
            state=ocp.args.StandardRestore(),
        ).state
        for directory in (workdir, straight_workdir)
    ]
    for key in ("params", "batch_stats", "opt_state", "ema_params", "ema_batch_stats"):
        for x, y in zip(jax.tree.leaves(final[0][key]), jax.tree.leaves(final[1][key]), strict=True):
            np.testing.assert_array_equal(x, y, err_msg=key)
