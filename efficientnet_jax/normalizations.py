"""Input normalisations: `(pixels - mean) / std` per RGB channel, and the names configs
(`config.input_normalization`), the converter (`--normalization`), checkpoint records and logs use for
them. Which weights expect which is `provenance.py`'s table; this module only names the values."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class InputNormalization:
    """`(pixels - mean) / std` per RGB channel, pixels in [0, 255]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# ImageNet's per-channel statistics of [0, 1] RGB pixels, as published (and as Keras's EfficientNet
# front-end stores them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_NORMALIZATION = InputNormalization(
    mean=tuple(channel * 255 for channel in IMAGENET_MEAN),
    std=tuple(channel * 255 for channel in IMAGENET_STD),
)
# The Lite and EdgeTPU builders' MEAN_RGB and STDDEV_RGB: inputs in about [-1, 1] suit
# post-training quantisation.
EDGE_NORMALIZATION = InputNormalization(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
# Pixels to [-1, 1]: `(pixels / 255 - 0.5) / 0.5`.
SIGNED_UNIT_NORMALIZATION = InputNormalization(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))
# google/automl efficientnetv2/preprocessing.py's `(image - 128) / 128`, and Keras's
# `Rescaling(1 / 128, offset=-1)`: [-1, 1) with 128 as zero.
EFFICIENTNETV2_NORMALIZATION = InputNormalization(mean=(128.0, 128.0, 128.0), std=(128.0, 128.0, 128.0))
NAMED_NORMALIZATIONS = {
    "imagenet": IMAGENET_NORMALIZATION,
    "edge": EDGE_NORMALIZATION,
    "signed_unit": SIGNED_UNIT_NORMALIZATION,
    "efficientnetv2": EFFICIENTNETV2_NORMALIZATION,
}


def describe_normalization(normalization: InputNormalization) -> str:
    """Its name in `NAMED_NORMALIZATIONS`, or its values as `mean=R,G,B std=R,G,B`, the spelling
    `configuration.parse_input_normalization` reads, so a logged normalisation can be pasted back
    into a config."""
    for name, known in NAMED_NORMALIZATIONS.items():
        if normalization == known:
            return name
    mean, std = (",".join(map(repr, values)) for values in (normalization.mean, normalization.std))
    return f"mean={mean} std={std}"
