"""EfficientNet-B0..B7 (and B8, L2, Lite0..Lite4, EdgeTPU-S/M/L) and EfficientNetV2 (B0..B3, S, M, L,
XL) on ImageNet: `--config=configs/imagenet.py:b3`, `:lite0`, `:edgetpu-s`, `:v2-s`, `:v2-b0`.

Only what differs per variant is set here (model, image size, batch-norm momentum, dropout comes
with the variant, augmentation); the recipe is `configs/default.py`. The variant brings its own
baseline network (`config.model.baseline` left unset): Lite0 for `lite*`, EdgeTPU-S for `edgetpu-*`,
its own V2 table for `v2-*`.

Image size. `config.image_size` is the variant's evaluation size, the one its published top-1 was
measured at; B0-B7, Lite and EdgeTPU train at it too. EfficientNetV2 trains on smaller images than
it evaluates on: `config.train_image_size` is the official train size (V2-S: 300, evaluated at 384;
`scaling.VARIANTS`, `train_resolution`), and the V2 configs train with the official progressive
learning (progressive.py): 4 stages in which the train size grows from 128 to it, the RandAugment
magnitude from 5 and the Mixup/CutMix alphas from 0 to the variant's (V2-S: sizes 171, 214, 257, 300,
magnitudes 5, 6.7, 8.3, 10). `--config.progressive.num_stages=0` trains at the final values throughout.
"""

import ml_collections

from configs import default
from efficientnet_jax import scaling

# The official code's RandAugment magnitude: 10 by default, larger for the biggest variants, whose
# higher resolution and capacity want stronger regularisation.
RANDAUGMENT_MAGNITUDES = {"efficientnet-b5": 17.0, "efficientnet-b7": 28.0}
DEFAULT_RANDAUGMENT_MAGNITUDE = 10.0

# EfficientNetV2's own augmentation (efficientnetv2/effnetv2_configs.py): RandAugment of growing
# magnitude for S..XL; V2-B0..B3 use EfficientNet's AutoAugment, for comparison with B0..B3.
EFFICIENTNETV2_AUGMENTATION = {
    "efficientnetv2-s": ("randaugment", 10.0),
    "efficientnetv2-m": ("randaugment", 15.0),
    "efficientnetv2-l": ("randaugment", 20.0),
    "efficientnetv2-xl": ("randaugment", 20.0),
    "efficientnetv2-b0": ("autoaugment", DEFAULT_RANDAUGMENT_MAGNITUDE),
    "efficientnetv2-b1": ("autoaugment", DEFAULT_RANDAUGMENT_MAGNITUDE),
    "efficientnetv2-b2": ("autoaugment", DEFAULT_RANDAUGMENT_MAGNITUDE),
    "efficientnetv2-b3": ("autoaugment", DEFAULT_RANDAUGMENT_MAGNITUDE),
}

# EfficientNetV2's Mixup and CutMix alpha, the same for both (effnetv2_configs.py, its `mixup` column):
# 0 (off) for S and B0..B3, 0.2 for M, 0.5 for L and XL. Every V1 config leaves both at 0.
EFFICIENTNETV2_MIXING_ALPHA = {"efficientnetv2-m": 0.2, "efficientnetv2-l": 0.5, "efficientnetv2-xl": 0.5}


def get_config(variant: str = "b0") -> ml_collections.ConfigDict:
    spec = scaling.variant_spec(variant)
    config = default.get_config()
    config.model.variant = spec.name
    config.image_size = spec.resolution
    config.model.batch_norm_momentum = spec.batch_norm_momentum  # 0.99; EfficientNetV2: 0.9
    if spec.name in EFFICIENTNETV2_AUGMENTATION:
        config.train_image_size = scaling.variant_coefficients(spec.name).train_resolution
        config.progressive.num_stages = 4  # effnetv2_configs.py: train=dict(stages=4, sched=True)
        config.augment, config.randaugment_magnitude = EFFICIENTNETV2_AUGMENTATION[spec.name]
        config.mixup_alpha = config.cutmix_alpha = EFFICIENTNETV2_MIXING_ALPHA.get(spec.name, 0.0)
        # Mixing happens on the host, after augmentation (configuration.validate).
        config.augment_on_device = not config.mixup_alpha
    else:
        # Used only with --config.augment=randaugment.
        config.randaugment_magnitude = RANDAUGMENT_MAGNITUDES.get(spec.name, DEFAULT_RANDAUGMENT_MAGNITUDE)
        # config.augment stays None (official default);
        # README's AutoAugment rows: --config.augment=autoaugment.
    baseline = scaling.get_baseline(scaling.variant_coefficients(variant).baseline)
    if baseline.eval_preprocessing == "efficientnetv2":
        # V2-S..XL's own train crop (google/automl efficientnetv2/preprocessing.py, `preprocess_for_train`:
        # `sample_distorted_bounding_box` with area_range (0.05, 1.0), min_object_covered 0, no boxes,
        # and TF's defaults aspect_ratio_range (0.75, 1.33) and max_attempts 100; a failed crop keeps the
        # whole image). V2-B0..B3 train with EfficientNet's ('effnetv1_autoaug', preprocess_legacy.py).
        config.crop_area_range = (0.05, 1.0)
        config.crop_aspect_range = (0.75, 1.33)
        config.crop_min_object_covered = 0.0
        config.crop_max_attempts = 100
        config.crop_fallback_to_center = False
    # The eval crop and the resize stay unset: the official ones for the variant (V2-S..XL: the whole
    # image from 320 pixels up, bilinear), or what an evaluated checkpoint records.
    return config
