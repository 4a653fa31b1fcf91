"""torch state dicts: timm's `tf_efficientnet_*` / `tf_efficientnetv2_*` ports and the
`efficientnet_pytorch` / `efficientnet-lite-pytorch` packages (`_conv_stem`, `_blocks.N._depthwise_conv`,
`_bn0`, `_fc`, ...), in memory, `.safetensors`, or `.pth` / `.bin` with torch. A state dict named in
none of these schemes is refused naming the schemes.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from efficientnet_jax import scaling
from efficientnet_jax.pretrained.mapping import (
    Expected,
    Layer,
    PathLike,
    SourceFormat,
    Variables,
    WeightImportError,
    _transpose,
    import_tensors,
    keys_by_name,
    network_layers,
)

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


def timm_keys(layers: Sequence[Layer]) -> Expected:
    """State-dict keys, e.g. 'blocks.1.0.conv_pw.weight'."""
    return keys_by_name(layers, lambda layer, leaf: f"{_timm_layer_name(layer)}.{_TORCH_LEAF[leaf]}")


def efficientnet_pytorch_keys(layers: Sequence[Layer]) -> Expected:
    """State-dict keys, e.g. '_blocks.1._expand_conv.weight'."""
    return keys_by_name(
        layers, lambda layer, leaf: f"{_efficientnet_pytorch_layer_name(layer)}.{_TORCH_LEAF[leaf]}"
    )


def timm_layout(kind: str, leaf: str, array: np.ndarray) -> np.ndarray:
    """torch convolutions are (out, in/groups, kh, kw); ours (kh, kw, in/groups, out): the same
    permutation takes a depthwise (C, 1, k, k) to our (k, k, 1, C). Linear is (out, in). The layout
    of every torch source (timm, efficientnet_pytorch)."""
    if leaf != "kernel":
        return array
    return _transpose(array, (1, 0) if kind == "dense" else (2, 3, 1, 0))


TIMM = SourceFormat("timm", timm_keys, timm_layout)
EFFICIENTNET_PYTORCH = SourceFormat("efficientnet_pytorch", efficientnet_pytorch_keys, timm_layout)

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

