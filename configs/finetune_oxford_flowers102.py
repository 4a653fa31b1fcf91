"""Fine-tune ImageNet weights on Oxford Flowers-102 (TFDS `oxford_flowers102`: 1,020 train + 1,020
validation images trained on, 6,149 test images, 102 classes):
`--config=configs/finetune_oxford_flowers102.py:b0 --config.init_checkpoint=/runs/b0_timm`.
Settings: configs/finetune_base.py; the training set is small, hence many epochs (about 1,200 steps)."""

from configs import finetune_base


def get_config(variant: str = "b0"):
    return finetune_base.finetune_config(
        variant, "oxford_flowers102", train_split="train+validation", eval_split="test", num_epochs=150.0
    )
