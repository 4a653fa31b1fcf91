"""What an EfficientNet *is*: the stage tables of the family (B0, Lite, EdgeTPU, EfficientNetV2),
the compound-scaling rules and the variant table.

Everything here is plain data and arithmetic; the Flax modules in `layers.py` and `model.py` know
nothing of scaling. A network is fully described by a `ModelSpec` (serialisable, hashable), and
`ModelSpec.scaled_stages()` turns the baseline stage table into the concrete per-stage widths and
repeats with the rules of the official TensorFlow implementation (`efficientnet_builder.py`; for
EfficientNetV2, google/automl's `efficientnetv2/effnetv2_model.py`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

from efficientnet_jax.normalizations import (
    EDGE_NORMALIZATION,
    EFFICIENTNETV2_NORMALIZATION,
    IMAGENET_NORMALIZATION,
    InputNormalization,
)

# The official block strings of EfficientNet-B0 (efficientnet_builder.py). r: repeats, k: kernel,
# s: stride (both axes), e: expand ratio, i/o: input/output filters before width scaling, se: SE ratio;
# c1: a Fused-MBConv block (c0, the default: MBConv), noskip: no identity residual.
EFFICIENTNET_B0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)

STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEPTH_DIVISOR = 8
MIN_FILTERS_FRACTION = 0.9  # round_filters never rounds more than 10% below the scaled width


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage of blocks; the first block takes the stride and the new width.

    `fused` picks Fused-MBConv (one kxk convolution in place of the 1x1 expansion and the depthwise
    convolution: faster on accelerators in early, wide-resolution stages; EdgeTPU, EfficientNetV2)
    over MBConv. `identity_skip=False` drops the residual even where the shapes would allow it.
    """

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: float | None  # None or 0: no squeeze-and-excitation
    fused: bool = False
    identity_skip: bool = True


@dataclasses.dataclass(frozen=True)
class VariantCoefficients:
    """A released variant: how much it scales which baseline network (a key of `BASELINES`).

    `resolution` is the image size the variant is evaluated at (and, for EfficientNet, trained at).
    EfficientNetV2 trains on smaller images than it evaluates on (`train_resolution`): its
    progressive learning grows the training size up to that value, while evaluation uses
    `resolution`. None: the variant trains at `resolution`.
    """

    width: float
    depth: float
    resolution: int
    dropout_rate: float
    baseline: str = "efficientnet-b0"
    train_resolution: int | None = None


# The released coefficients (efficientnet_builder.efficientnet_params, and the Lite and EdgeTPU
# builders). B1-B7 are hand-rounded values, not the output of `compound_coefficients`.
VARIANTS = {
    "efficientnet-b0": VariantCoefficients(1.0, 1.0, 224, 0.2),
    "efficientnet-b1": VariantCoefficients(1.0, 1.1, 240, 0.2),
    "efficientnet-b2": VariantCoefficients(1.1, 1.2, 260, 0.3),
    "efficientnet-b3": VariantCoefficients(1.2, 1.4, 300, 0.3),
    "efficientnet-b4": VariantCoefficients(1.4, 1.8, 380, 0.4),
    "efficientnet-b5": VariantCoefficients(1.6, 2.2, 456, 0.4),
    "efficientnet-b6": VariantCoefficients(1.8, 2.6, 528, 0.5),
    "efficientnet-b7": VariantCoefficients(2.0, 3.1, 600, 0.5),
    "efficientnet-b8": VariantCoefficients(2.2, 3.6, 672, 0.5),
    "efficientnet-l2": VariantCoefficients(4.3, 5.3, 800, 0.5),
    # lite/efficientnet_lite_builder.efficientnet_lite_params
    "efficientnet-lite0": VariantCoefficients(1.0, 1.0, 224, 0.2, "efficientnet-lite0"),
    "efficientnet-lite1": VariantCoefficients(1.0, 1.1, 240, 0.2, "efficientnet-lite0"),
    "efficientnet-lite2": VariantCoefficients(1.1, 1.2, 260, 0.3, "efficientnet-lite0"),
    "efficientnet-lite3": VariantCoefficients(1.2, 1.4, 280, 0.3, "efficientnet-lite0"),
    "efficientnet-lite4": VariantCoefficients(1.4, 1.8, 300, 0.3, "efficientnet-lite0"),
    # edgetpu/efficientnet_edgetpu_builder.efficientnet_edgetpu_params
    "efficientnet-edgetpu-s": VariantCoefficients(1.0, 1.0, 224, 0.2, "efficientnet-edgetpu-s"),
    "efficientnet-edgetpu-m": VariantCoefficients(1.0, 1.1, 240, 0.2, "efficientnet-edgetpu-s"),
    "efficientnet-edgetpu-l": VariantCoefficients(1.2, 1.4, 300, 0.3, "efficientnet-edgetpu-s"),
    # efficientnetv2/effnetv2_configs.efficientnetv2_params (google/automl): (width, depth, eval size,
    # dropout) and the train size. B0-B3 scale the V2 base table as B0-B3 scale B0 (same
    # coefficients and eval sizes); S, M, L and XL each have their own table and are not scaled.
    "efficientnetv2-b0": VariantCoefficients(1.0, 1.0, 224, 0.2, "efficientnetv2-base", train_resolution=192),
    "efficientnetv2-b1": VariantCoefficients(1.0, 1.1, 240, 0.2, "efficientnetv2-base", train_resolution=192),
    "efficientnetv2-b2": VariantCoefficients(1.1, 1.2, 260, 0.3, "efficientnetv2-base", train_resolution=208),
    "efficientnetv2-b3": VariantCoefficients(1.2, 1.4, 300, 0.3, "efficientnetv2-base", train_resolution=240),
    "efficientnetv2-s": VariantCoefficients(1.0, 1.0, 384, 0.2, "efficientnetv2-s", train_resolution=300),
    "efficientnetv2-m": VariantCoefficients(1.0, 1.0, 480, 0.3, "efficientnetv2-m", train_resolution=384),
    "efficientnetv2-l": VariantCoefficients(1.0, 1.0, 480, 0.4, "efficientnetv2-l", train_resolution=384),
    "efficientnetv2-xl": VariantCoefficients(1.0, 1.0, 512, 0.4, "efficientnetv2-xl", train_resolution=384),
}

_BLOCK_FIELD = re.compile(r"^([a-z]+)([\d.]+)$")


def decode_block_string(block_string: str) -> StageSpec:
    """Parses the official block-string form, e.g. 'r2_k3_s22_e6_i16_o24_se0.25' or, for a
    Fused-MBConv stage without residual, 'r1_k3_s11_e4_i24_o24_c1_noskip'."""
    fields = {}
    parts = block_string.split("_")
    for part in parts:
        if part == "noskip":
            continue
        match = _BLOCK_FIELD.match(part)
        if not match:
            raise ValueError(f"Cannot parse {part!r} in block string {block_string!r}.")
        fields[match.group(1)] = match.group(2)
    missing = {"r", "k", "s", "e", "i", "o"} - fields.keys()
    if missing:
        raise ValueError(f"Block string {block_string!r} lacks fields {sorted(missing)}.")
    stride = fields["s"]
    if len(stride) == 2 and stride[0] != stride[1]:
        raise ValueError(f"Only equal strides on both axes are supported: {block_string!r}.")
    if fields.get("c", "0") not in ("0", "1"):
        raise ValueError(
            f"Block type c{fields['c']} is neither c0 (MBConv) nor c1 (Fused-MBConv): {block_string!r}."
        )
    return StageSpec(
        repeats=int(fields["r"]),
        kernel_size=int(fields["k"]),
        stride=int(stride[0]),
        expand_ratio=int(fields["e"]),
        input_filters=int(fields["i"]),
        output_filters=int(fields["o"]),
        se_ratio=float(fields["se"]) if "se" in fields else None,
        fused=fields.get("c") == "1",
        identity_skip="noskip" not in parts,
    )


EFFICIENTNET_B0_STAGES = tuple(decode_block_string(s) for s in EFFICIENTNET_B0_BLOCKS)

# EfficientNet-Lite (lite/efficientnet_lite_builder.py) decodes B0's block strings and builds them
# with `use_se=False`: squeeze-and-excitation is poorly supported by mobile accelerators.
EFFICIENTNET_LITE_STAGES = tuple(
    dataclasses.replace(stage, se_ratio=None) for stage in EFFICIENTNET_B0_STAGES
)

# EfficientNet-EdgeTPU-S (edgetpu/efficientnet_edgetpu_builder.py), found by architecture search
# for the Edge TPU: Fused-MBConv in the three early stages, no SE. The first block takes the stem's
# 32 channels, while its `i24` sets its expansion to 24 * 4 = 96 filters, as the official code does.
EFFICIENTNET_EDGETPU_BLOCKS = (
    "r1_k3_s11_e4_i24_o24_c1_noskip",
    "r2_k3_s22_e8_i24_o32_c1",
    "r4_k3_s22_e8_i32_o48_c1",
    "r5_k5_s22_e8_i48_o96",
    "r4_k5_s11_e8_i96_o144",
    "r2_k5_s22_e8_i144_o192",
)


# EfficientNetV2 (Tan & Le, ICML 2021; google/automl efficientnetv2/effnetv2_configs.py), in the
# official strings (strides written once: s1, s2). Fused-MBConv (`c1`) in the early stages, where
# depthwise convolutions use accelerators poorly, without SE; MBConv with SE after. The first
# Fused-MBConv stage has expand ratio 1: a single kxk convolution (see `layers.FusedMBConv`).
EFFICIENTNETV2_BASE_BLOCKS = (  # the baseline of V2-B0..B3
    "r1_k3_s1_e1_i32_o16_c1",
    "r2_k3_s2_e4_i16_o32_c1",
    "r2_k3_s2_e4_i32_o48_c1",
    "r3_k3_s2_e4_i48_o96_se0.25",
    "r5_k3_s1_e6_i96_o112_se0.25",
    "r8_k3_s2_e6_i112_o192_se0.25",
)
EFFICIENTNETV2_S_BLOCKS = (
    "r2_k3_s1_e1_i24_o24_c1",
    "r4_k3_s2_e4_i24_o48_c1",
    "r4_k3_s2_e4_i48_o64_c1",
    "r6_k3_s2_e4_i64_o128_se0.25",
    "r9_k3_s1_e6_i128_o160_se0.25",
    "r15_k3_s2_e6_i160_o256_se0.25",
)
EFFICIENTNETV2_M_BLOCKS = (
    "r3_k3_s1_e1_i24_o24_c1",
    "r5_k3_s2_e4_i24_o48_c1",
    "r5_k3_s2_e4_i48_o80_c1",
    "r7_k3_s2_e4_i80_o160_se0.25",
    "r14_k3_s1_e6_i160_o176_se0.25",
    "r18_k3_s2_e6_i176_o304_se0.25",
    "r5_k3_s1_e6_i304_o512_se0.25",
)
EFFICIENTNETV2_L_BLOCKS = (
    "r4_k3_s1_e1_i32_o32_c1",
    "r7_k3_s2_e4_i32_o64_c1",
    "r7_k3_s2_e4_i64_o96_c1",
    "r10_k3_s2_e4_i96_o192_se0.25",
    "r19_k3_s1_e6_i192_o224_se0.25",
    "r25_k3_s2_e6_i224_o384_se0.25",
    "r7_k3_s1_e6_i384_o640_se0.25",
)
EFFICIENTNETV2_XL_BLOCKS = (
    "r4_k3_s1_e1_i32_o32_c1",
    "r8_k3_s2_e4_i32_o64_c1",
    "r8_k3_s2_e4_i64_o96_c1",
    "r16_k3_s2_e4_i96_o192_se0.25",
    "r24_k3_s1_e6_i192_o256_se0.25",
    "r32_k3_s2_e6_i256_o512_se0.25",
    "r8_k3_s1_e6_i512_o640_se0.25",
)


def round_filters(
    filters: int, width: float, divisor: int = DEPTH_DIVISOR, min_fraction: float = MIN_FILTERS_FRACTION
) -> int:
    """Scales a width and rounds it to the nearest multiple of `divisor` (at least one), adding one
    more `divisor` where that falls below `min_fraction` of the scaled width: 0.9 in EfficientNet
    (efficientnet_model.round_filters); EfficientNetV2's round_filters has no such floor (0)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < min_fraction * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scales the number of blocks in a stage, rounding up (efficientnet_model.round_repeats)."""
    return int(math.ceil(depth * repeats))


def round_resolution(resolution: int, multiplier: float, divisor: int = 8) -> int:
    """Scales an input resolution and rounds it to the nearest multiple of `divisor` pixels (at
    least one multiple), as the released B1-B7 resolutions are multiples of 4 or 8."""
    if multiplier <= 0 or divisor <= 0:
        raise ValueError(f"Resolution multiplier and divisor must be positive: {multiplier}, {divisor}.")
    return int(max(1, round(resolution * multiplier / divisor)) * divisor)


def compound_coefficients(
    phi: float,
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    base_resolution: int = 224,
    resolution_divisor: int = 8,
) -> tuple[float, float, int]:
    """The paper's compound scaling (Section 3.3): depth alpha^phi, width beta^phi, resolution
    gamma^phi, under alpha * beta^2 * gamma^2 ~ 2 so FLOPs grow by about 2^phi.

    Returns (width, depth, resolution); the resolution is rounded to a multiple of
    `resolution_divisor` pixels (`round_resolution`).
    """
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}.")
    width = beta**phi
    depth = alpha**phi
    resolution = round_resolution(base_resolution, gamma**phi, resolution_divisor)
    return width, depth, resolution


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a network; `create_model` builds the Flax module from it.

    `depthwise_implementation` picks how depthwise convolutions are computed (see
    `layers.DepthwiseConv`); it changes speed, never the parameters or the function computed.
    `fix_head_stem` is the official Lite builder's flag: the stem and head widths and the repeats of
    the first and last stages stay unscaled, which keeps the scaled-up models small and fast.
    `min_filters_fraction` is `round_filters`' floor (0.9; EfficientNetV2: 0, see there).
    """

    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2  # stochastic depth: 1 - survival probability of the last block
    num_classes: int = 1000
    stages: tuple[StageSpec, ...] = EFFICIENTNET_B0_STAGES
    stem_filters: int = STEM_FILTERS
    head_filters: int = HEAD_FILTERS
    activation: str = "swish"
    batch_norm_momentum: float = 0.99
    batch_norm_epsilon: float = 1e-3
    dtype: str = "float32"  # compute dtype; parameters are always float32
    depthwise_implementation: str = "auto"
    remat: bool = False  # rematerialise each block in the backward pass (memory for compute)
    name: str = "custom"
    fix_head_stem: bool = False
    min_filters_fraction: float = MIN_FILTERS_FRACTION

    def __post_init__(self):
        for field in ("width", "depth", "resolution", "num_classes"):
            if getattr(self, field) <= 0:
                raise ValueError(f"Model {field} must be positive, got {getattr(self, field)}.")
        for field in ("dropout_rate", "drop_connect_rate"):
            if not 0 <= getattr(self, field) < 1:
                raise ValueError(f"Model {field} must be in [0, 1), got {getattr(self, field)}.")
        if not self.stages:
            raise ValueError("A model needs at least one stage.")
        object.__setattr__(self, "stages", tuple(self.stages))

    def scaled_stages(self) -> tuple[StageSpec, ...]:
        """The stage table with widths and repeats scaled by this spec's width and depth (with
        `fix_head_stem`, the first and last stages keep their repeats)."""
        last = len(self.stages) - 1
        return tuple(
            dataclasses.replace(
                stage,
                repeats=(
                    stage.repeats
                    if self.fix_head_stem and index in (0, last)
                    else round_repeats(stage.repeats, self.depth)
                ),
                input_filters=self.round_filters(stage.input_filters),
                output_filters=self.round_filters(stage.output_filters),
            )
            for index, stage in enumerate(self.stages)
        )

    def round_filters(self, filters: int) -> int:
        """A width of the baseline scaled by this spec's width, with its rounding rule."""
        return round_filters(filters, self.width, min_fraction=self.min_filters_fraction)

    @property
    def scaled_stem_filters(self) -> int:
        return self.stem_filters if self.fix_head_stem else self.round_filters(self.stem_filters)

    @property
    def scaled_head_filters(self) -> int:
        return self.head_filters if self.fix_head_stem else self.round_filters(self.head_filters)

    @property
    def num_blocks(self) -> int:
        return sum(stage.repeats for stage in self.scaled_stages())


def stages_from_block_strings(block_strings: Sequence[str]) -> tuple[StageSpec, ...]:
    return tuple(decode_block_string(s) for s in block_strings)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """An unscaled network: what compound scaling starts from. Its widths are scaled by
    `round_filters`, its repeats by `round_repeats`, like B0's, except what `fix_head_stem` keeps
    (see `ModelSpec`). `normalization` and `eval_preprocessing` are what its official training fed it
    and how the official code crops it for evaluation (one of configuration.EVAL_PREPROCESSINGS;
    provenance.py has what every published release of weights expects): the defaults of
    `config.input_normalization` and `config.eval_preprocessing` for a job that starts from no checkpoint.
    `batch_norm_momentum` is what its official training used; a variant takes it (`variant_spec`),
    a training config states its own (`config.model.batch_norm_momentum`, which
    `configs/imagenet.py` sets from the variant)."""

    stages: tuple[StageSpec, ...]
    stem_filters: int
    head_filters: int
    activation: str
    fix_head_stem: bool = False
    normalization: InputNormalization = IMAGENET_NORMALIZATION
    min_filters_fraction: float = MIN_FILTERS_FRACTION
    batch_norm_momentum: float = 0.99
    eval_preprocessing: str = "efficientnet"


def efficientnetv2_baseline(
    block_strings: Sequence[str],
    normalization: InputNormalization = EFFICIENTNETV2_NORMALIZATION,
    eval_preprocessing: str = "efficientnetv2",
) -> Baseline:
    """An EfficientNetV2 network as google/automl's effnetv2_model.py builds it: the stem takes the
    first stage's input width, the head 1280 filters, both scaled like every width (no
    `fix_head_stem`) by a `round_filters` without EfficientNet's 10% floor; SiLU (= swish); batch
    norm momentum 0.9 (hparams.py; epsilon 1e-3 as EfficientNet's). V2-S..XL's ImageNet training
    uses its own preprocessing (efficientnetv2/preprocessing.py); V2-B0..B3's uses EfficientNet's
    (effnetv2_configs.py 'effnetv1_autoaug': preprocess_legacy.py)."""
    stages = stages_from_block_strings(block_strings)
    return Baseline(
        stages,
        stem_filters=stages[0].input_filters,
        head_filters=HEAD_FILTERS,
        activation="swish",
        normalization=normalization,
        min_filters_fraction=0.0,
        batch_norm_momentum=0.9,
        eval_preprocessing=eval_preprocessing,
    )


# MobileNetV2 (Sandler et al. 2018, Table 2: stages t, c, n, s) in the same blocks: expand t, no SE,
# kernel 3 everywhere, ReLU6; the paper's Table 3 scales it. With width 1 at 224 pixels it has
# torchvision's 3,504,872 parameters and about 0.30 G multiply-adds.
MOBILENET_V2_BLOCKS = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r3_k3_s22_e6_i24_o32",
    "r4_k3_s22_e6_i32_o64",
    "r3_k3_s11_e6_i64_o96",
    "r3_k3_s22_e6_i96_o160",
    "r1_k3_s11_e6_i160_o320",
)

# The baselines a config can name (`config.model.baseline`) and a variant scales
# (`VariantCoefficients.baseline`); add a line here for a new one. Lite and EdgeTPU keep B0's
# batch-norm momentum and epsilon (0.99, 1e-3).
BASELINES = {
    "efficientnet-b0": Baseline(EFFICIENTNET_B0_STAGES, STEM_FILTERS, HEAD_FILTERS, "swish"),
    "efficientnet-lite0": Baseline(
        EFFICIENTNET_LITE_STAGES,
        STEM_FILTERS,
        HEAD_FILTERS,
        "relu6",
        fix_head_stem=True,
        normalization=EDGE_NORMALIZATION,
    ),
    "efficientnet-edgetpu-s": Baseline(
        stages_from_block_strings(EFFICIENTNET_EDGETPU_BLOCKS),
        STEM_FILTERS,
        HEAD_FILTERS,
        "relu",
        normalization=EDGE_NORMALIZATION,
    ),
    "mobilenetv2": Baseline(stages_from_block_strings(MOBILENET_V2_BLOCKS), 32, 1280, "relu6"),
    "efficientnetv2-base": efficientnetv2_baseline(
        EFFICIENTNETV2_BASE_BLOCKS, IMAGENET_NORMALIZATION, eval_preprocessing="efficientnet"
    ),
    "efficientnetv2-s": efficientnetv2_baseline(EFFICIENTNETV2_S_BLOCKS),
    "efficientnetv2-m": efficientnetv2_baseline(EFFICIENTNETV2_M_BLOCKS),
    "efficientnetv2-l": efficientnetv2_baseline(EFFICIENTNETV2_L_BLOCKS),
    "efficientnetv2-xl": efficientnetv2_baseline(EFFICIENTNETV2_XL_BLOCKS),
}


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        raise ValueError(f"Unknown baseline {name!r}. Valid baselines: {', '.join(sorted(BASELINES))}.")
    return BASELINES[name]


def baseline_fields(baseline: Baseline) -> dict:
    """The `ModelSpec` fields a baseline sets."""
    return dict(
        stages=baseline.stages,
        stem_filters=baseline.stem_filters,
        head_filters=baseline.head_filters,
        activation=baseline.activation,
        fix_head_stem=baseline.fix_head_stem,
        min_filters_fraction=baseline.min_filters_fraction,
    )


def _canonical_variant_name(name: str) -> str:
    """'b3' -> 'efficientnet-b3', 'v2-s' -> 'efficientnetv2-s'; long names stay."""
    name = name.lower()
    if name.startswith("v2-"):
        return "efficientnetv2-" + name.removeprefix("v2-")
    if not name.startswith(("efficientnet-", "efficientnetv2-")):
        name = "efficientnet-" + name
    return name


def variant_coefficients(name: str) -> VariantCoefficients:
    """The coefficients of a released variant ('efficientnet-b3' or 'b3', 'lite0', 'edgetpu-s',
    'efficientnetv2-s' or 'v2-s')."""
    canonical = _canonical_variant_name(name)
    if canonical not in VARIANTS:
        valid = ", ".join(sorted(VARIANTS))
        raise ValueError(
            f"Unknown EfficientNet variant {name!r}. Valid names: {valid} (or b0..b7, b8, l2, "
            f"lite0..lite4, edgetpu-s, edgetpu-m, edgetpu-l, v2-b0..v2-b3, v2-s, v2-m, v2-l, v2-xl)."
        )
    return VARIANTS[canonical]


def variant_spec(name: str, /, **overrides) -> ModelSpec:
    """The spec of a released variant (its baseline scaled by its coefficients), with optional field
    overrides."""
    coefficients = variant_coefficients(name)
    baseline = get_baseline(coefficients.baseline)
    fields = dict(
        baseline_fields(baseline),
        batch_norm_momentum=baseline.batch_norm_momentum,
        width=coefficients.width,
        depth=coefficients.depth,
        resolution=coefficients.resolution,
        dropout_rate=coefficients.dropout_rate,
        name=_canonical_variant_name(name),
    )
    fields.update(overrides)
    return ModelSpec(**fields)
