"""What a training config means, checked before anything runs: the model it describes, the input
normalisation it asks for, and the rules its values must follow. Pure Python and Flax: no
TensorFlow, no input pipeline."""

from __future__ import annotations

import dataclasses

import ml_collections
from absl import logging

from efficientnet_jax import errors
from efficientnet_jax.model import create_model
from efficientnet_jax.normalizations import NAMED_NORMALIZATIONS, InputNormalization, describe_normalization
from efficientnet_jax.scaling import (
    Baseline,
    ModelSpec,
    baseline_fields,
    get_baseline,
    stages_from_block_strings,
    variant_coefficients,
)


class ConfigError(errors.UserError, ValueError):
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
        resolution=resolve_image_size(config),
        drop_connect_rate=config.model.drop_connect_rate,
        batch_norm_momentum=config.model.batch_norm_momentum,
        dtype="bfloat16" if config.half_precision else "float32",
        depthwise_implementation=config.model.depthwise_implementation,
        remat=config.model.remat,
        **fields,
    )
    return model.spec


def reference_batch_norm_group_size(num_replicas: int, efficientnetv2: bool) -> int:
    """How many replicas pool their batch-norm statistics in the official TPU training of a family.

    EfficientNet (B0-B7, Lite, EdgeTPU; tensorflow/tpu models/official/efficientnet/utils.py,
    `TpuBatchNormalization._moments` and `_cross_replica_average`): each core alone up to 8 cores
    ("Skip cross_replica for 2x2 or smaller slices"), above that consecutive groups of
    max(8, num_shards // 8) cores. EfficientNetV2 (google/automl efficientnetv2/utils.py,
    `TpuBatchNormalization._moments` with `cross_replica_mean`): consecutive groups of
    min(8, num_shards) cores (its comment says "aggregate up to 32 cores", its code takes 8). Both
    average the shards' mean and mean of squares and take the variance as E[x^2] - mean^2.

    The TPU rule on every platform: the published models were trained on TPUs, and EfficientNetV2's
    GPU path (main_tf2.py, MirroredStrategy) uses Keras' unsynchronised BatchNormalization, i.e. one
    group per replica, which `--config.batch_norm_group_size=1` gives."""
    if efficientnetv2:
        return min(8, num_replicas)
    return 1 if num_replicas <= 8 else max(8, num_replicas // 8)


def batch_norm_group_size(config: ml_collections.ConfigDict, num_replicas: int) -> int:
    """The replicas per batch-norm group that config.batch_norm_group_size asks for on `num_replicas`
    replicas: 'reference' (the official rule of the config's family, `reference_batch_norm_group_size`),
    'all', or a number of replicas that divides `num_replicas`."""
    value = config.batch_norm_group_size
    if value == "reference":
        baseline = config.model.baseline or variant_coefficients(config.model.variant).baseline
        return reference_batch_norm_group_size(num_replicas, baseline.startswith("efficientnetv2"))
    if value == "all":
        return num_replicas
    size = int(value) if str(value).isdigit() else 0
    if size <= 0 or num_replicas % size:
        raise ConfigError(
            f"config.batch_norm_group_size={value!r} is not 'reference', 'all' or a number of replicas that "
            f"divides the {num_replicas} replicas of this job; set one of those (e.g. '1' or "
            f"'{num_replicas}')."
        )
    return size


def resolve_image_size(
    config: ml_collections.ConfigDict, weights_resolution: int | None = None, weights_source: str = ""
) -> int:
    """The size a job evaluates at (and trains at, unless config.train_image_size says otherwise):
    config.image_size when set, else the size the evaluated weights were evaluated at
    (`weights_resolution`, the resolution of the spec saved with the checkpoint at `weights_source`),
    else the variant's own (`scaling.VARIANTS`: 224 for B0, 384 for V2-S). A training job, resumed or
    not, passes no weights: its size is its config's. A set size that differs from the weights' is used
    as asked, with a warning, as for the input normalisation (`resolve_input_normalization`): weights
    evaluated at another size than they were made for lose accuracy without failing."""
    configured = config.image_size
    if configured is None:
        if weights_resolution is not None:
            return weights_resolution
        try:
            return variant_coefficients(config.model.variant).resolution
        except ValueError as error:
            raise ConfigError(f"config.model.variant: {error}") from error
    if weights_resolution is not None and configured != weights_resolution:
        logging.warning(
            "config.image_size=%d differs from %d, the size the weights of %s were evaluated at; using %d as "
            "set. Unset config.image_size to follow the weights.",
            configured, weights_resolution, weights_source, configured,
        )
    return configured


def train_image_size(config: ml_collections.ConfigDict) -> int:
    """The size the input pipeline trains at: config.train_image_size, else the eval size
    (`resolve_image_size`), at which B0-B7 also train. EfficientNetV2 trains smaller than it evaluates
    (`scaling.VARIANTS`' train_resolution); with progressive learning this is the last stage's size."""
    return config.train_image_size or resolve_image_size(config)


def parse_input_normalization(value: str) -> InputNormalization:
    """A name of `normalizations.NAMED_NORMALIZATIONS`, or explicit values `mean=R,G,B std=R,G,B` (one
    value each stands for all three channels) of pixels in [0, 255]: the spelling
    `normalizations.describe_normalization` writes, so a normalisation printed by a job can be pasted back
    into a config."""
    if value in NAMED_NORMALIZATIONS:
        return NAMED_NORMALIZATIONS[value]
    try:
        fields = dict(part.split("=", 1) for part in value.split())
        mean, std = (tuple(float(number) for number in fields.pop(key).split(",")) for key in ("mean", "std"))
        if fields or {len(mean), len(std)} - {1, 3} or min(std) <= 0:
            raise ValueError(value)
    except (KeyError, ValueError) as error:
        names = ", ".join(repr(name) for name in NAMED_NORMALIZATIONS)
        raise ConfigError(
            f"config.input_normalization={value!r} is neither one of {names} nor explicit values such as "
            f"'mean=127.5 std=127.5' or 'mean=123.7,116.3,103.5 std=58.4,57.1,57.4' (pixels in [0, 255], "
            f"std > 0); set one of those, or leave it unset to follow the weights."
        ) from error
    return InputNormalization(mean=mean * (3 // len(mean)), std=std * (3 // len(std)))


def configured_input_normalization(config: ml_collections.ConfigDict) -> InputNormalization | None:
    """`config.input_normalization` parsed; None when unset (None, or '' from a command line)."""
    value = config.input_normalization
    return parse_input_normalization(value) if value else None


def config_baseline(config: ml_collections.ConfigDict) -> Baseline:
    """The config's baseline network (`config.model.baseline`, else the variant's own), whose record
    of its released weights (`scaling.Baseline`: normalisation, eval preprocessing) a network trained
    from scratch follows where the config sets none."""
    try:
        own_baseline = variant_coefficients(config.model.variant).baseline
        return get_baseline(config.model.baseline or own_baseline)
    except ValueError as error:
        raise ConfigError(f"config.model: {error}") from error


def baseline_input_normalization(config: ml_collections.ConfigDict) -> InputNormalization:
    """What the released weights of the config's baseline network expect: the normalisation of a
    network trained from scratch, when the config names none."""
    return config_baseline(config).normalization


def resolve_input_normalization(
    config: ml_collections.ConfigDict,
    weights_normalization: InputNormalization | None = None,
    weights_source: str = "",
) -> InputNormalization:
    """The normalisation a job feeds its network: `config.input_normalization` when set, else the one
    the job's starting or evaluated weights were trained with (`weights_normalization`, saved with
    the checkpoint at `weights_source`), else the baseline's. A set value that differs from the
    weights' is used as asked, with a warning: evaluating or fine-tuning weights on inputs they were
    not trained on costs accuracy without failing."""
    configured = configured_input_normalization(config)
    if configured is None:
        return weights_normalization or baseline_input_normalization(config)
    if weights_normalization is not None and configured != weights_normalization:
        logging.warning(
            "config.input_normalization=%s differs from %s, the normalisation the weights of %s were trained "
            "with; using %s as set. Unset config.input_normalization to follow the weights.",
            describe_normalization(configured), describe_normalization(weights_normalization),
            weights_source, describe_normalization(configured),
        )
    return configured


# How evaluation crops (`config.eval_preprocessing`, input_pipeline.eval_crop_box): each released family of
# weights was evaluated one way.
EVAL_PREPROCESSINGS = ("efficientnet", "efficientnetv2", "efficientnetv2_finetune")
# How images are resized to the network's size, in training and evaluation (`config.resize_method`,
# input_pipeline.resize): 'tf1_bicubic' is TF1's `tf.compat.v1.image.resize_bicubic` (no half-pixel
# centres), 'bicubic' and 'bilinear' TF2's `tf.image.resize` (half-pixel centres).
RESIZE_METHODS = ("tf1_bicubic", "bicubic", "bilinear")
# The official code's resize for each eval preprocessing, in training and evaluation alike.
# tensorflow/tpu models/official/efficientnet/preprocessing.py `_resize_image`: without a
# `resize_method` (imagenet_input.py passes none) `tf.image.resize_bicubic` of tf.compat.v1, in
# `_decode_and_random_crop` and `_decode_and_center_crop`; google/automl efficientnetv2/preprocess_legacy.py
# (V2-B0..B3's 'effnetv1_autoaug') the same. efficientnetv2/preprocessing.py `preprocess_for_train`,
# `preprocess_for_eval` and `preprocess_for_finetune`: `tf.image.resize` at its default, bilinear.
OFFICIAL_RESIZE_METHODS = {
    "efficientnet": "tf1_bicubic",
    "efficientnetv2": "bilinear",
    "efficientnetv2_finetune": "bilinear",
}
# What the eval crop padding is when neither the config nor the weights say (the released
# checkpoints' 32 at every resolution).
REFERENCE_EVAL_CROP_PADDING = 32


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a job crops and resizes its images: its fields are the config keys of the same names, and
    a checkpoint's model record keeps them (checkpointing.ModelRecord)."""

    eval_preprocessing: str
    eval_crop_padding: int
    resize_method: str

    def describe(self) -> str:
        crop = f"{self.eval_preprocessing} crop (padding {self.eval_crop_padding})"
        return f"{crop}, {self.resize_method} resize"


def _configured_preprocessing(config: ml_collections.ConfigDict) -> dict[str, str | int]:
    """The preprocessing keys the config sets (None, or '' from a command line, leaves one unset),
    checked."""
    configured = {
        field.name: config[field.name]
        for field in dataclasses.fields(Preprocessing)
        if config[field.name] is not None and config[field.name] != ""
    }
    for key, known in (("eval_preprocessing", EVAL_PREPROCESSINGS), ("resize_method", RESIZE_METHODS)):
        if key in configured and configured[key] not in known:
            raise ConfigError(
                f"config.{key}={configured[key]!r} is not one of {', '.join(known)}; set one of them, or "
                f"leave it unset to follow the weights."
            )
    if configured.get("eval_crop_padding", 0) < 0:
        padding = configured["eval_crop_padding"]
        raise ConfigError(f"config.eval_crop_padding must be 0 or positive, got {padding}.")
    return configured


def resolve_preprocessing(
    config: ml_collections.ConfigDict,
    weights_preprocessing: Preprocessing | None = None,
    weights_source: str = "",
) -> Preprocessing:
    """How a job crops and resizes: each key the config sets (config.eval_preprocessing,
    config.eval_crop_padding, config.resize_method), else what the evaluated or resumed weights were
    evaluated with (`weights_preprocessing`, saved with the checkpoint at `weights_source`), else the
    official code's for the config's baseline network (`scaling.Baseline.eval_preprocessing`, padding
    32, `OFFICIAL_RESIZE_METHODS`). The resize follows the weights only with their crop: a config that
    sets another crop and no resize gets that crop's official resize. A set value that differs from
    the weights' is used as asked, with a warning, as for the input normalisation
    (`resolve_input_normalization`): weights evaluated on other pixels than they were made for lose
    accuracy without failing."""
    configured = _configured_preprocessing(config)
    if weights_preprocessing is None:
        followed = {
            "eval_preprocessing": config_baseline(config).eval_preprocessing,
            "eval_crop_padding": REFERENCE_EVAL_CROP_PADDING,
        }
    else:
        followed = dataclasses.asdict(weights_preprocessing)
    resolved = {**followed, **configured}
    if "resize_method" not in configured and (
        weights_preprocessing is None or resolved["eval_preprocessing"] != followed["eval_preprocessing"]
    ):
        resolved["resize_method"] = OFFICIAL_RESIZE_METHODS[resolved["eval_preprocessing"]]
    preprocessing = Preprocessing(**resolved)
    if weights_preprocessing is not None and preprocessing != weights_preprocessing:
        differing = [key for key in configured if configured[key] != followed[key]]
        logging.warning(
            "%s differs from %s, the preprocessing the weights of %s were evaluated with; using %s as set. "
            "Unset %s to follow the weights.",
            ", ".join(f"config.{key}={configured[key]}" for key in differing),
            weights_preprocessing.describe(),
            weights_source,
            preprocessing.describe(),
            ", ".join(f"config.{key}" for key in differing),
        )
    return preprocessing


def with_preprocessing(
    config: ml_collections.ConfigDict, preprocessing: Preprocessing, image_size: int
) -> ml_collections.ConfigDict:
    """A copy of `config` whose preprocessing keys hold `preprocessing` and whose image_size is
    `image_size`: what the input pipeline of a job that resolved them (from its weights) is built from.
    The size is not a field of Preprocessing: the model record already holds it (its spec's resolution),
    and a resumed job keeps its config's size where it keeps its checkpoint's crop and resize."""
    copy = config.copy_and_resolve_references()
    for key, value in dataclasses.asdict(preprocessing).items():
        copy[key] = value
    copy.image_size = image_size
    return copy


def validate(config: ml_collections.ConfigDict) -> None:
    positive = ("batch_size", "eval_batch_size", "log_every_steps", "eval_every_steps",
                "checkpoint_every_steps", "keep_checkpoints")
    for key in positive:
        if config[key] <= 0:
            raise ConfigError(f"config.{key} must be positive, got {config[key]}.")
    if config.image_size is not None and config.image_size <= 0:
        raise ConfigError(
            f"config.image_size must be positive, got {config.image_size}; or leave it unset to follow the "
            f"weights (or the variant's own size)."
        )
    if config.num_train_steps is None and config.num_epochs <= 0:
        raise ConfigError(f"config.num_epochs must be positive, got {config.num_epochs}.")
    for key in ("mixup_alpha", "cutmix_alpha"):  # Beta(alpha, alpha) needs alpha > 0; 0 is off
        if config[key] < 0:
            raise ConfigError(f"config.{key} must be 0 (off) or positive, got {config[key]}.")
    for key in ("randaugment_num_layers", "randaugment_magnitude", "randaugment_translate_const",
                "randaugment_cutout_const"):
        if config[key] < 0:
            raise ConfigError(f"config.{key} must be 0 or positive, got {config[key]}.")
    if config.augment_on_device and (config.mixup_alpha > 0 or config.cutmix_alpha > 0):
        # The official order augments each image and then mixes the batch; mixing is the host's.
        raise ConfigError(
            "config.augment_on_device=True cannot follow Mixup/CutMix (config.mixup_alpha, "
            "config.cutmix_alpha > 0): images are augmented before the host mixes them; set "
            "config.augment_on_device=False."
        )
    configured_input_normalization(config)
    _configured_preprocessing(config)
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
