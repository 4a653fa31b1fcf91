"""What an EfficientNet *is*: the B0 stage table, the compound-scaling rules and the variant table.

Everything here is plain data and arithmetic; the Flax modules in `layers.py` and `model.py` know
nothing of scaling. A network is fully described by a `ModelSpec` (serialisable, hashable), and
`ModelSpec.scaled_stages()` turns the baseline stage table into the concrete per-stage widths and
repeats with the rules of the official TensorFlow implementation (`efficientnet_builder.py`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Optional, Sequence

# The official block strings of EfficientNet-B0 (efficientnet_builder.py). r: repeats, k: kernel,
# s: stride (both axes), e: expand ratio, i/o: input/output filters before width scaling, se: SE ratio.
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


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks; the first block takes the stride and the new width."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: Optional[float]  # None or 0: no squeeze-and-excitation


@dataclasses.dataclass(frozen=True)
class VariantCoefficients:
    width: float
    depth: float
    resolution: int
    dropout_rate: float


# The released coefficients (efficientnet_builder.efficientnet_params). B1-B7 are hand-rounded
# values, not the output of `compound_coefficients`.
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
}

_BLOCK_FIELD = re.compile(r"^([a-z]+)([\d.]+)$")


def decode_block_string(block_string: str) -> StageSpec:
    """Parses the official block-string form, e.g. 'r2_k3_s22_e6_i16_o24_se0.25'."""
    fields = {}
    for part in block_string.split("_"):
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
    return StageSpec(
        repeats=int(fields["r"]),
        kernel_size=int(fields["k"]),
        stride=int(stride[0]),
        expand_ratio=int(fields["e"]),
        input_filters=int(fields["i"]),
        output_filters=int(fields["o"]),
        se_ratio=float(fields["se"]) if "se" in fields else None,
    )


EFFICIENTNET_B0_STAGES = tuple(decode_block_string(s) for s in EFFICIENTNET_B0_BLOCKS)


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Scales a width and rounds it to a multiple of `divisor`, never more than 10% below the scaled
    width (efficientnet_model.round_filters)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
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
        """The stage table with widths and repeats scaled by this spec's width and depth."""
        return tuple(
            dataclasses.replace(
                stage,
                repeats=round_repeats(stage.repeats, self.depth),
                input_filters=round_filters(stage.input_filters, self.width),
                output_filters=round_filters(stage.output_filters, self.width),
            )
            for stage in self.stages
        )

    @property
    def num_blocks(self) -> int:
        return sum(stage.repeats for stage in self.scaled_stages())


def _canonical_variant_name(name: str) -> str:
    name = name.lower()
    if not name.startswith("efficientnet-"):
        name = "efficientnet-" + name
    return name


def variant_spec(name: str, /, **overrides) -> ModelSpec:
    """The spec of a released variant ('efficientnet-b3' or 'b3'), with optional field overrides."""
    canonical = _canonical_variant_name(name)
    if canonical not in VARIANTS:
        valid = ", ".join(sorted(VARIANTS))
        raise ValueError(f"Unknown EfficientNet variant {name!r}. Valid names: {valid} (or b0..b7, b8, l2).")
    coefficients = VARIANTS[canonical]
    fields = dict(
        width=coefficients.width,
        depth=coefficients.depth,
        resolution=coefficients.resolution,
        dropout_rate=coefficients.dropout_rate,
        name=canonical,
    )
    fields.update(overrides)
    return ModelSpec(**fields)


def stages_from_block_strings(block_strings: Sequence[str]) -> tuple[StageSpec, ...]:
    return tuple(decode_block_string(s) for s in block_strings)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """An unscaled network: what compound scaling starts from. Its widths are scaled by
    `round_filters`, its repeats by `round_repeats`, like B0's."""

    stages: tuple[StageSpec, ...]
    stem_filters: int
    head_filters: int
    activation: str


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

# The baselines a config can name (`config.model.baseline`); add a line here for a new one.
BASELINES = {
    "efficientnet-b0": Baseline(EFFICIENTNET_B0_STAGES, STEM_FILTERS, HEAD_FILTERS, "swish"),
    "mobilenetv2": Baseline(stages_from_block_strings(MOBILENET_V2_BLOCKS), 32, 1280, "relu6"),
}


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        raise ValueError(f"Unknown baseline {name!r}. Valid baselines: {', '.join(sorted(BASELINES))}.")
    return BASELINES[name]
