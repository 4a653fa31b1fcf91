"""A folder of your own images as a dataset: `--config.dataset=folder:/path/to/images`.

The layout is `tfds.ImageFolder`'s: one folder per split, one folder per class inside it.

    /path/to/images/train/<class name>/<image>.jpg     (.jpg, .jpeg or .png)
    /path/to/images/test/<class name>/<image>.jpg

Labels are the class folder names of all splits, sorted, so a class missing from one split keeps its
label. The images are read and decoded on the fly by the same input pipeline as a TFDS dataset;
nothing is prepared or copied. `tfds.ImageFolder` on its own reads whole splits only (no
'train[:90%]', nor the per-host shards of `tfds.even_splits` that the pipeline reads) and shuffles
in an unseeded order, which would break bit-exact resuming; `ImageFolder` here adds both.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

FOLDER_PREFIX = "folder:"  # config.dataset = FOLDER_PREFIX + root
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # the files tfds.ImageFolder reads; others are ignored
LAYOUT = "<root>/<split>/<class>/<image>.jpg (or .jpeg, .png), e.g. <root>/train/cat/1.jpg"


class ImageFolderError(ValueError):
    """A folder that is not an image dataset; the message names the folder and the fix."""


def is_image_folder(dataset: str) -> bool:
    return dataset.startswith(FOLDER_PREFIX)


def _subfolders(path: str) -> list[str]:
    return sorted(
        name.rstrip("/") for name in tf.io.gfile.listdir(path) if tf.io.gfile.isdir(os.path.join(path, name))
    )


def check_layout(root: str) -> None:
    """Fails, naming the folder, on a missing root, a root without split folders, a split without
    class folders, or a class folder without images (tfds.ImageFolder would silently give that
    class no examples, or the split none)."""
    if not tf.io.gfile.isdir(root):
        raise ImageFolderError(
            f"config.dataset={FOLDER_PREFIX}{root}: {root} is not a directory. Point it at a folder laid "
            f"out as {LAYOUT}."
        )
    splits = _subfolders(root)
    if not splits:
        raise ImageFolderError(f"{root} has no split folders (such as train/ and test/); expected {LAYOUT}.")
    for split in splits:
        split_dir = os.path.join(root, split)
        classes = _subfolders(split_dir)
        if not classes:
            raise ImageFolderError(f"The split folder {split_dir} has no class folders; expected {LAYOUT}.")
        for name in classes:
            class_dir = os.path.join(split_dir, name)
            if not any(file.lower().endswith(IMAGE_SUFFIXES) for file in tf.io.gfile.listdir(class_dir)):
                raise ImageFolderError(
                    f"The class folder {class_dir} holds no {', '.join(IMAGE_SUFFIXES)} image. Put its "
                    f"images there (other formats are not read), or remove the folder."
                )


class ImageFolder(tfds.ImageFolder, skip_registration=True):
    """`tfds.ImageFolder` with sub-splits and seeded shuffling: `as_dataset(split='train[:50%]',
    shuffle_files=True, read_config=tfds.ReadConfig(shuffle_seed=s))` reads the first half of the
    train split (in the builder's fixed order), shuffled in an order that only depends on `s`."""

    def _as_dataset(self, split, shuffle_files=False, decoders=None, read_config=None) -> tf.data.Dataset:
        instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(self.info.splits)
        examples = [
            example
            for instruction in instructions
            for example in self._split_examples[instruction.splitname][instruction.from_ : instruction.to]
        ]
        if shuffle_files:
            seed = read_config.shuffle_seed if read_config else None
            examples = [examples[i] for i in np.random.default_rng(seed).permutation(len(examples))]
        labels = self.info.features["label"]
        ds = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant([example.image_path for example in examples], tf.string),
                tf.constant([labels.str2int(example.label) for example in examples], tf.int64),
            )
        )

        def load(path: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
            encoded = {"image": tf.io.read_file(path), "label": label, "image/filename": path}
            return self.info.features.decode_example(encoded, decoders=decoders)

        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def load(dataset: str) -> ImageFolder:
    """The builder for `config.dataset = 'folder:<root>'`, after checking the folder's layout."""
    root = os.path.expanduser(dataset[len(FOLDER_PREFIX) :])
    check_layout(root)
    return ImageFolder(root)
