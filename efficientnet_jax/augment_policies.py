"""The data of AutoAugment (policy v0) and RandAugment, shared by both implementations.

`augment.py` (TensorFlow, on the host inside tf.data) and `device_augment.py` (JAX, on the devices inside
the train step) read the sub-policy table, the op list, the policy constants and the level -> argument
mapping (`op_argument`) from here, so the two cannot drift apart. Plain Python: importing it needs neither
TensorFlow nor JAX. The facts follow the official EfficientNet code, tensorflow/tpu
`models/official/efficientnet/autoaugment.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

# Levels are expressed out of this value; larger magnitudes (B5: 17, B7: 28) extrapolate linearly.
MAX_LEVEL = 10.0
# Grey fill for pixels uncovered by geometric ops and for the cutout square (reference: [128, 128, 128]),
# so that empty areas look like the dataset's average rather than black.
FILL_VALUE = 128

# Each op's argument at level MAX_LEVEL (the reference's `level_to_arg`); the argument is
# `level / MAX_LEVEL * range` (enhance ops: `ENHANCE_FACTOR_AT_LEVEL_0 + level / MAX_LEVEL * range`).
ROTATE_DEGREES_RANGE = 30.0
SHEAR_RANGE = 0.3
ENHANCE_FACTOR_AT_LEVEL_0 = 0.1
ENHANCE_FACTOR_RANGE = 1.8
POSTERIZE_BITS_RANGE = 4.0
SOLARIZE_THRESHOLD_RANGE = 256.0
SOLARIZE_ADD_RANGE = 110.0


@dataclasses.dataclass(frozen=True)
class PolicyConstants:
    """Per-policy pixel constants of the reference (`augmentation_hparams`)."""

    cutout_const: int  # cutout half-size in pixels at level MAX_LEVEL
    translate_const: int  # translation in pixels at level MAX_LEVEL


AUTOAUGMENT_CONSTANTS = PolicyConstants(cutout_const=100, translate_const=250)
RANDAUGMENT_CONSTANTS = PolicyConstants(cutout_const=40, translate_const=100)


def randaugment_constants(config) -> PolicyConstants:
    """RandAugment's constants from `config.randaugment_{cutout,translate}_const` (ml_collections or
    any mapping with those keys). They are pixels of the train image; the reference's 40/100 are
    ImageNet's, which blank a 32-pixel image, so a config at another scale sets its own."""
    return PolicyConstants(
        cutout_const=config["randaugment_cutout_const"], translate_const=config["randaugment_translate_const"]
    )


# The reference's RandAugment list, in its order (the op index drawn per layer indexes this tuple).
RANDAUGMENT_OPS: tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd",
)  # fmt: skip

# AutoAugment sub-policies: ((op, probability, level), (op, probability, level)), applied in order.
SubPolicy = tuple[tuple[str, float, int], ...]
POLICIES: Mapping[str, tuple[SubPolicy, ...]] = {
    # Policy v0 of the AutoAugment paper, as used for EfficientNet.
    "v0": (
        (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
        (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
        (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
        (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
        (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
        (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
        (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
        (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
        (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
        (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
        (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
        (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
        (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
        (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
        (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
        (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
        (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
        (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
        (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
        (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
        (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
        (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
        (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
        (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
        (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
    ),
    # The reference's debugging policy.
    "test": ((("TranslateX", 1.0, 4), ("Equalize", 1.0, 10)),),
}


# Ops that take no argument (the argument `op_argument` gives them is 0.0, and ignored).
OPS_WITHOUT_ARGUMENT: tuple[str, ...] = ("AutoContrast", "Equalize", "Invert")
# Ops whose argument takes a random sign, +-1 with probability 1/2 each (the reference's
# `_randomly_negate_tensor`), so that they rotate, shear and translate both ways.
SIGNED_OPS: tuple[str, ...] = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def _posterize_bits(fraction: float, consts: PolicyConstants) -> float:
    """int(level / 10 * 4) bits, then the bits the reference *effectively* keeps: 1 unless 1 <= bits <= 8.

    The reference shifts a uint8 image right then left by the Python int `8 - bits`. TF converts that int
    to uint8 (wrapping: -3 -> 253) and its CPU shift kernels clamp the amount to [0, 7], so bits = 0
    (shift 8, policy v0's ('Posterize', 0.8, 2)) and bits >= 9 (a negative shift, i.e. level >= 22.5,
    e.g. B7's M=28) both keep 1 bit. (Checked on TF 2.21's CPU kernels; the reference ran the same ops
    inside tf.data on CPU.)
    """
    del consts
    bits = int(fraction * POSTERIZE_BITS_RANGE)
    return float(bits if 1 <= bits <= 8 else 1)


def _solarize_threshold(fraction: float, consts: PolicyConstants) -> float:
    """int(level / 10 * 256) mod 256.

    The reference compares the uint8 image with the Python int threshold, which TF converts to uint8 with
    wrap-around: level 10 gives 256 -> 0, i.e. every pixel inverted (not the no-op the formula suggests);
    M=17 gives 435 -> 179, M=28 gives 716 -> 204 (see google-research/big_vision#110). Reproduced here.
    """
    del consts
    return float(int(fraction * SOLARIZE_THRESHOLD_RANGE) % 256)


def _solarize_addition(fraction: float, consts: PolicyConstants) -> float:
    """int(level / 10 * 110), added to pixels below 128 (computed in int64 by the reference: no wrap)."""
    del consts
    return float(int(fraction * SOLARIZE_ADD_RANGE))


def _enhance_factor(fraction: float, consts: PolicyConstants) -> float:
    """Blend factor: 0.1 at level 0, 1.9 at MAX_LEVEL, 5.14 at M=28 (Color/Contrast/Brightness/Sharpness)."""
    del consts
    return fraction * ENHANCE_FACTOR_RANGE + ENHANCE_FACTOR_AT_LEVEL_0


def _rotate_degrees(fraction: float, consts: PolicyConstants) -> float:
    """30 degrees at MAX_LEVEL."""
    del consts
    return fraction * ROTATE_DEGREES_RANGE


def _shear_coefficient(fraction: float, consts: PolicyConstants) -> float:
    """Shear coefficient 0.3 at MAX_LEVEL."""
    del consts
    return fraction * SHEAR_RANGE


def _translate_pixels(fraction: float, consts: PolicyConstants) -> float:
    """translate_const pixels at MAX_LEVEL (250 for AutoAugment, 100 for RandAugment); not rounded."""
    return fraction * float(consts.translate_const)


def _cutout_half_size(fraction: float, consts: PolicyConstants) -> float:
    """Half-size int(level / 10 * cutout_const) pixels (100 for AutoAugment, 40 for RandAugment)."""
    return float(int(fraction * float(consts.cutout_const)))


def _no_argument(fraction: float, consts: PolicyConstants) -> float:
    del fraction, consts
    return 0.0


_ARGUMENT_OF_FRACTION: Mapping[str, Callable[[float, PolicyConstants], float]] = {
    "AutoContrast": _no_argument,
    "Equalize": _no_argument,
    "Invert": _no_argument,
    "Rotate": _rotate_degrees,
    "Posterize": _posterize_bits,
    "Solarize": _solarize_threshold,
    "SolarizeAdd": _solarize_addition,
    "Color": _enhance_factor,
    "Contrast": _enhance_factor,
    "Brightness": _enhance_factor,
    "Sharpness": _enhance_factor,
    "ShearX": _shear_coefficient,
    "ShearY": _shear_coefficient,
    "TranslateX": _translate_pixels,
    "TranslateY": _translate_pixels,
    "Cutout": _cutout_half_size,
}


def op_argument(name: str, level: float, consts: PolicyConstants) -> float:
    """Op `name`'s argument at `level` (the reference's `level_to_arg`), before a signed op's random sign.

    The argument is what the op takes: degrees, shear coefficient, pixels, bits, threshold, addition,
    enhance factor or cutout half-size (0.0 for `OPS_WITHOUT_ARGUMENT`). Computed in Python floats
    (float64) as `level / MAX_LEVEL * range`, exactly the reference's arithmetic on its Python-float
    levels; integer arguments are truncated as the reference's `int(...)` does, and returned as floats.
    Levels are constants of a policy or of the config, so both implementations call this when they
    build their graphs, never on a traced value.
    """
    return _ARGUMENT_OF_FRACTION[name](level / MAX_LEVEL, consts)
