"""Fine-tune ImageNet weights on CIFAR-100 (TFDS `cifar100`: 50,000 train / 10,000 test 32x32 images,
100 classes): `--config=configs/finetune_cifar100.py:b0 --config.init_checkpoint=/runs/b0_timm`.
Settings: configs/finetune_base.py."""

from configs import finetune_base


def get_config(variant: str = "b0"):
    return finetune_base.finetune_config(
        variant, "cifar100", train_split="train", eval_split="test", num_epochs=15.0
    )
