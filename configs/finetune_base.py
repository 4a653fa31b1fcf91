"""Transfer-learning settings shared by the configs/finetune_*.py files (not a config of its own).

A fine-tuning job starts from a checkpoint (`--config.init_checkpoint`: a workdir, a step directory,
or published weights converted by `python -m efficientnet_jax.pretrained`) and learns a new classifier
for its dataset. What changes from the recipe it is applied to, and why:

- The backbone learns at a tenth of the classifier's rate (`backbone_learning_rate_multiplier`):
  its features are already good, the classifier starts from random.
- A short schedule: the recipe's learning-rate shape (linear warm-up, then x0.97 staircase decay)
  compressed from its `num_epochs` to the fine-tuning run's, so the rate still ends near the same
  fraction of its peak.
- Checkpoints and evaluations every 500 steps, a run being a few thousand steps.
- EfficientNetV2 fine-tunes at its eval size in one stage, as the official fine-tuning configs
  (efficientnetv2/datasets.py, `ImagenetFt`: train size 1.0 x eval size, no progressive stages).

Everything else (RMSProp, label smoothing, weight decay, EMA, preprocessing at the variant's
resolution) stays the recipe's. These are starting points chosen here, not tuned per dataset: check
them on a validation split. Options for small datasets: `--config.freeze_batch_norm=true` (keep the
pretrained batch-norm statistics), `--config.freeze_backbone=true` (train the classifier only).
"""

import ml_collections

from configs import imagenet

BACKBONE_LEARNING_RATE_MULTIPLIER = 0.1
BATCH_SIZE = 256  # fine-tuning datasets are small: more steps per epoch than the ImageNet batch of 2048
EVERY_STEPS = 500


def apply_transfer_settings(
    config: ml_collections.ConfigDict, num_epochs: float
) -> ml_collections.ConfigDict:
    """Turns a training config into a fine-tuning one of `num_epochs` epochs (see the module's text)."""
    schedule_scale = num_epochs / config.num_epochs
    config.num_epochs = num_epochs
    config.warmup_epochs *= schedule_scale
    config.lr_decay_epochs *= schedule_scale
    config.backbone_learning_rate_multiplier = BACKBONE_LEARNING_RATE_MULTIPLIER
    config.eval_every_steps = EVERY_STEPS
    config.checkpoint_every_steps = EVERY_STEPS
    config.train_image_size = None
    config.progressive.num_stages = 0
    return config


def finetune_config(
    variant: str, dataset: str, train_split: str, eval_split: str, num_epochs: float
) -> ml_collections.ConfigDict:
    """ImageNet-pretrained `variant` (at its resolution) fine-tuned on `dataset` (a TFDS name, or
    'folder:/path/to/images') for `num_epochs` epochs."""
    config = imagenet.get_config(variant)
    config.dataset = dataset
    config.train_split = train_split
    config.eval_split = eval_split
    config.batch_size = BATCH_SIZE
    config.eval_batch_size = BATCH_SIZE
    return apply_transfer_settings(config, num_epochs)
