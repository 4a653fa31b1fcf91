"""Keras applications' `EfficientNetB0` .. `B7` and `EfficientNetV2B0` .. `B3`, `S`, `M`, `L`: a legacy
`.h5` file (the released weights, or `model.save("x.h5")`), a Keras 3 `.weights.h5` file, or an
in-memory `keras.Model`.

Keras's EfficientNet takes raw [0, 255] pixels and normalises inside the model: `Rescaling(1/255)`,
then `Normalization(mean, variance)` computing `(x - mean) / sqrt(variance)`, then, only when built
with `weights="imagenet"`, `Rescaling(1 / sqrt(std))`. The released files store the *standard
deviation* in `variance` (tensorflow/tensorflow#49930), and the last layer compensates, so the whole
front-end computes `(x / 255 - mean) / std`: exactly our ImageNet normalisation. `from_keras` drops the
front-end (it holds statistics, not learned weights) after checking that they are ImageNet's, with
`variance` either the std (released files) or the std squared (a correctly configured
`Normalization`). A Keras model built with `weights=None` that then loads a released file lacks the
compensating layer and divides by `sqrt(std)`: that is Keras's quirk, not the network's intent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from efficientnet_jax import scaling
from efficientnet_jax.normalizations import IMAGENET_MEAN, IMAGENET_STD
from efficientnet_jax.pretrained.mapping import (
    LEAVES,
    Expected,
    Layer,
    PathLike,
    SourceFormat,
    Variables,
    WeightImportError,
    _transpose,
    import_tensors,
    keys_by_name,
)

_KERAS_TOP = {
    "stem_conv": "stem_conv",
    "stem_bn": "stem_bn",
    "head_conv": "top_conv",
    "head_bn": "top_bn",
    "classifier": "predictions",
}
_KERAS_BLOCK = {"depthwise_conv": "dwconv", "depthwise_bn": "bn"}  # other roles keep their name
_KERAS_V2_BLOCK = {"depthwise_conv": "dwconv2", "depthwise_bn": "bn"}  # keras.applications.EfficientNetV2*
_KERAS_LEAF = {"kernel": "kernel", "scale": "gamma", "mean": "moving_mean", "var": "moving_variance"}
_KERAS_CLASS = {  # Keras 3 `.weights.h5` names layers by class and count, not by layer name
    "conv": "conv2d",
    "conv_bias": "conv2d",
    "depthwise": "depthwise_conv2d",
    "bn": "batch_normalization",
    "dense": "dense",
}


def _keras_layer_name(layer: Layer) -> str:
    if layer.block is None:
        return _KERAS_TOP[layer.role]
    letter = chr(ord("a") + layer.block.repeat)
    names = _KERAS_V2_BLOCK if layer.block.efficientnetv2 else _KERAS_BLOCK
    return f"block{layer.block.stage + 1}{letter}_{names.get(layer.role, layer.role)}"


def _keras_variable_name(kind: str, leaf: str) -> str:
    if leaf == "bias":
        return "beta" if kind == "bn" else "bias"
    return _KERAS_LEAF[leaf]


def keras_named_keys(layers: Sequence[Layer]) -> Expected:
    """'layer/variable' keys of legacy `.h5` files and in-memory models, e.g. 'block2a_bn/gamma'."""
    return keys_by_name(
        layers, lambda layer, leaf: f"{_keras_layer_name(layer)}/{_keras_variable_name(layer.kind, leaf)}"
    )


def keras_positional_keys(layers: Sequence[Layer]) -> Expected:
    """Dataset paths of Keras 3 `.weights.h5` files, e.g. 'layers/conv2d_4/vars/0': the n-th layer
    of a class in creation order, its variables by index in LEAVES order."""
    counts: dict[str, int] = {}
    expected: Expected = {}
    for layer in layers:
        class_name = _KERAS_CLASS[layer.kind]
        count = counts.get(class_name, 0)
        counts[class_name] = count + 1
        group = class_name if count == 0 else f"{class_name}_{count}"
        for index, (collection, leaf) in enumerate(LEAVES[layer.kind]):
            expected[f"layers/{group}/vars/{index}"] = (layer, collection, leaf)
    return expected


def keras_layout(kind: str, leaf: str, array: np.ndarray) -> np.ndarray:
    """Keras is HWIO like us, except depthwise kernels: (k, k, C, multiplier=1) against our (k, k, 1, C)."""
    return _transpose(array, (0, 1, 3, 2)) if kind == "depthwise" else array


KERAS_NAMED = SourceFormat("Keras", keras_named_keys, keras_layout)
KERAS_POSITIONAL = SourceFormat("Keras .weights.h5", keras_positional_keys, keras_layout)

_KERAS_FRONT_END = re.compile(
    r"^(?:normalization(?:_\d+)?/(mean|variance|count)|layers/normalization/vars/([012]))$"
)
_POSITIONAL_FRONT_END = ("mean", "variance", "count")


def _keras_short_name(weight_name: str) -> str:
    """'block1a_dwconv/depthwise_kernel:0' (Keras 2) and 'kernel' (Keras 3) to one spelling."""
    name = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
    return "kernel" if name == "depthwise_kernel" else name


def _decoded(name: str | bytes) -> str:
    return name.decode() if isinstance(name, bytes) else name


def _read_legacy_h5(root: Any) -> dict[str, np.ndarray]:
    """Released files and `model.save("x.h5")`: a group per layer listing its `weight_names`."""
    tensors = {}
    for layer_name in map(_decoded, root.attrs["layer_names"]):
        for weight_name in map(_decoded, root[layer_name].attrs["weight_names"]):
            key = f"{layer_name}/{_keras_short_name(weight_name)}"
            tensors[key] = np.asarray(root[layer_name][weight_name])
    return tensors


def _read_keras3_h5(layers_group: Any) -> dict[str, np.ndarray]:
    """Keras 3 `.weights.h5`: 'layers/<class>_<n>/vars/<i>'. Only the `layers` group is read: an
    optimizer's state, when saved alongside, is not a weight of the network."""
    import h5py

    tensors = {}

    def collect(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            tensors[f"layers/{name}"] = np.asarray(item)

    layers_group.visititems(collect)
    return tensors


def _read_keras_h5(path: PathLike) -> tuple[dict[str, np.ndarray], SourceFormat]:
    import h5py

    with h5py.File(path, "r") as file:
        if "model_weights" in file:
            return _read_legacy_h5(file["model_weights"]), KERAS_NAMED
        if "layer_names" in file.attrs:
            return _read_legacy_h5(file), KERAS_NAMED
        if "layers" in file:
            return _read_keras3_h5(file["layers"]), KERAS_POSITIONAL
    raise WeightImportError(f"{os.fspath(path)} is neither a Keras .h5 nor a Keras 3 .weights.h5 file.")


def read_keras(path_or_model: Any) -> tuple[dict[str, np.ndarray], SourceFormat]:
    """Keras weights as numpy arrays, and how they are named."""
    if isinstance(path_or_model, (str, os.PathLike)):
        return _read_keras_h5(path_or_model)
    tensors = {
        f"{layer.name}/{_keras_short_name(weight.name)}": np.asarray(weight.numpy())
        for layer in path_or_model.layers
        for weight in layer.weights
    }
    return tensors, KERAS_NAMED


def _split_front_end(
    tensors: Mapping[str, np.ndarray],
) -> tuple[dict[str, tuple[str, np.ndarray]], dict[str, np.ndarray]]:
    """({'mean' | 'variance' | 'count': (key, array)}, the network's tensors)."""
    front_end, network = {}, {}
    for key, array in tensors.items():
        match = _KERAS_FRONT_END.match(key)
        if match is None:
            network[key] = array
        else:
            role = match.group(1) or _POSITIONAL_FRONT_END[int(match.group(2))]
            front_end[role] = (key, array)
    return front_end, network


def check_keras_front_end(front_end: Mapping[str, tuple[str, np.ndarray]]) -> None:
    """Our users feed ImageNet-normalised pixels: weights trained behind another normalisation
    would silently compute something else on them."""
    mean = front_end.get("mean")
    variance = front_end.get("variance")
    std = np.asarray(IMAGENET_STD)
    problems = []
    if mean is not None and not np.allclose(np.ravel(mean[1]), IMAGENET_MEAN, rtol=1e-4, atol=1e-6):
        problems.append(
            f"{mean[0]} = {np.ravel(mean[1]).tolist()}, not the ImageNet mean {list(IMAGENET_MEAN)}"
        )
    if variance is not None and not any(
        np.allclose(np.ravel(variance[1]), candidate, rtol=1e-4, atol=1e-6) for candidate in (std, std**2)
    ):
        problems.append(
            f"{variance[0]} = {np.ravel(variance[1]).tolist()}, neither the ImageNet std "
            f"{list(IMAGENET_STD)} (released files) nor its square"
        )
    if problems:
        raise WeightImportError(
            "The Keras model normalises its inputs differently from the ImageNet mean/std our users "
            "feed: " + "; ".join(problems) + ". Pass check_front_end=False and feed our model "
            "(pixels / 255 - mean) / sqrt(variance) instead."
        )


def from_keras(path_or_model: Any, variant: str, check_front_end: bool = True) -> Variables:
    """`{"params", "batch_stats"}` for `variant` from Keras's `EfficientNetB0`..`B7` or
    `EfficientNetV2B0`..`B3`, `S`, `M`, `L`: a legacy `.h5` or
    Keras 3 `.weights.h5` path, or an in-memory `keras.Model`. Keras's input front-end is dropped
    (see the module docstring); with `check_front_end` its statistics must be ImageNet's."""
    tensors, source = read_keras(path_or_model)
    return _import_keras_tensors(tensors, variant, source, check_front_end)


def _import_keras_tensors(
    tensors: Mapping[str, np.ndarray],
    variant: str | scaling.ModelSpec,
    source: SourceFormat,
    check_front_end: bool = True,
) -> Variables:
    front_end, network = _split_front_end(tensors)
    variables = import_tensors(network, variant, source)  # first: the wrong variant is the bigger news
    if check_front_end:
        check_keras_front_end(front_end)
    return variables
