"""The offline quick start with EfficientNetV2-B0 and progressive learning:
`python train.py --config=configs/quickstart_v2.py`.

The quick start's data, schedule and width/depth reduction (configs/quickstart.py), with V2-B0's
network (Fused-MBConv stages first), its batch-norm momentum 0.9, and the official progressive
learning in 3 stages sized for 32-pixel digits: training images of 24, 28 and 32 pixels
(progressive.py: int(20 + (32 - 20) * (s + 1) / 3)), evaluation at 32 throughout. The quick start
has no RandAugment and no mixing, so the stages grow the image size only (the official code keeps
the dropout rate).
"""

import ml_collections

from configs import quickstart
from efficientnet_jax import scaling


def get_config() -> ml_collections.ConfigDict:
    config = quickstart.get_config()
    config.model.variant = "efficientnetv2-b0"
    config.model.batch_norm_momentum = scaling.variant_spec("efficientnetv2-b0").batch_norm_momentum
    config.progressive.num_stages = 3
    config.progressive.min_image_size = 20
    return config
