"""Fine-tune ImageNet-pretrained B0 on a folder of your own images, one sub-folder per split and per
class (`/path/to/images/train/cat/1.jpg`, `/path/to/images/test/cat/7.jpg`; see
efficientnet_jax/datasets/image_folder.py):
`--config=configs/finetune_folder.py:/path/to/images --config.init_checkpoint=/runs/b0_timm`.

The evaluation split is the `test` folder (`--config.eval_split=validation` for another name). Another
variant: `--config.model.variant=efficientnet-b3 --config.image_size=300` and a B3 checkpoint.
Settings: configs/finetune_base.py.
"""

from configs import finetune_base
from efficientnet_jax.datasets.image_folder import FOLDER_PREFIX


def get_config(root: str):
    return finetune_base.finetune_config(
        "b0", FOLDER_PREFIX + root, train_split="train", eval_split="test", num_epochs=30.0
    )
