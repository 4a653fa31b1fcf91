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


def compound_coefficients(
    phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15, base_resolution: int = 224
) -> tuple[float, float, int]:
    """The paper's compound scaling (Section 3.3): depth alpha^phi, width beta^phi, resolution
    gamma^phi, under alpha * beta^2 * gamma^2 ~ 2 so FLOPs grow by about 2^phi.

    Returns (width, depth, resolution); the resolution is rounded to a multiple of 8 pixels.
    """
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}.")
    width = beta**phi
    depth = alpha**phi
    resolution = int(round(base_resolution * gamma**phi / 8) * 8)
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


def variant_spec(name: str, **overrides) -> ModelSpec:
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
