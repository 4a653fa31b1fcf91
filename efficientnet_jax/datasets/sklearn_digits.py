"""`sklearn_digits`: a small, real, offline image-classification TFDS dataset.

scikit-learn ships the UCI handwritten digits (1,797 real 8x8 greyscale scans,
values 0..16, 10 classes) inside its wheel, so this dataset prepares on a
machine with no network. It lets the whole train/eval path (TFDS reading,
PNG decoding, cropping, sharding, resume) run end to end on real images in
seconds, which no download-based dataset can do in CI.
"""

import numpy as np
import PIL.Image
import sklearn.datasets
import sklearn.model_selection
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
NUM_CLASSES = 10
# The scans use 17 grey levels; 16 is full ink.
MAX_PIXEL_VALUE = 16
TEST_FRACTION = 0.2
# Fixed so that the held-out test split is the same on every machine and
# every preparation: a different seed would leak test images into training.
SPLIT_SEED = 0


def upscale_digit(digit: np.ndarray) -> np.ndarray:
    """Maps one 8x8 scan (0..16) to a 32x32x3 uint8 image.

    The scan is rescaled to 0..255 and resized bicubically so that it looks like
    the natural images the crop/resize pipeline expects rather than 4x4 blocks;
    grey is replicated into RGB because the models take three channels.
    """
    grey = np.round(digit.astype(np.float64) * (255.0 / MAX_PIXEL_VALUE))
    small = PIL.Image.fromarray(grey.astype(np.uint8))  # 2-D uint8: mode "L"
    large = np.asarray(small.resize((IMAGE_SIZE, IMAGE_SIZE), PIL.Image.BICUBIC))
    return np.repeat(large[:, :, None], 3, axis=2)


def stratified_split(
    labels: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Returns sorted (train, test) indices, disjoint and stratified by label.

    Stratifying keeps every class at the same share in both splits, so test
    accuracy on this small set is not skewed by an unlucky class balance.
    """
    train, test = sklearn.model_selection.train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(test)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's handwritten digits as 32x32 RGB PNGs, train/test split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "scikit-learn's bundled UCI handwritten digits (1,797 8x8 scans), "
                "upscaled bicubically to 32x32 RGB; a stratified 80/20 train/test "
                f"split with seed {SPLIT_SEED}."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="png"),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Everything comes from the installed scikit-learn.
        digits = sklearn.datasets.load_digits()
        train, test = stratified_split(digits.target)
        return {
            "train": self._generate_examples(digits.images, digits.target, train),
            "test": self._generate_examples(digits.images, digits.target, test),
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
        # The position in load_digits is a stable, unique key.
        for index in indices:
            yield int(index), {"image": upscale_digit(images[index]), "label": int(labels[index])}
