"""EfficientNet-B0..B7 on ImageNet: `--config=configs/imagenet.py:b3`.

Only what differs per variant is set here (model, resolution, dropout comes with the variant);
the recipe is `configs/default.py`.
"""

import ml_collections

from configs import default
from efficientnet_jax import scaling


def get_config(variant: str = "b0") -> ml_collections.ConfigDict:
    spec = scaling.variant_spec(variant)
    config = default.get_config()
    config.model.variant = spec.name
    config.image_size = spec.resolution
    return config
