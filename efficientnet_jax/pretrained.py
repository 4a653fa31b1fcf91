"""Import ImageNet weights released for other frameworks into our `{"params", "batch_stats"}`.

Three naming schemes, all of ports of the official TensorFlow checkpoints:

* timm's `tf_efficientnet_b0` .. `b8`, `l2`, `tf_efficientnet_lite0` .. `lite4`,
  `tf_efficientnet_es` / `em` / `el` (EdgeTPU S, M, L) and `tf_efficientnetv2_b0` .. `b3`, `s`, `m`,
  `l`, `xl` (`from_timm`): a PyTorch state dict, a
  `.safetensors` file, or, when torch is installed, a `.pth` / `.bin` file; also straight from the
  Hugging Face hub (`hf-hub:timm/tf_efficientnet_b0.ns_jft_in1k`, through `huggingface_hub`'s cache).
* the `efficientnet_pytorch` package's B0 .. B8 (standard and AdvProp) and the
  `efficientnet-lite-pytorch` package's Lite0 .. Lite4 (`from_efficientnet_pytorch`): the same kinds
  of files, named `_conv_stem`, `_blocks.N._depthwise_conv`, `_bn0`, `_fc`, ...
* Keras applications' `EfficientNetB0` .. `B7` and `EfficientNetV2B0` .. `B3`, `S`, `M`, `L`
  (`from_keras`): a legacy `.h5` file (the released weights, or `model.save("x.h5")`), a Keras 3
  `.weights.h5` file, or an in-memory `keras.Model`.

`import_weights` reads any of them from a file or the hub, recognising the naming from the file
(`source="auto"`) and the number of classes from the classifier (21,843 for ImageNet-21k weights),
and says which input normalisation the weights expect and how the official code evaluated them;
`python -m efficientnet_jax.pretrained` writes its result as a checkpoint.

Every source tensor must land in exactly one of our parameters with the right shape and every one
of our parameters must be filled; anything else raises `WeightImportError` naming the tensors, and,
when the file fits another variant completely, names that variant and its family. A state dict
named in none of the known schemes is refused naming the schemes. The mapping is data: a list of
our weighted layers in network order (`network_layers`), and per source a rule naming the tensors of
each layer and a rule converting their layout.

Inputs. Weights expect the pixels normalised as they were trained (`scaling.InputNormalization`,
RGB pixels in [0, 255]); `weights_normalization` says which, and the converter writes it into the
checkpoint, whose users (evaluation, fine-tuning, prediction) follow it:

* Standard weights of B0 .. B8 and L2 (timm, efficientnet_pytorch, Keras): the ImageNet mean and std
  (`scaling.IMAGENET_NORMALIZATION`). timm's configs normalise [0, 1] images with those statistics.
  Keras's EfficientNet takes raw [0, 255] pixels and normalises inside the model: `Rescaling(1/255)`,
  then `Normalization(mean, variance)` computing `(x - mean) / sqrt(variance)`, then, only when built
  with `weights="imagenet"`, `Rescaling(1 / sqrt(std))`. The released files store the *standard
  deviation* in `variance` (tensorflow/tensorflow#49930), and the last layer compensates, so the
  whole front-end computes `(x / 255 - mean) / std`: exactly our normalisation. `from_keras` drops
  the front-end (it holds statistics, not learned weights) after checking that they are ImageNet's,
  with `variance` either the std (released files) or the std squared (a correctly configured
  `Normalization`). A Keras model built with `weights=None` that then loads a released file lacks the
  compensating layer and divides by `sqrt(std)`: that is Keras's quirk, not the network's intent.
* AdvProp weights (timm's `.ap_in1k` tags, efficientnet_pytorch's `advprop=True` files
  `adv-efficientnet-*`): pixels to [-1, 1] (`scaling.SIGNED_UNIT_NORMALIZATION`).
* Lite and EdgeTPU weights: the official models were trained on `(pixels - 127) / 128`
  (`scaling.EDGE_NORMALIZATION`, recorded in their baselines). timm's ports normalise with mean and
  std 0.5 of [0, 1] pixels, `(pixels - 127.5) / 127.5`, and efficientnet-lite-pytorch's example with
  ImageNet's statistics; the official one is what we use. The official EdgeTPU checkpoints have 1,001
  classes (index 0: background), timm's ports 1,000, as our variants.
* EfficientNetV2 weights: what google/automl's code trained them with, which depends on what they
  were trained on (`weights_training`): ImageNet, the family's (V2-B0..B3: ImageNet's statistics;
  V2-S..XL: (pixels - 128) / 128, as Keras's front-end computes); ImageNet-21k, (pixels - 128) / 128;
  ImageNet-21k then ImageNet, [-1, 1]. The eval crop differs the same way (`official_eval_preprocessing`,
  input_pipeline.eval_image). timm's ports normalise with mean and std 0.5 except V2-B0..B3 `.in1k`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from efficientnet_jax import scaling
from efficientnet_jax.model import create_model, model_spec

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # of [0, 1] RGB pixels
IMAGENET_STD = (0.229, 0.224, 0.225)

Variables = dict[str, Any]
PathLike = Union[str, "os.PathLike[str]"]


class WeightImportError(ValueError):
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

_TIMM_TOP = {
    "stem_conv": "conv_stem",
    "stem_bn": "bn1",
    "head_conv": "conv_head",
    "head_bn": "bn2",
    "classifier": "classifier",
}
_TIMM_INVERTED_RESIDUAL = {
    "expand_conv": "conv_pw",
    "expand_bn": "bn1",
    "depthwise_conv": "conv_dw",
    "depthwise_bn": "bn2",
    "se_reduce": "se.conv_reduce",
    "se_expand": "se.conv_expand",
    "project_conv": "conv_pwl",
    "project_bn": "bn3",
}
# timm's DepthwiseSeparableConv (blocks without expansion) numbers its layers from the depthwise one.
_TIMM_DEPTHWISE_SEPARABLE = {
    "depthwise_conv": "conv_dw",
    "depthwise_bn": "bn1",
    "se_reduce": "se.conv_reduce",
    "se_expand": "se.conv_expand",
    "project_conv": "conv_pw",
    "project_bn": "bn2",
}
# timm's EdgeResidual (Fused-MBConv with an expansion): kxk conv_exp, then the 1x1 conv_pwl.
_TIMM_EDGE_RESIDUAL = {
    "expand_conv": "conv_exp",
    "expand_bn": "bn1",
    "se_reduce": "se.conv_reduce",
    "se_expand": "se.conv_expand",
    "project_conv": "conv_pwl",
    "project_bn": "bn2",
}
# timm's ConvBnAct (EfficientNetV2's Fused-MBConv without expansion): the kxk conv and its BN.
_TIMM_CONV_BN_ACT = {"project_conv": "conv", "project_bn": "bn1"}
_TORCH_LEAF = {  # torch's Conv2d, BatchNorm2d and Linear; timm and efficientnet_pytorch alike
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}

# efficientnet_pytorch (and efficientnet-lite-pytorch, its copy): `_blocks` numbered over the whole
# network, and each block's batch norms by position whether or not the block expands.
_EFFICIENTNET_PYTORCH_TOP = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "head_conv": "_conv_head",
    "head_bn": "_bn1",
    "classifier": "_fc",
}
_EFFICIENTNET_PYTORCH_BLOCK = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "depthwise_conv": "_depthwise_conv",
    "depthwise_bn": "_bn1",
    "se_reduce": "_se_reduce",
    "se_expand": "_se_expand",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}

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


def _timm_layer_name(layer: Layer) -> str:
    if layer.block is None:
        return _TIMM_TOP[layer.role]
    if layer.block.fused:
        names = _TIMM_EDGE_RESIDUAL if layer.block.expands else _TIMM_CONV_BN_ACT
    else:
        names = _TIMM_INVERTED_RESIDUAL if layer.block.expands else _TIMM_DEPTHWISE_SEPARABLE
    return f"blocks.{layer.block.stage}.{layer.block.repeat}.{names[layer.role]}"


def _block_number(layer: Layer) -> int:
    """The block's index over the whole network: our block modules are `block_{index}`."""
    return int(layer.path[0].removeprefix("block_"))


def _efficientnet_pytorch_layer_name(layer: Layer) -> str:
    if layer.block is None:
        return _EFFICIENTNET_PYTORCH_TOP[layer.role]
    return f"_blocks.{_block_number(layer)}.{_EFFICIENTNET_PYTORCH_BLOCK[layer.role]}"


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


def timm_keys(layers: Sequence[Layer]) -> Expected:
    """State-dict keys, e.g. 'blocks.1.0.conv_pw.weight'."""
    return {
        f"{_timm_layer_name(layer)}.{_TORCH_LEAF[leaf]}": (layer, collection, leaf)
        for layer in layers
        for collection, leaf in LEAVES[layer.kind]
    }


def efficientnet_pytorch_keys(layers: Sequence[Layer]) -> Expected:
    """State-dict keys, e.g. '_blocks.1._expand_conv.weight'."""
    return {
        f"{_efficientnet_pytorch_layer_name(layer)}.{_TORCH_LEAF[leaf]}": (layer, collection, leaf)
        for layer in layers
        for collection, leaf in LEAVES[layer.kind]
    }


def keras_named_keys(layers: Sequence[Layer]) -> Expected:
    """'layer/variable' keys of legacy `.h5` files and in-memory models, e.g. 'block2a_bn/gamma'."""
    return {
        f"{_keras_layer_name(layer)}/{_keras_variable_name(layer.kind, leaf)}": (layer, collection, leaf)
        for layer in layers
        for collection, leaf in LEAVES[layer.kind]
    }


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


def _transpose(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Leaves arrays of the wrong rank alone, so that the shape check reports them."""
    return np.transpose(array, axes) if array.ndim == len(axes) else array


def timm_layout(kind: str, leaf: str, array: np.ndarray) -> np.ndarray:
    """torch convolutions are (out, in/groups, kh, kw); ours (kh, kw, in/groups, out): the same
    permutation takes a depthwise (C, 1, k, k) to our (k, k, 1, C). Linear is (out, in). The layout
    of every torch source (timm, efficientnet_pytorch)."""
    if leaf != "kernel":
        return array
    return _transpose(array, (1, 0) if kind == "dense" else (2, 3, 1, 0))


def keras_layout(kind: str, leaf: str, array: np.ndarray) -> np.ndarray:
    """Keras is HWIO like us, except depthwise kernels: (k, k, C, multiplier=1) against our (k, k, 1, C)."""
    return _transpose(array, (0, 1, 3, 2)) if kind == "depthwise" else array


@dataclasses.dataclass(frozen=True)
class SourceFormat:
    """How one source names its tensors and lays them out; `label` is for messages."""

    label: str
    keys: Callable[[Sequence[Layer]], Expected]
    layout: Callable[[str, str, np.ndarray], np.ndarray]


TIMM = SourceFormat("timm", timm_keys, timm_layout)
EFFICIENTNET_PYTORCH = SourceFormat("efficientnet_pytorch", efficientnet_pytorch_keys, timm_layout)
KERAS_NAMED = SourceFormat("Keras", keras_named_keys, keras_layout)
KERAS_POSITIONAL = SourceFormat("Keras .weights.h5", keras_positional_keys, keras_layout)


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
        ("efficientnetv2-base", "efficientnetv2-s", "efficientnetv2-m", "efficientnetv2-l", "efficientnetv2-xl"),
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


# --- torch state dicts: timm and efficientnet_pytorch ------------------------------------------------

TORCH_SOURCES = (TIMM, EFFICIENTNET_PYTORCH)
# How a user picks each torch naming, for messages.
_TORCH_SOURCE_USE = {
    TIMM: "from_timm (--source=timm)",
    EFFICIENTNET_PYTORCH: "from_efficientnet_pytorch (--source=efficientnet_pytorch)",
}


def _to_numpy(value: Any) -> np.ndarray:
    """torch tensors (bfloat16 included, which numpy lacks) and array-likes as numpy arrays."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _load_torch_file(path: PathLike) -> Mapping[str, Any]:
    try:
        import torch
    except ImportError as error:
        raise WeightImportError(
            f"Reading {os.fspath(path)} needs torch; or convert it to .safetensors and pass that."
        ) from error
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_safetensors(path: PathLike) -> Mapping[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError as error:
        raise WeightImportError(f"Reading {os.fspath(path)} needs the safetensors package.") from error
    return load_file(os.fspath(path))


def read_state_dict(state_dict_or_path: Mapping[str, Any] | PathLike) -> dict[str, np.ndarray]:
    """A torch state dict (in memory, `.safetensors`, or `.pth`/`.pt`/`.bin` with torch) as numpy
    arrays, without the BatchNorm `num_batches_tracked` counters: they only drive torch's
    cumulative-average momentum, which inference never uses."""
    if isinstance(state_dict_or_path, Mapping):
        state_dict = state_dict_or_path
    elif os.fspath(state_dict_or_path).endswith(".safetensors"):
        state_dict = _load_safetensors(state_dict_or_path)
    else:
        state_dict = _load_torch_file(state_dict_or_path)
    return {
        key: _to_numpy(value) for key, value in state_dict.items() if not key.endswith(".num_batches_tracked")
    }


@functools.cache
def _name_forms(source: SourceFormat) -> frozenset[str]:
    """Every tensor name `source` gives any released variant, numbers replaced by '#'
    ('blocks.#.#.conv_dw.weight'): a naming scheme without its depth."""
    return frozenset(
        re.sub(r"\d+", "#", key)
        for variant in scaling.VARIANTS
        for key in source.keys(network_layers(variant))
    )


def torch_naming(tensors: Mapping[str, Any]) -> SourceFormat | None:
    """The torch naming scheme (timm or efficientnet_pytorch) that names most of `tensors`, when it
    names more than half of them; None for a state dict of another layout (torchvision's
    `features.0.0.weight`, a ResNet, ...)."""
    forms = [re.sub(r"\d+", "#", key) for key in tensors]
    counts = {source: sum(form in _name_forms(source) for form in forms) for source in TORCH_SOURCES}
    best = max(counts, key=counts.get)
    return best if counts[best] > len(forms) / 2 else None


def _unknown_layout(tensors: Mapping[str, Any]) -> WeightImportError:
    examples = ", ".join(list(tensors)[:3])
    return WeightImportError(
        f"The state dict's tensors ({examples}, ...) are named in no layout this converter reads: timm's "
        f"tf_efficientnet_* (conv_stem.weight, blocks.0.0.conv_dw.weight, ...), efficientnet_pytorch's "
        f"and efficientnet-lite-pytorch's (_conv_stem.weight, _blocks.0._depthwise_conv.weight, ...), "
        f"or Keras's EfficientNetB* (.h5 files)."
    )


def _checked_torch_naming(tensors: Mapping[str, Any], source: SourceFormat | None) -> SourceFormat:
    """The naming `torch_naming` recognises in `tensors`, which must be `source`'s unless that is None."""
    naming = torch_naming(tensors)
    if naming is None:
        raise _unknown_layout(tensors)
    if source is not None and naming != source:
        raise WeightImportError(
            f"These are {naming.label} weights, named as {next(iter(tensors))}; "
            f"read them with {_TORCH_SOURCE_USE[naming]}, not as {source.label}'s."
        )
    return naming


def _import_state_dict(
    state_dict_or_path: Mapping[str, Any] | PathLike,
    variant: str | scaling.ModelSpec,
    source: SourceFormat | None,
) -> tuple[Variables, SourceFormat]:
    """(variables, the naming read): `source`'s, or with None whichever `torch_naming` recognises."""
    tensors = read_state_dict(state_dict_or_path)
    naming = _checked_torch_naming(tensors, source)
    return import_tensors(tensors, variant, naming), naming


def from_timm(
    state_dict_or_path: Mapping[str, Any] | PathLike, variant: str | scaling.ModelSpec
) -> Variables:
    """`{"params", "batch_stats"}` for `variant` from timm's `tf_efficientnet_{b0..b8,l2}`,
    `tf_efficientnet_lite{0..4}`, `tf_efficientnet_{es,em,el}` (EdgeTPU S, M, L) or
    `tf_efficientnetv2_{b0..b3,s,m,l,xl}` weights: a state dict of torch tensors or numpy arrays, a
    `.safetensors` file, or a torch `.pth`/`.bin` file. `variant` may be a `ModelSpec` with another
    `num_classes`: `scaling.variant_spec("v2-s", num_classes=21843)` for the `.in21k` weights."""
    return _import_state_dict(state_dict_or_path, variant, TIMM)[0]


def from_efficientnet_pytorch(state_dict_or_path: Mapping[str, Any] | PathLike, variant: str) -> Variables:
    """`{"params", "batch_stats"}` for `variant` from the weights of the `efficientnet_pytorch`
    package (B0..B8, standard and AdvProp) or of `efficientnet-lite-pytorch` (Lite0..Lite4): a state
    dict, or its `.pth` (with torch) or `.safetensors` file."""
    return _import_state_dict(state_dict_or_path, variant, EFFICIENTNET_PYTORCH)[0]


# --- Keras ----------------------------------------------------------------------------------------

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


# --- Any source, from a file or the hub, with the normalisation its weights expect ------------------

HUB_PREFIX = "hf-hub:"
HUB_FILE = "model.safetensors"  # where timm's hub repositories keep their weights
_TORCH_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_KERAS_SUFFIXES = (".h5",)
SOURCES = ("timm", "efficientnet_pytorch", "keras")
_ADVPROP_FILE = re.compile(r"adv-efficientnet-|tf_efficientnet_\w+_ap-")


@dataclasses.dataclass(frozen=True)
class ImportedWeights:
    """Weights converted for one variant, and how the images they see must be cropped, resized and
    normalised."""

    variables: Variables
    source: str  # the naming read: one of SOURCES
    normalization: scaling.InputNormalization
    file: str  # the file read; for a hub repository, its copy in huggingface_hub's cache
    spec: scaling.ModelSpec  # the variant with the weights' number of classes
    training: str  # one of TRAININGS
    eval_preprocessing: str  # how the official code evaluated them (input_pipeline.EVAL_PREPROCESSINGS)


def is_advprop(weights: PathLike) -> bool:
    """Whether weights are AdvProp's, by their published names: timm's hub tags `ap_in1k`
    (`hf-hub:timm/tf_efficientnet_b0.ap_in1k`) and release files (`tf_efficientnet_b0_ap-f262efe1.pth`),
    and efficientnet_pytorch's files (`adv-efficientnet-b0-b64d5a18.pth`). A renamed file needs
    `advprop=True` (`--advprop`)."""
    name = os.fspath(weights)
    if name.startswith(HUB_PREFIX):
        tag = name.rsplit("/", 1)[-1].partition(".")[2]
        return tag.split("_")[0] == "ap"
    return _ADVPROP_FILE.match(os.path.basename(name)) is not None


# What weights were trained on, named as timm's tags name it: ImageNet(-1k), ImageNet-21k, or
# ImageNet-21k then fine-tuned on ImageNet. Only EfficientNetV2 was released all three ways; it was
# preprocessed differently for each (`weights_normalization`, `official_eval_preprocessing`).
IN1K, IN21K, IN21K_FT_IN1K = "in1k", "in21k", "in21k_ft_in1k"
TRAININGS = (IN1K, IN21K, IN21K_FT_IN1K)
IMAGENET_21K_CLASSES = 21843  # google/automl efficientnetv2/datasets.py, ImageNet21kInput
# timm's release files of the V2 ports: tf_efficientnetv2_s_21ft1k-d7dafa41.pth,
# tf_efficientnetv2_xl_in21ft1k-06c35c48.pth, tf_efficientnetv2_s_21k-6337ad01.pth, ...
_IN21K_FT_IN1K_FILE = re.compile(r"tf_efficientnetv2_\w+_(?:in)?21ft1k-")
_IN21K_FILE = re.compile(r"tf_efficientnetv2_\w+_(?:in)?21k-")


def weights_training(weights: PathLike, num_classes: int | None = None) -> str:
    """What weights were trained on (one of TRAININGS): ImageNet-21k for a 21,843-class classifier,
    otherwise what their published name says (hub tags `.in21k`, `.in21k_ft_in1k`; timm's release
    files `*_21k-*`, `*_21ft1k-*`), otherwise ImageNet. A renamed file needs `--training`."""
    if num_classes == IMAGENET_21K_CLASSES:
        return IN21K
    name = os.fspath(weights)
    if name.startswith(HUB_PREFIX):
        tag = name.rsplit("/", 1)[-1].partition(".")[2]
        return tag if tag in TRAININGS else IN1K
    base = os.path.basename(name)
    if _IN21K_FT_IN1K_FILE.match(base):
        return IN21K_FT_IN1K
    if _IN21K_FILE.match(base):
        return IN21K
    return IN1K


def _is_efficientnetv2(variant: str | scaling.ModelSpec) -> bool:
    return canonical_variant(variant).startswith("efficientnetv2-")


def weights_normalization(
    variant: str | scaling.ModelSpec, advprop: bool = False, training: str = IN1K
) -> scaling.InputNormalization:
    """The normalisation that `variant`'s released weights were trained with, whichever package
    ported them: their family's (`scaling.BASELINES`: ImageNet's statistics for B0..B8, L2 and
    V2-B0..B3, 127/128 for Lite and EdgeTPU, (pixels - 128) / 128 for V2-S..XL), [-1, 1] for AdvProp
    weights, and for EfficientNetV2's ImageNet-21k weights what google/automl's
    efficientnetv2/datasets.py trained them with: `ImageNet21k` turns augmentation off, which leaves
    preprocessing.py's own `(pixels - 128) / 128` for every variant, V2-B0..B3 included; `ImagenetFt`,
    the fine-tuning on ImageNet, uses `preprocess_for_finetune`: `(pixels / 255 - 0.5) / 0.5`, pixels
    to [-1, 1]. timm's ports normalise every one of these V2 weights with mean and std 0.5 (127.5), and
    V2-B0..B3 `.in1k` with ImageNet's statistics."""
    if advprop:
        return scaling.SIGNED_UNIT_NORMALIZATION
    if _is_efficientnetv2(variant) and training == IN21K_FT_IN1K:
        return scaling.SIGNED_UNIT_NORMALIZATION
    if _is_efficientnetv2(variant) and training == IN21K:
        return scaling.EFFICIENTNETV2_NORMALIZATION
    baseline = scaling.variant_coefficients(canonical_variant(variant)).baseline
    return scaling.get_baseline(baseline).normalization


def official_eval_preprocessing(variant: str | scaling.ModelSpec, training: str = IN1K) -> str:
    """How the official code evaluates `variant` (one of input_pipeline.EVAL_PREPROCESSINGS, which
    cites the code): EfficientNet's crop for the V1 family and for V2-B0..B3 trained on ImageNet
    (effnetv2_configs.py gives them 'effnetv1_autoaug', EfficientNet's preprocessing);
    EfficientNetV2's own for V2-S..XL and every ImageNet-21k training; the fine-tuning's (whole image)
    for weights fine-tuned from ImageNet-21k. `configs/imagenet.py` evaluates each variant so."""
    if not _is_efficientnetv2(variant):
        return "efficientnet"
    if training == IN21K_FT_IN1K:
        return "efficientnetv2_finetune"
    if training == IN21K:
        return "efficientnetv2"
    baseline = scaling.variant_coefficients(canonical_variant(variant)).baseline
    return scaling.get_baseline(baseline).eval_preprocessing


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


def hub_file(hub_id: str) -> str:
    """The local path of `model.safetensors` of a Hugging Face hub repository
    ('timm/tf_efficientnet_b0.ns_jft_in1k'), fetched into huggingface_hub's cache (`HF_HUB_CACHE`)
    unless it is there already; with `HF_HUB_OFFLINE=1` only the cache is read."""
    try:
        from huggingface_hub import constants, errors, hf_hub_download
    except ImportError as error:
        raise WeightImportError(
            f"{HUB_PREFIX}{hub_id} needs the huggingface_hub package: pip install huggingface_hub."
        ) from error
    try:
        return hf_hub_download(repo_id=hub_id, filename=HUB_FILE)
    except errors.LocalEntryNotFoundError as error:
        raise WeightImportError(
            f"{HUB_PREFIX}{hub_id}: {HUB_FILE} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and the hub was not reached (offline, or HF_HUB_OFFLINE=1); run once where the hub is "
            f"reachable, or point HF_HUB_CACHE at a cache that holds it."
        ) from error
    except (errors.HfHubHTTPError, errors.HFValidationError) as error:
        reason = str(error).strip().splitlines()[0]
        raise WeightImportError(f"{HUB_PREFIX}{hub_id}: {reason}") from error


def _weights_file_kind(path: str) -> str:
    """'torch' or 'keras', from the suffix (released files keep their usual ones)."""
    if path.endswith(_TORCH_SUFFIXES):
        return "torch"
    if path.endswith(_KERAS_SUFFIXES):
        return "keras"
    raise WeightImportError(
        f"{path} is not a weights file this converter reads ({', '.join(_TORCH_SUFFIXES + _KERAS_SUFFIXES)}): "
        f"timm's tf_efficientnet_* or efficientnet_pytorch's and efficientnet-lite-pytorch's weights "
        f"(.safetensors, or .pth with torch), Keras's EfficientNetB* (.h5, .weights.h5), or a hub "
        f"repository ({HUB_PREFIX}timm/tf_efficientnet_b0.ns_jft_in1k)."
    )


def import_weights(
    weights: PathLike,
    variant: str,
    *,
    source: str = "auto",
    advprop: bool | None = None,
    training: str | None = None,
) -> ImportedWeights:
    """`variant`'s weights from a file or a hub repository (`hf-hub:<repo id>`), with as many
    classes as their classifier has (21,843 for ImageNet-21k weights), and how the images they see
    must be preprocessed. `source` is one of SOURCES, or 'auto': Keras for `.h5` files, otherwise the
    naming of the state dict's tensors decides. `advprop` (None: `is_advprop` from the name) selects
    the [-1, 1] normalisation of AdvProp weights; `training` (None: `weights_training` from the
    classes and the name) what EfficientNetV2 weights were trained on."""
    if source != "auto" and source not in SOURCES:
        raise WeightImportError(f"Unknown source {source!r}: one of auto, {', '.join(SOURCES)}.")
    if training is not None and training not in TRAININGS:
        raise WeightImportError(f"Unknown training {training!r}: one of {', '.join(TRAININGS)}.")
    name = os.fspath(weights)
    path = hub_file(name.removeprefix(HUB_PREFIX)) if name.startswith(HUB_PREFIX) else name
    if not os.path.isfile(path):
        raise WeightImportError(f"{path} is not a file.")
    kind = _weights_file_kind(path)
    if source != "auto" and (source == "keras") != (kind == "keras"):
        raise WeightImportError(
            f"{path} is not a {source} weights file; drop --source or name the right one."
        )
    if kind == "keras":
        tensors, naming = read_keras(path)
    else:
        tensors = read_state_dict(path)
        chosen = None if source == "auto" else {naming.label: naming for naming in TORCH_SOURCES}[source]
        naming = _checked_torch_naming(tensors, chosen)
    spec = model_spec(variant)
    spec = model_spec(spec, num_classes=classifier_classes(tensors, spec, naming) or spec.num_classes)
    if kind == "keras":
        source, variables = "keras", _import_keras_tensors(tensors, spec, naming)
    else:
        source, variables = naming.label, import_tensors(tensors, spec, naming)
    training = weights_training(name, spec.num_classes) if training is None else training
    normalization = weights_normalization(spec, is_advprop(name) if advprop is None else advprop, training)
    return ImportedWeights(
        variables, source, normalization, path, spec, training, official_eval_preprocessing(spec, training)
    )


# --- Command line: published weights to a checkpoint eval.py reads ---------------------------------


def write_checkpoint(
    variables: Variables,
    variant: str,
    out_dir: PathLike,
    normalization: scaling.InputNormalization | None = None,
    eval_preprocessing: str | None = None,
) -> str:
    """Saves imported weights as training's step-0 checkpoint (`<out_dir>/checkpoints/0/{state,model}`)
    and returns its step directory. The TrainState holds the weights both as the raw and as the EMA
    variables, so `eval.py --weights=ema` (the default) and `--weights=raw` agree, with a fresh
    RMSProp state of the reference recipe so the tree has training's structure. The model record
    holds the variant with the classifier's number of classes, `normalization`, the inputs these
    weights expect (None: those of the variant's baseline), and `eval_preprocessing`, how they were
    evaluated (None: `official_eval_preprocessing` of ImageNet weights), with the reference's crop
    padding: evaluation, fine-tuning and prediction then follow them."""
    from configs import default  # the recipe and the train state only for this command, not for importing weights
    from efficientnet_jax import checkpointing, optim, steps

    config = default.get_config()
    schedule = optim.learning_rate_schedule(
        optim.scaled_learning_rate(config.base_learning_rate, config.batch_size),
        steps_per_epoch=1,  # any schedule gives the same initial state; only its structure matters
        warmup_epochs=config.warmup_epochs,
        decay_factor=config.lr_decay_factor,
        decay_epochs=config.lr_decay_epochs,
    )
    state = steps.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=optim.rmsprop(schedule, config).init(variables["params"]),
        ema_params=variables["params"],
        ema_batch_stats=variables["batch_stats"],
    )
    spec = model_spec(variant, num_classes=int(np.shape(variables["params"]["classifier"]["bias"])[0]))
    if normalization is None:
        normalization = weights_normalization(spec)
    record = checkpointing.ModelRecord.of(
        spec,
        normalization,
        checkpointing.REFERENCE_EVAL_CROP_PADDING,
        eval_preprocessing=eval_preprocessing or official_eval_preprocessing(spec),
    )
    checkpointer = checkpointing.Checkpointer(os.path.join(out_dir, "checkpoints"), max_to_keep=1, asynchronous=False)
    checkpointer.save(0, state, record)
    checkpointer.close()
    return os.path.join(checkpointer.directory, "0")


def next_step(imported: ImportedWeights, out_dir: PathLike) -> str:
    """What to do with the checkpoint written: the eval.py command that evaluates it as the official
    code evaluated the weights, or, for a classifier of other classes than ImageNet's (ImageNet-21k's),
    prediction and fine-tuning."""
    checkpoint = os.path.abspath(out_dir)
    if imported.spec.num_classes != scaling.variant_spec(imported.spec.name).num_classes:
        return (
            f"Its classifier has {imported.spec.num_classes} classes, not ImageNet's: classify images with "
            f"python predict.py --checkpoint={checkpoint}, or fine-tune from it (config.init_checkpoint)."
        )
    command = (
        f"python eval.py --config=configs/imagenet.py:{canonical_variant(imported.spec.name).removeprefix('efficientnet-')} "
        f"--checkpoint={checkpoint}"
    )
    if imported.eval_preprocessing != official_eval_preprocessing(imported.spec):
        command += f" --config.eval_preprocessing={imported.eval_preprocessing}"
    return f"Evaluate it with: {command}"


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m efficientnet_jax.pretrained <weights file | hf-hub:repo> <variant> <out_dir> [--source=...]
    [--advprop] [--training=...] [--normalization=...]`."""
    import argparse

    from efficientnet_jax import console  # here, not at the top: it imports TensorFlow, for the entry points

    parser = argparse.ArgumentParser(
        prog="python -m efficientnet_jax.pretrained",
        description="Convert timm, efficientnet_pytorch or Keras EfficientNet weights into a checkpoint "
        "that eval.py evaluates, with the input normalisation the weights expect.",
    )
    parser.add_argument(
        "weights",
        help="a .safetensors/.pth (timm, efficientnet_pytorch) or .h5/.weights.h5 (Keras) file, or "
        f"{HUB_PREFIX}<repo id> (e.g. {HUB_PREFIX}timm/tf_efficientnet_b0.ns_jft_in1k)",
    )
    parser.add_argument(
        "variant",
        help="b0..b8, l2, lite0..lite4, edgetpu-s/m/l, v2-b0..v2-b3, v2-s/m/l/xl (or efficientnet-b0..)",
    )
    parser.add_argument(
        "out_dir", help="new or empty directory; the checkpoint goes to <out_dir>/checkpoints/0"
    )
    parser.add_argument(
        "--source",
        choices=("auto", *SOURCES),
        default="auto",
        help="default: from the file (suffix, tensor names)",
    )
    parser.add_argument(
        "--advprop",
        action="store_true",
        help="AdvProp weights (inputs in [-1, 1]) under a name that does not say so "
        "(recognised: hub tags ap_in1k, files adv-efficientnet-* and tf_efficientnet_*_ap-*)",
    )
    parser.add_argument(
        "--training",
        choices=TRAININGS,
        help="what EfficientNetV2 weights were trained on, under a name that does not say so (recognised: "
        "hub tags in21k, in21k_ft_in1k, timm's files tf_efficientnetv2_*_21k-*, *_21ft1k-*; a 21843-class "
        "classifier is in21k); it sets their normalisation and eval preprocessing",
    )
    parser.add_argument(
        "--normalization",
        choices=tuple(scaling.NAMED_NORMALIZATIONS),
        help="override the input normalisation written with the weights (default: what they were trained with)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    # WeightImportError named here: run as `python -m`, this module is __main__, not the one console.py knows.
    # ValueError: an unknown variant name; OSError: an unreadable file or an unwritable out_dir.
    with console.user_errors_as_one_line(parser.prog, WeightImportError, ValueError, OSError):
        if os.path.exists(args.out_dir) and (not os.path.isdir(args.out_dir) or os.listdir(args.out_dir)):
            raise WeightImportError(f"{args.out_dir} exists and is not empty; choose a new out_dir.")
        imported = import_weights(
            args.weights,
            args.variant,
            source=args.source,
            advprop=args.advprop or None,
            training=args.training,
        )
        normalization = scaling.NAMED_NORMALIZATIONS[args.normalization] if args.normalization else imported.normalization
        step_directory = write_checkpoint(
            imported.variables,
            args.variant,
            args.out_dir,
            normalization=normalization,
            eval_preprocessing=imported.eval_preprocessing,
        )
    print(
        f"Wrote {step_directory} from {imported.source} weights ({imported.file}), inputs normalised as "
        f"{scaling.describe_normalization(normalization)}. {imported.spec.num_classes} classes, eval "
        f"preprocessing {imported.eval_preprocessing}. {next_step(imported, args.out_dir)}"
    )


if __name__ == "__main__":
    main()
