"""Our side of every import: the weighted layers of a variant in network order, how a source names
and lays out their tensors (`SourceFormat`), and matching a source's tensors against a variant.

Every source tensor must land in exactly one of our parameters with the right shape and every one
of our parameters must be filled; anything else raises `WeightImportError` naming the tensors, and,
when the tensors fit another variant completely, names that variant and its family. The mapping is
data: a list of our weighted layers in network order (`network_layers`), and per source a rule naming
the tensors of each layer and a rule converting their layout.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from efficientnet_jax import errors, scaling
from efficientnet_jax.model import create_model, model_spec

Variables = dict[str, Any]
PathLike = Union[str, "os.PathLike[str]"]


class WeightImportError(errors.UserError, ValueError):
    """The source does not fit the requested variant, or cannot be read; the message names the tensors."""


# --- Our side: the weighted layers of a variant, in network order --------------------------------

# The leaves of each kind of layer as (collection, name), in the order Keras stores their variables.
LEAVES: dict[str, tuple[tuple[str, str], ...]] = {
    "conv": (("params", "kernel"),),
    "depthwise": (("params", "kernel"),),
    "conv_bias": (("params", "kernel"), ("params", "bias")),
    "bn": (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"), ("batch_stats", "var")),
    "dense": (("params", "kernel"), ("params", "bias")),
}

# Within a block, in forward order: role, kind, our module path inside `block_{i}`. A Fused-MBConv
# block has the same roles but no depthwise ones; its expand_conv is kxk.
_BLOCK_LAYERS = (
    ("expand_conv", "conv", ("expand_conv",)),
    ("expand_bn", "bn", ("expand_bn",)),
    ("depthwise_conv", "depthwise", ("depthwise_conv",)),
    ("depthwise_bn", "bn", ("depthwise_bn",)),
    ("se_reduce", "conv_bias", ("se", "reduce")),
    ("se_expand", "conv_bias", ("se", "expand")),
    ("project_conv", "conv", ("project_conv",)),
    ("project_bn", "bn", ("project_bn",)),
)


@dataclasses.dataclass(frozen=True)
class BlockPosition:
    """Where a block sits: sources name blocks by stage and repeat, we number them flat."""

    stage: int
    repeat: int
    expands: bool  # has an expansion; timm builds MBConv blocks without one as DepthwiseSeparable
    fused: bool = False  # Fused-MBConv, timm's EdgeResidual (ConvBnAct without an expansion)
    efficientnetv2: bool = False  # a block of EfficientNetV2, which Keras names a little differently


@dataclasses.dataclass(frozen=True)
class Layer:
    """One weighted layer of our network."""

    path: tuple[str, ...]  # module path in our tree, e.g. ("block_3", "se", "reduce")
    kind: str  # a key of LEAVES
    role: str  # source-independent name: "stem_conv", "expand_bn", "se_reduce", "classifier", ...
    block: BlockPosition | None = None


def canonical_variant(variant: str) -> str:
    """'b0' and 'efficientnet-b0' name the same variant; messages and caches use the long form."""
    return model_spec(variant).name


def network_layers(variant: str) -> list[Layer]:
    """Our weighted layers in forward order, which is also the order Keras creates them in (its
    `.weights.h5` files are positional, so the order matters)."""
    spec = model_spec(variant)
    layers = [Layer(("stem_conv",), "conv", "stem_conv"), Layer(("stem_bn",), "bn", "stem_bn")]
    block_index = 0
    for stage_index, stage in enumerate(spec.scaled_stages()):
        for repeat in range(stage.repeats):
            position = BlockPosition(
                stage_index,
                repeat,
                expands=stage.expand_ratio != 1,
                fused=stage.fused,
                efficientnetv2=spec.name.startswith("efficientnetv2-"),
            )
            for role, kind, sub_path in _BLOCK_LAYERS:
                if (
                    (role.startswith("expand_") and not position.expands)
                    or (role.startswith("se_") and not stage.se_ratio)
                    or (role.startswith("depthwise_") and position.fused)
                ):
                    continue
                layers.append(Layer((f"block_{block_index}", *sub_path), kind, role, position))
            block_index += 1
    layers += [
        Layer(("head_conv",), "conv", "head_conv"),
        Layer(("head_bn",), "bn", "head_bn"),
        Layer(("classifier",), "dense", "classifier"),
    ]
    return layers


@functools.cache
def target_shapes(variant: str | scaling.ModelSpec) -> Mapping[tuple[str, ...], tuple[tuple[int, ...], Any]]:
    """{(collection, *path, leaf): (shape, dtype)} of `create_model(variant)`, traced with
    `jax.eval_shape`, so nothing is allocated. The 'xla' depthwise implementation traces faster on
    CPU than 'shift' and has the same parameters; parameters do not depend on the image size."""
    model = create_model(variant, depthwise_implementation="xla")
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    flat = traverse_util.flatten_dict(variables)
    return {key: (tuple(leaf.shape), leaf.dtype) for key, leaf in flat.items()}


# --- Source naming and layout rules ---------------------------------------------------------------

# Source key -> (our layer, collection, leaf).
Expected = dict[str, tuple[Layer, str, str]]


def keys_by_name(layers: Sequence[Layer], key: Callable[[Layer, str], str]) -> Expected:
    """The source keys of every leaf of `layers`, where a source names a leaf `key(layer, leaf)`."""
    return {
        key(layer, leaf): (layer, collection, leaf)
        for layer in layers
        for collection, leaf in LEAVES[layer.kind]
    }


def _transpose(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Leaves arrays of the wrong rank alone, so that the shape check reports them."""
    return np.transpose(array, axes) if array.ndim == len(axes) else array


@dataclasses.dataclass(frozen=True)
class SourceFormat:
    """How one source names its tensors and lays them out; `label` is for messages."""

    label: str
    keys: Callable[[Sequence[Layer]], Expected]
    layout: Callable[[str, str, np.ndarray], np.ndarray]


# --- Matching a source against a variant -----------------------------------------------------------

_MAX_LISTED = 20


def _listing(title: str, items: Sequence[str]) -> str:
    shown = list(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown.append(f"... and {len(items) - _MAX_LISTED} more")
    return f"{len(items)} {title}:\n    " + "\n    ".join(shown)


def _match(
    tensors: Mapping[str, np.ndarray], variant: str, source: SourceFormat
) -> tuple[dict[tuple[str, ...], np.ndarray], list[str]]:
    """Converts `tensors` for `variant`: ({(collection, *path, leaf): array}, one line per problem)."""
    expected = source.keys(network_layers(variant))
    targets = target_shapes(model_spec(variant))  # a spec keeps its num_classes (ImageNet-21k: 21,843)
    filled, missing, mismatched = {}, [], []
    for key, (layer, collection, leaf) in expected.items():
        ours = (collection, *layer.path, leaf)
        if key not in tensors:
            missing.append(f"{key} (for {'/'.join(ours)})")
            continue
        shape, dtype = targets.get(ours, (None, None))
        array = source.layout(layer.kind, leaf, tensors[key])
        if array.shape != shape:
            mismatched.append(
                f"{key}: {tuple(tensors[key].shape)}, {array.shape} in our layout; "
                f"{'/'.join(ours)} is {shape or 'not in our model'}"
            )
            continue
        filled[ours] = array.astype(dtype)
    covered = {(collection, *layer.path, leaf) for layer, collection, leaf in expected.values()}
    lists = (
        ("unused source tensors", sorted(key for key in tensors if key not in expected)),
        ("missing source tensors", missing),
        ("shape mismatches", mismatched),
        ("of our parameters with no source tensor", sorted("/".join(k) for k in targets if k not in covered)),
    )
    return filled, [_listing(title, items) for title, items in lists if items]


def guess_variants(tensors: Mapping[str, np.ndarray], source: SourceFormat) -> list[str]:
    """The released variants that `tensors` fit completely. Names decide first (depth), shapes
    second (width: B1 and B2 have the same blocks), so only name matches pay for a trace."""
    names = set(tensors)
    return [
        variant
        for variant in scaling.VARIANTS
        if set(source.keys(network_layers(variant))) == names and not _match(tensors, variant, source)[1]
    ]


# Families by baseline (`scaling.VariantCoefficients.baseline`), for messages.
_FAMILIES = {
    "efficientnet-b0": "EfficientNet",
    "efficientnet-lite0": "EfficientNet-Lite",
    "efficientnet-edgetpu-s": "EfficientNet-EdgeTPU",
    **dict.fromkeys(
        (
            "efficientnetv2-base",
            "efficientnetv2-s",
            "efficientnetv2-m",
            "efficientnetv2-l",
            "efficientnetv2-xl",
        ),
        "EfficientNetV2",
    ),
}


def family(variant: str) -> str:
    """'EfficientNet-Lite' for 'lite2': what a wrong-variant message names when sizes are not the
    only difference (a Lite state dict has no squeeze-and-excitation tensors at all)."""
    baseline = scaling.variant_coefficients(canonical_variant(variant)).baseline
    return _FAMILIES.get(baseline, baseline)


def _other_family(guesses: Sequence[str], variant: str) -> str:
    families = {family(guess) for guess in guesses}
    if families == {family(variant)}:
        return ""
    return (
        f" (the {' or '.join(sorted(families))} family, not {canonical_variant(variant)}'s {family(variant)})"
    )


def import_tensors(tensors: Mapping[str, np.ndarray], variant: str, source: SourceFormat) -> Variables:
    """`{"params", "batch_stats"}` for `variant` from source tensors named and laid out as `source`."""
    filled, problems = _match(tensors, variant, source)
    if problems:
        message = f"Cannot import {source.label} weights into {canonical_variant(variant)}:\n  "
        message += "\n  ".join(problems)
        others = [v for v in guess_variants(tensors, source) if v != canonical_variant(variant)]
        if others:
            message += f"\n  The weights look like {' or '.join(others)}{_other_family(others, variant)}."
        raise WeightImportError(message)
    return traverse_util.unflatten_dict({key: jnp.asarray(array) for key, array in filled.items()})


def classifier_classes(
    tensors: Mapping[str, np.ndarray], variant: str | scaling.ModelSpec, source: SourceFormat
) -> int | None:
    """The number of classes of the classifier in `tensors` (the length of its bias, in every
    naming); None when `tensors` hold no classifier bias of rank 1."""
    for key, (layer, _, leaf) in source.keys(network_layers(variant)).items():
        if layer.role == "classifier" and leaf == "bias":
            bias = tensors.get(key)
            return int(bias.shape[0]) if bias is not None and np.ndim(bias) == 1 else None
    return None

