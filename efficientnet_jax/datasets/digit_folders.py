"""scikit-learn's digits as two image folders, an offline fine-tuning task: digits 0-4 to pretrain on,
digits 5-9 to fine-tune on.

    python -m efficientnet_jax.datasets.digit_folders [OUT_DIR]    (default workdirs/digit_folders)

writes `OUT_DIR/digits_0-4/{train,test}/<digit>/<index>.png` and the same for `digits_5-9`, in the
layout of `--config.dataset=folder:...` (datasets/image_folder.py): the images and the train/test
split of the `sklearn_digits` TFDS dataset (32x32 RGB PNGs, stratified 80/20). The two folders share
no class, so what a network learnt on one can only help on the other through its features.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import PIL.Image
import sklearn.datasets

from efficientnet_jax.datasets.sklearn_digits import stratified_split, upscale_digit

DEFAULT_OUT_DIR = os.path.join("workdirs", "digit_folders")
CLASS_SUBSETS = {"digits_0-4": (0, 1, 2, 3, 4), "digits_5-9": (5, 6, 7, 8, 9)}


def write_image_folder(root: str, digits: Sequence[int]) -> dict[str, int]:
    """Writes the scans of `digits` under `root/{train,test}/<digit>/` and returns the number of
    images written per split."""
    data = sklearn.datasets.load_digits()
    counts = {}
    for split, indices in zip(("train", "test"), stratified_split(data.target)):
        selected = [index for index in indices if data.target[index] in digits]
        for index in selected:
            class_dir = os.path.join(root, split, str(data.target[index]))
            os.makedirs(class_dir, exist_ok=True)
            PIL.Image.fromarray(upscale_digit(data.images[index])).save(
                os.path.join(class_dir, f"{index}.png")
            )
        counts[split] = len(selected)
    return counts


def write_digit_folders(out_dir: str) -> dict[str, dict[str, int]]:
    """Both folders of CLASS_SUBSETS under `out_dir`; their image counts per split."""
    return {
        name: write_image_folder(os.path.join(out_dir, name), digits)
        for name, digits in CLASS_SUBSETS.items()
    }


def main(argv: Sequence[str]) -> None:
    out_dir = argv[0] if argv else DEFAULT_OUT_DIR
    if os.path.exists(out_dir) and os.listdir(out_dir):
        sys.exit(f"{out_dir} exists and is not empty; choose a new directory.")
    for name, counts in write_digit_folders(out_dir).items():
        print(f"{os.path.join(out_dir, name)}: {counts['train']} train and {counts['test']} test images")


if __name__ == "__main__":
    main(sys.argv[1:])
