"""Fine-tune ImageNet weights on Food-101 (TFDS `food101`: 75,750 train / 25,250 validation images,
101 classes): `--config=configs/finetune_food101.py:b0 --config.init_checkpoint=/runs/b0_timm`.
Settings: configs/finetune_base.py."""

from configs import finetune_base


def get_config(variant: str = "b0"):
    return finetune_base.finetune_config(
        variant, "food101", train_split="train", eval_split="validation", num_epochs=10.0
    )
