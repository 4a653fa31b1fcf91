"""Classifying image files with a checkpoint: the library behind predict.py.

Everything comes from the checkpoint's model record (checkpointing.ModelRecord): the network, the
input normalisation its weights were trained with, the eval crop, and the class names. A training
workdir, one of its step directories and the weight converter's output all work, without the config
that made them. Each image goes through the evaluation's own preprocessing (input_pipeline.eval_image,
with the record's crop and resize: EfficientNet's centre crop and TF1 bicubic resize, or EfficientNetV2's),
then the normalisation; the network runs in float32 whatever precision it was trained in.

Class names: the record's (the training dataset's label names); without them (converter outputs,
checkpoints written before records held them) a 1,000-class network is taken for ImageNet in TFDS's
label order, any other is labelled by index. A label that is an ImageNet WordNet id is given its
readable name from data/imagenet_class_names.txt.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tensorflow as tf

from efficientnet_jax import checkpointing, input_pipeline, steps
from efficientnet_jax.checkpointing import CheckpointLocation, ModelRecord
from efficientnet_jax.configuration import Preprocessing
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.normalizations import describe_normalization
from efficientnet_jax.scaling import ModelSpec

IMAGENET_CLASS_NAMES_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data", "imagenet_class_names.txt"
)
IMAGENET_NUM_CLASSES = 1000
# Images per forward pass: bounds the memory of a long list of images (B7 inputs are 4 MB each). Each
# distinct batch size compiles once.
MAX_BATCH_SIZE = 16


@functools.cache
def imagenet_class_names() -> dict[str, str]:
    """WordNet id -> readable name of the 1,000 ImageNet classes, in TFDS's label order."""
    with open(IMAGENET_CLASS_NAMES_FILE) as f:
        return dict(line.rstrip("\n").split("\t", 1) for line in f if not line.startswith("#"))


def class_labels(record: ModelRecord, num_classes: int) -> list[tuple[str, str]]:
    """(label, readable name) of each class index of the checkpoint (see the module's text)."""
    readable = imagenet_class_names()
    labels = record.class_names
    if labels is None and num_classes == IMAGENET_NUM_CLASSES:
        labels = tuple(readable)
    if labels is None:
        labels = tuple(str(index) for index in range(num_classes))
    return [(label, readable.get(label, label)) for label in labels]


def image_file_input(path: str, *, image_size: int, preprocessing: Preprocessing) -> np.ndarray:
    """The uint8 [S, S, 3] pixels of an image file (JPEG, PNG, GIF or BMP) as the evaluation's crop
    and resize make them (the classifier normalises them, as the eval step does). Raises OSError for
    a file that cannot be read, tf.errors.InvalidArgumentError for one that is not a decodable image."""
    with open(path, "rb") as f:
        image_bytes = f.read()
    return input_pipeline.eval_image(
        tf.constant(image_bytes), image_size=image_size, preprocessing=preprocessing
    ).numpy()


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A checkpoint's network and weights, ready to classify images as the checkpoint says to."""

    location: CheckpointLocation
    record: ModelRecord
    spec: ModelSpec  # the record's, in float32
    weights: str  # 'ema' or 'raw'
    variables: dict[str, Any]
    # The network's inference on uint8 pixels, (variables, pixels) -> logits: the record's
    # normalisation, then the network; compiled once per batch size.
    forward: Callable[[dict[str, Any], np.ndarray], jax.Array]

    def input_of(self, path: str) -> np.ndarray:
        """`image_file_input` with this checkpoint's image size and eval crop."""
        return image_file_input(
            path, image_size=self.spec.resolution, preprocessing=self.record.preprocessing()
        )

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """float32 [N, classes] for uint8 pixels [N, S, S, 3] as `input_of` makes them."""
        return np.asarray(self.forward(self.variables, inputs))


def load_classifier(checkpoint: str, weights: str = "ema", step: int | None = None) -> Classifier:
    """The network and `weights` of a checkpoint (a workdir: its newest step, or `step`; a step
    directory; a converter output), built from its model record alone."""
    location = checkpointing.locate_checkpoint(checkpoint, step)
    record = checkpointing.read_model_record(location.step_directory)
    spec = dataclasses.replace(record.model_spec(), dtype="float32", remat=False)
    variables = checkpointing.read_variables(location, spec, weights)
    model, normalization = EfficientNet(spec), record.input_normalization

    @jax.jit
    def forward(network_variables: dict[str, Any], pixels: jax.Array) -> jax.Array:
        return model.apply(network_variables, steps.normalize(pixels, normalization), train=False)

    return Classifier(location, record, spec, weights, jax.device_put(variables), forward)


def _top_k(logits: np.ndarray, k: int, labels: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """The k most probable classes, most probable first (ties: the lower index first)."""
    shifted = np.exp(logits.astype(np.float64) - logits.max())
    probabilities = shifted / shifted.sum()
    best = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"index": int(i), "label": labels[i][0], "name": labels[i][1], "probability": float(probabilities[i])}
        for i in best
    ]


def predict(
    checkpoint: str, image_paths: Sequence[str], top_k: int = 5, weights: str = "ema", step: int | None = None
) -> dict[str, Any]:
    """Classifies image files with a checkpoint. Returns {"checkpoint", "step", "weights", "model",
    "input_normalization", "predictions"}: per image, in the given order, {"image", "top_k": [{"index",
    "label", "name", "probability"}, ...]} (at most the number of classes), or {"image", "error"} for a
    file that cannot be read or decoded, which does not stop the others."""
    classifier = load_classifier(checkpoint, weights, step)
    labels = class_labels(classifier.record, classifier.spec.num_classes)
    return {
        "checkpoint": classifier.location.step_directory,
        "step": classifier.location.step,
        "weights": weights,
        "model": classifier.spec.name,
        "input_normalization": describe_normalization(
            classifier.record.input_normalization
        ),
        "predictions": classify_files(classifier.input_of, classifier.logits, labels, image_paths, top_k),
    }


def classify_files(
    input_of: Callable[[str], np.ndarray],
    logits_of: Callable[[np.ndarray], np.ndarray],
    labels: Sequence[tuple[str, str]],
    image_paths: Sequence[str],
    top_k: int,
) -> list[dict[str, Any]]:
    """`predict`'s "predictions", with any network: `input_of` makes a file's input, `logits_of` runs a
    batch of them (at most MAX_BATCH_SIZE)."""
    predictions = []
    for start in range(0, len(image_paths), MAX_BATCH_SIZE):
        inputs, classified = [], []
        for path in image_paths[start : start + MAX_BATCH_SIZE]:
            prediction = {"image": path}
            try:
                inputs.append(input_of(path))
                classified.append(prediction)
            except OSError as error:
                prediction["error"] = f"cannot be read ({error.strerror or error})"
            except tf.errors.InvalidArgumentError:
                prediction["error"] = "is not an image file TensorFlow decodes (JPEG, PNG, GIF or BMP)"
            predictions.append(prediction)
        if inputs:
            for prediction, logits in zip(classified, logits_of(np.stack(inputs))):
                prediction["top_k"] = _top_k(logits, top_k, labels)
    return predictions
