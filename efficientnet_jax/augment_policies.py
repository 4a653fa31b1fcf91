"""The data of AutoAugment (policy v0) and RandAugment, shared by both implementations.

`augment.py` (TensorFlow, on the host inside tf.data) and `device_augment.py` (JAX, on the devices inside
the train step) read the sub-policy table, the op list, the policy constants and the magnitude ranges from
here, so the two cannot drift apart. Plain Python: importing it needs neither TensorFlow nor JAX. The
facts follow the official EfficientNet code, tensorflow/tpu `models/official/efficientnet/autoaugment.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

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
