"""What a training config means, checked before anything runs: the model it describes and the
rules its values must follow. Pure Python and Flax: no TensorFlow, no input pipeline."""

from __future__ import annotations

import ml_collections

from efficientnet_jax.model import create_model
from efficientnet_jax.scaling import (
    ModelSpec,
    baseline_fields,
    get_baseline,
    stages_from_block_strings,
    variant_coefficients,
)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the fix."""


def model_spec_from_config(config: ml_collections.ConfigDict, num_classes: int) -> ModelSpec:
    """The model a config describes: the baseline network (`config.model.baseline`, by default the
    variant's own, or its stage table replaced by `config.model.block_strings`) scaled by the
    variant's coefficients, with any coefficient the config sets. The variant's own baseline gives
    the released variants."""
    try:
        own_baseline = variant_coefficients(config.model.variant).baseline
    except ValueError as error:
        raise ConfigError(f"config.model.variant: {error}") from error
    baseline_name = config.model.baseline or own_baseline
    try:
        baseline = get_baseline(baseline_name)
    except ValueError as error:
        raise ConfigError(f"config.model.baseline: {error}") from error
    fields = baseline_fields(baseline)
    if config.model.block_strings:
        try:
            fields["stages"] = stages_from_block_strings(config.model.block_strings)
        except ValueError as error:
            raise ConfigError(f"config.model.block_strings: {error}") from error
    fields.update(
        (field, config.model[field])
        for field in ("width", "depth", "dropout_rate")
        if config.model.get(field) is not None
    )
    if config.model.block_strings:
        fields["name"] = "custom"
    elif baseline_name != own_baseline:
        fields["name"] = baseline_name
    model = create_model(
        config.model.variant,
        num_classes=num_classes,
        resolution=config.image_size,
        drop_connect_rate=config.model.drop_connect_rate,
        batch_norm_momentum=config.model.batch_norm_momentum,
        dtype="bfloat16" if config.half_precision else "float32",
        depthwise_implementation=config.model.depthwise_implementation,
        remat=config.model.remat,
        **fields,
    )
    return model.spec


def validate(config: ml_collections.ConfigDict) -> None:
    positive = ("batch_size", "eval_batch_size", "image_size", "log_every_steps", "eval_every_steps",
                "checkpoint_every_steps", "keep_checkpoints")
    for key in positive:
        if config[key] <= 0:
            raise ConfigError(f"config.{key} must be positive, got {config[key]}.")
    if config.num_train_steps is None and config.num_epochs <= 0:
        raise ConfigError(f"config.num_epochs must be positive, got {config.num_epochs}.")
    validate_fine_tuning(config)


def validate_fine_tuning(config: ml_collections.ConfigDict) -> None:
    """The fine-tuning options act on weights from config.init_checkpoint: without one they would
    silently freeze or slow down a randomly initialised network."""
    if config.init_weights not in ("ema", "raw"):
        raise ConfigError(f"config.init_weights must be 'ema' or 'raw', got {config.init_weights!r}.")
    if config.backbone_learning_rate_multiplier < 0:
        raise ConfigError(
            f"config.backbone_learning_rate_multiplier must be >= 0, got "
            f"{config.backbone_learning_rate_multiplier}."
        )
    if not config.init_checkpoint:  # None, or '' (how a command line unsets it)
        options = {
            "freeze_backbone": config.freeze_backbone,
            "freeze_batch_norm": config.freeze_batch_norm,
            "keep_classifier": config.keep_classifier,
            "backbone_learning_rate_multiplier": config.backbone_learning_rate_multiplier != 1.0,
        }
        for key, is_set in options.items():
            if is_set:
                raise ConfigError(
                    f"config.{key} fine-tunes pretrained weights, but config.init_checkpoint is not set. Set "
                    f"--config.init_checkpoint to a workdir or a checkpoint (e.g. converted with `python -m "
                    f"efficientnet_jax.pretrained`), or reset config.{key} to train from scratch."
                )
