"""The offline fine-tuning example: digits 5-9 learnt by a network pretrained on digits 0-4.

    python -m efficientnet_jax.datasets.digit_folders        # the two image folders, from scikit-learn
    python train.py --config.dataset=folder:workdirs/digit_folders/digits_0-4 --workdir=workdirs/digits_0-4
    python train.py --config=configs/finetune_digits.py --workdir=workdirs/digits_5-9

The quick start's network and recipe (configs/quickstart.py) with the transfer settings of
configs/finetune_base.py, a short schedule, and batch norm frozen at the pretrained statistics
(which helps: BENCHMARKS.md, "Quick-start ablations"). The argument is the folder
written by the first command (`--config=configs/finetune_digits.py:/other/dir`).
"""

import os

from configs import finetune_base, quickstart
from efficientnet_jax.datasets import digit_folders
from efficientnet_jax.datasets.image_folder import FOLDER_PREFIX

NUM_EPOCHS = 10.0


def get_config(root: str = digit_folders.DEFAULT_OUT_DIR):
    config = quickstart.get_config()
    config.dataset = FOLDER_PREFIX + os.path.join(root, "digits_5-9")
    config.init_checkpoint = os.path.join("workdirs", "digits_0-4")
    config.freeze_batch_norm = True
    return finetune_base.apply_transfer_settings(config, NUM_EPOCHS)
