"""Fine-tune ImageNet weights on Stanford Cars (TFDS `cars196`: 8,144 train / 8,041 test images,
196 classes): `--config=configs/finetune_stanford_cars.py:b0 --config.init_checkpoint=/runs/b0_timm`.
Settings: configs/finetune_base.py. If TFDS cannot download it (its original host has moved), put the
images in split/class folders and use configs/finetune_folder.py."""

from configs import finetune_base


def get_config(variant: str = "b0"):
    return finetune_base.finetune_config(
        variant, "cars196", train_split="train", eval_split="test", num_epochs=80.0
    )
