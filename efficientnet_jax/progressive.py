"""EfficientNetV2's progressive learning: the run is cut into stages, and from stage to stage the
training image size and the regularisation grow (Tan & Le, ICML 2021, Section 4.2; the official code,
google/automl `efficientnetv2/main.py`, trains its `config.train.stages` one after the other).

A pure function of the config and the number of train steps: `stage_schedule` says, for each stage,
its steps, its image size, dropout rate, RandAugment magnitude and Mixup/CutMix alphas;
`stage_config` is the config the stage's input pipeline and train step are built from. The job
(trainer.py) builds one train step and one train iterator per stage; evaluation keeps
config.image_size throughout, as the official code evaluates at the variant's eval size.

The official rules, with N stages (config.progressive.num_stages) and T train steps, stage s = 0..N-1:

- stage s ends at step int((s + 1) / N * T), where the next begins;
- image size int(min + (final - min) * (s + 1) / N), with min = config.progressive.min_image_size (the
  official `data.ibase`, 128) and final the train size (`configuration.train_image_size`): the first
  stage is already 1/N of the way up (V2-S: 171, 214, 257, 300), the last at the final size;
- RandAugment magnitude and Mixup and CutMix alphas: np.linspace(minimum, the config's value, N)[s],
  so the first stage is at the minimum (official: magnitude 5, alphas 0) and the last at the config's
  value; the regularisation steps by s / (N - 1) while the size steps by (s + 1) / N, as in the code.

Dropout: the official code computes the same linspace for the dropout rate and then discards it
(`del dp_list`; the assignment is commented out), so its dropout stays at the variant's through the
run, while the paper's Table 6 grows it (V2-S 0.1 to 0.3). config.progressive.min_dropout_rate
unset follows the code; set, the dropout rate grows from it to the model's as the magnitude does.

One stage (num_stages 0 or 1) is training without progressive learning, at the config's values: the
official code with one stage would train at the minimum regularisation, which no config wants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from efficientnet_jax.configuration import ConfigError, train_image_size


@dataclasses.dataclass(frozen=True)
class Stage:
    """Steps first_step .. end_step - 1 of the run, trained at these values."""

    index: int  # 0-based
    first_step: int
    end_step: int  # exclusive: the next stage's first step
    image_size: int
    dropout_rate: float
    randaugment_magnitude: float
    mixup_alpha: float
    cutmix_alpha: float


def is_enabled(config: ml_collections.ConfigDict) -> bool:
    """Whether the config asks for progressive learning (more than one stage)."""
    return config.progressive.num_stages > 1


def _check_range(key: str, minimum: float, maximum: float, maximum_key: str) -> None:
    if minimum < 0 or minimum > maximum:
        raise ConfigError(
            f"config.progressive.{key}={minimum} must lie between 0 and {maximum}, the value it grows to "
            f"({maximum_key}); lower config.progressive.{key} or raise {maximum_key}."
        )


def stage_schedule(
    config: ml_collections.ConfigDict, num_train_steps: int, dropout_rate: float
) -> tuple[Stage, ...]:
    """The stages of a run of `num_train_steps` steps whose model has `dropout_rate` (the variant's or
    config.model.dropout_rate: the final dropout). One stage at the config's own values when
    progressive learning is off. A schedule that cannot be trained is a ConfigError naming the key."""
    progressive = config.progressive
    num_stages = progressive.num_stages
    final_size = train_image_size(config)
    if num_stages < 0:
        raise ConfigError(
            f"config.progressive.num_stages must be >= 0 (0 or 1: off, 4: EfficientNetV2's), "
            f"got {num_stages}."
        )
    if num_stages <= 1:
        return (
            Stage(
                0,
                0,
                num_train_steps,
                final_size,
                dropout_rate,
                float(config.randaugment_magnitude),
                float(config.mixup_alpha),
                float(config.cutmix_alpha),
            ),
        )
    if not 0 < progressive.min_image_size <= final_size:
        raise ConfigError(
            f"config.progressive.min_image_size={progressive.min_image_size} must lie between 1 "
            f"and the final train size {final_size} (config.train_image_size, else config.image_size); "
            f"lower it."
        )
    if num_train_steps < num_stages:
        raise ConfigError(
            f"config.progressive.num_stages={num_stages} leaves stages without a step in a run of "
            f"{num_train_steps} steps; lower config.progressive.num_stages or train longer."
        )
    min_dropout_rate = progressive.min_dropout_rate
    if min_dropout_rate is None:
        min_dropout_rate = dropout_rate
    _check_range(
        "min_dropout_rate", min_dropout_rate, dropout_rate, "config.model.dropout_rate, else the variant's"
    )
    _check_range(
        "min_randaugment_magnitude",
        progressive.min_randaugment_magnitude,
        config.randaugment_magnitude,
        "config.randaugment_magnitude",
    )
    _check_range("min_mixup_alpha", progressive.min_mixup_alpha, config.mixup_alpha, "config.mixup_alpha")
    _check_range("min_cutmix_alpha", progressive.min_cutmix_alpha, config.cutmix_alpha, "config.cutmix_alpha")

    dropout_rates = np.linspace(min_dropout_rate, dropout_rate, num_stages)
    magnitudes = np.linspace(progressive.min_randaugment_magnitude, config.randaugment_magnitude, num_stages)
    mixup_alphas = np.linspace(progressive.min_mixup_alpha, config.mixup_alpha, num_stages)
    cutmix_alphas = np.linspace(progressive.min_cutmix_alpha, config.cutmix_alpha, num_stages)
    stages = []
    first_step = 0
    for index in range(num_stages):
        ratio = float(index + 1) / float(num_stages)
        end_step = int(ratio * num_train_steps)
        image_size = int(progressive.min_image_size + (final_size - progressive.min_image_size) * ratio)
        stages.append(
            Stage(
                index,
                first_step,
                end_step,
                image_size,
                float(dropout_rates[index]),
                float(magnitudes[index]),
                float(mixup_alphas[index]),
                float(cutmix_alphas[index]),
            )
        )
        first_step = end_step
    return tuple(stages)


def stage_at(schedule: Sequence[Stage], step: int) -> Stage:
    """The stage that trains step `step` (the update from `step` to `step + 1`)."""
    for stage in schedule:
        if stage.first_step <= step < stage.end_step:
            return stage
    raise ValueError(f"Step {step} lies outside the schedule's steps 0..{schedule[-1].end_step - 1}.")


def stage_config(config: ml_collections.ConfigDict, stage: Stage) -> ml_collections.ConfigDict:
    """A copy of `config` at the stage's values: what its train iterator and train step are built
    from (the input pipeline reads config.train_image_size, the magnitude and the alphas; the step,
    the magnitude of on-device augmentation)."""
    copy = config.copy_and_resolve_references()
    copy.train_image_size = stage.image_size
    copy.randaugment_magnitude = stage.randaugment_magnitude
    copy.mixup_alpha = stage.mixup_alpha
    copy.cutmix_alpha = stage.cutmix_alpha
    copy.model.dropout_rate = stage.dropout_rate
    return copy


def describe(stage: Stage, num_stages: int, step: int, augment: str | None) -> str:
    """The log line of a stage that a job begins or resumes at `step`, e.g. 'Stage 2/4 from step 250:
    image size 214, dropout 0.2, RandAugment magnitude 6.67, Mixup/CutMix alpha 0.0667/0.0667', or
    'Stage 2/4 from step 250, resumed at step 300: ...'. The magnitude only with `augment` (the config's)
    'randaugment': AutoAugment (V2-B0..B3) has none."""
    resumed = f", resumed at step {step}" if step > stage.first_step else ""
    magnitude = (
        f"RandAugment magnitude {stage.randaugment_magnitude:.3g}, " if augment == "randaugment" else ""
    )
    return (
        f"Stage {stage.index + 1}/{num_stages} from step {stage.first_step}{resumed}: image size "
        f"{stage.image_size}, dropout {stage.dropout_rate:.3g}, {magnitude}Mixup/CutMix alpha "
        f"{stage.mixup_alpha:.3g}/{stage.cutmix_alpha:.3g}"
    )


def schedule_to_json(schedule: Sequence[Stage]) -> dict[str, Any]:
    """The schedule as a checkpoint stores it."""
    return {"stages": [dataclasses.asdict(stage) for stage in schedule]}


def schedule_differences(saved: dict[str, Any] | None, schedule: Sequence[Stage]) -> list[str]:
    """What differs, in words, between the schedule a checkpoint stored (None: it was trained without
    progressive learning) and `schedule` (empty for a job without it); empty when they agree."""
    saved_stages = [] if saved is None else saved["stages"]
    expected = schedule_to_json(schedule)["stages"]
    if len(saved_stages) != len(expected):
        return [f"{len(saved_stages) or 'no'} stages saved, {len(expected) or 'no'} stages in the config"]
    return [
        f"stage {stage['index'] + 1}'s {field.replace('_', ' ')}: "
        f"{saved_stage[field]} saved, {stage[field]} now"
        for saved_stage, stage in zip(saved_stages, expected)
        for field in (field.name for field in dataclasses.fields(Stage))
        if saved_stage[field] != stage[field]
    ]
