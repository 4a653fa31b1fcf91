"""EfficientNet-B0..B7 (and B8, L2, Lite0..Lite4, EdgeTPU-S/M/L) on ImageNet:
`--config=configs/imagenet.py:b3`, `:lite0`, `:edgetpu-s`.

Only what differs per variant is set here (model, resolution, dropout comes with the variant,
RandAugment magnitude); the recipe is `configs/default.py`. The variant brings its own baseline
network (`config.model.baseline` left unset): Lite0 for `lite*`, EdgeTPU-S for `edgetpu-*`.
"""

import ml_collections

from configs import default
from efficientnet_jax import scaling

# The official code's RandAugment magnitude: 10 by default, larger for the biggest variants, whose
# higher resolution and capacity want stronger regularisation.
RANDAUGMENT_MAGNITUDES = {"efficientnet-b5": 17.0, "efficientnet-b7": 28.0}
DEFAULT_RANDAUGMENT_MAGNITUDE = 10.0


def get_config(variant: str = "b0") -> ml_collections.ConfigDict:
    spec = scaling.variant_spec(variant)
    config = default.get_config()
    config.model.variant = spec.name
    config.image_size = spec.resolution
    # Used only with --config.augment=randaugment.
    config.randaugment_magnitude = RANDAUGMENT_MAGNITUDES.get(spec.name, DEFAULT_RANDAUGMENT_MAGNITUDE)
    # config.augment stays None (official default); README's AutoAugment rows: --config.augment=autoaugment.
    return config
