"""Import ImageNet weights released for other frameworks into our `{"params", "batch_stats"}`.

Two sources, both ports of the official TensorFlow checkpoints:

* timm's `tf_efficientnet_b0` .. `b7`, `tf_efficientnet_lite0` .. `lite4` and `tf_efficientnet_es` /
  `em` / `el` (EdgeTPU S, M, L) (`from_timm`): a PyTorch state dict, a `.safetensors` file, or, when
  torch is installed, a `.pth` / `.bin` file.
* Keras applications' `EfficientNetB0` .. `B7` (`from_keras`): a legacy `.h5` file (the released
  weights, or `model.save("x.h5")`), a Keras 3 `.weights.h5` file, or an in-memory `keras.Model`.

Every source tensor must land in exactly one of our parameters with the right shape and every one
of our parameters must be filled; anything else raises `WeightImportError` naming the tensors, and,
when the file fits another variant completely, names that variant. The mapping is data: a list of
our weighted layers in network order (`network_layers`), and per source a rule naming the tensors of
each layer and a rule converting their layout.

Inputs. Our model takes `(pixels - 255 * IMAGENET_MEAN) / (255 * IMAGENET_STD)` with RGB pixels in
[0, 255] (our input pipeline's `normalize`), and the converted weights of either source expect
exactly that:

* timm's `tf_efficientnet_*` configs normalise [0, 1] images with the same ImageNet mean and std.
* Keras's EfficientNet takes raw [0, 255] pixels and normalises inside the model: `Rescaling(1/255)`,
  then `Normalization(mean, variance)` computing `(x - mean) / sqrt(variance)`, then, only when built
  with `weights="imagenet"`, `Rescaling(1 / sqrt(std))`. The released files store the *standard
  deviation* in `variance` (tensorflow/tensorflow#49930), and the last layer compensates, so the
  whole front-end computes `(x / 255 - mean) / std`: exactly our normalisation. `from_keras` drops
  the front-end (it holds statistics, not learned weights) after checking that they are ImageNet's,
  with `variance` either the std (released files) or the std squared (a correctly configured
  `Normalization`). A Keras model built with `weights=None` that then loads a released file lacks the
  compensating layer and divides by `sqrt(std)`: that is Keras's quirk, not the network's intent.

The Lite and EdgeTPU weights are the exception: the official models were trained on `(pixels - 127) /
128` (`scaling.EDGE_NORMALIZATION`, recorded in their baselines), and timm's ports of them normalise
with mean and std 0.5 of [0, 1] pixels, `(pixels - 127.5) / 127.5`, close to it. Feed our model
`(pixels - 127) / 128` for these weights, not ImageNet-normalised images: the input pipeline does not
do so yet. The official EdgeTPU checkpoints have 1,001 classes (index 0: background), timm's ports
1,000, as our variants.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Union

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
    fused: bool = False  # Fused-MBConv, timm's EdgeResidual


@dataclasses.dataclass(frozen=True)
class Layer:
    """One weighted layer of our network."""

    path: tuple[str, ...]  # module path in our tree, e.g. ("block_3", "se", "reduce")
    kind: str  # a key of LEAVES
    role: str  # source-independent name: "stem_conv", "expand_bn", "se_reduce", "classifier", ...
    block: Optional[BlockPosition] = None


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
            position = BlockPosition(stage_index, repeat, expands=stage.expand_ratio != 1, fused=stage.fused)
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


@functools.lru_cache(maxsize=None)
def target_shapes(variant: str) -> Mapping[tuple[str, ...], tuple[tuple[int, ...], Any]]:
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
_TIMM_LEAF = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}

_KERAS_TOP = {
    "stem_conv": "stem_conv",
    "stem_bn": "stem_bn",
    "head_conv": "top_conv",
    "head_bn": "top_bn",
    "classifier": "predictions",
}
_KERAS_BLOCK = {"depthwise_conv": "dwconv", "depthwise_bn": "bn"}  # other roles keep their name
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
        names = _TIMM_EDGE_RESIDUAL
    else:
        names = _TIMM_INVERTED_RESIDUAL if layer.block.expands else _TIMM_DEPTHWISE_SEPARABLE
    return f"blocks.{layer.block.stage}.{layer.block.repeat}.{names[layer.role]}"


def _keras_layer_name(layer: Layer) -> str:
    if layer.block is None:
        return _KERAS_TOP[layer.role]
    letter = chr(ord("a") + layer.block.repeat)
    return f"block{layer.block.stage + 1}{letter}_{_KERAS_BLOCK.get(layer.role, layer.role)}"


def _keras_variable_name(kind: str, leaf: str) -> str:
    if leaf == "bias":
        return "beta" if kind == "bn" else "bias"
    return _KERAS_LEAF[leaf]


def timm_keys(layers: Sequence[Layer]) -> Expected:
    """State-dict keys, e.g. 'blocks.1.0.conv_pw.weight'."""
    return {
        f"{_timm_layer_name(layer)}.{_TIMM_LEAF[leaf]}": (layer, collection, leaf)
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
    permutation takes a depthwise (C, 1, k, k) to our (k, k, 1, C). Linear is (out, in)."""
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
    targets = target_shapes(canonical_variant(variant))
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


def import_tensors(tensors: Mapping[str, np.ndarray], variant: str, source: SourceFormat) -> Variables:
    """`{"params", "batch_stats"}` for `variant` from source tensors named and laid out as `source`."""
    filled, problems = _match(tensors, variant, source)
    if problems:
        message = f"Cannot import {source.label} weights into {canonical_variant(variant)}:\n  "
        message += "\n  ".join(problems)
        others = [v for v in guess_variants(tensors, source) if v != canonical_variant(variant)]
        if others:
            message += f"\n  The weights look like {' or '.join(others)}."
        raise WeightImportError(message)
    return traverse_util.unflatten_dict({key: jnp.asarray(array) for key, array in filled.items()})


# --- timm -----------------------------------------------------------------------------------------


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


def read_timm(state_dict_or_path: Union[Mapping[str, Any], PathLike]) -> dict[str, np.ndarray]:
    """A timm state dict as numpy arrays, without the BatchNorm `num_batches_tracked` counters: they
    only drive timm's cumulative-average momentum, which inference never uses."""
    if isinstance(state_dict_or_path, Mapping):
        state_dict = state_dict_or_path
    elif os.fspath(state_dict_or_path).endswith(".safetensors"):
        state_dict = _load_safetensors(state_dict_or_path)
    else:
        state_dict = _load_torch_file(state_dict_or_path)
    return {
        key: _to_numpy(value) for key, value in state_dict.items() if not key.endswith(".num_batches_tracked")
    }


def from_timm(state_dict_or_path: Union[Mapping[str, Any], PathLike], variant: str) -> Variables:
    """`{"params", "batch_stats"}` for `variant` from timm's `tf_efficientnet_{b0..b7}`,
    `tf_efficientnet_lite{0..4}` or `tf_efficientnet_{es,em,el}` (EdgeTPU S, M, L) weights: a state
    dict of torch tensors or numpy arrays, a `.safetensors` file, or a torch `.pth`/`.bin` file."""
    return import_tensors(read_timm(state_dict_or_path), variant, TIMM)


# --- Keras ----------------------------------------------------------------------------------------

_KERAS_FRONT_END = re.compile(
    r"^(?:normalization(?:_\d+)?/(mean|variance|count)|layers/normalization/vars/([012]))$"
)
_POSITIONAL_FRONT_END = ("mean", "variance", "count")


def _keras_short_name(weight_name: str) -> str:
    """'block1a_dwconv/depthwise_kernel:0' (Keras 2) and 'kernel' (Keras 3) to one spelling."""
    name = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
    return "kernel" if name == "depthwise_kernel" else name


def _decoded(name: Union[str, bytes]) -> str:
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
    """`{"params", "batch_stats"}` for `variant` from Keras's `EfficientNetB0`..`B7`: a legacy `.h5` or
    Keras 3 `.weights.h5` path, or an in-memory `keras.Model`. Keras's input front-end is dropped
    (see the module docstring); with `check_front_end` its statistics must be ImageNet's."""
    tensors, source = read_keras(path_or_model)
    front_end, network = _split_front_end(tensors)
    variables = import_tensors(network, variant, source)  # first: the wrong variant is the bigger news
    if check_front_end:
        check_keras_front_end(front_end)
    return variables


# --- Command line: published weights to a checkpoint eval.py reads ---------------------------------

_SOURCE_SUFFIXES = {"timm": (".safetensors", ".pth", ".pt", ".bin"), "keras": (".h5",)}


def source_of(path: PathLike) -> str:
    """'timm' or 'keras', from the file name (released files keep their usual suffixes)."""
    for source, suffixes in _SOURCE_SUFFIXES.items():
        if os.fspath(path).endswith(suffixes):
            return source
    accepted = ", ".join(suffix for suffixes in _SOURCE_SUFFIXES.values() for suffix in suffixes)
    raise WeightImportError(
        f"{os.fspath(path)} is not a weights file this converter reads ({accepted}): timm's "
        f"tf_efficientnet_b*, _lite* or _es/_em/_el (.safetensors, or .pth with torch) or Keras's "
        f"EfficientNetB* (.h5, .weights.h5)."
    )


def write_checkpoint(
    variables: Variables,
    variant: str,
    out_dir: PathLike,
    normalization: scaling.InputNormalization | None = None,
) -> str:
    """Saves imported weights as training's step-0 checkpoint (`<out_dir>/checkpoints/0/{state,model}`)
    and returns its step directory. The TrainState holds the weights both as the raw and as the EMA
    variables, so `eval.py --weights=ema` (the default) and `--weights=raw` agree, with a fresh
    RMSProp state of the reference recipe so the tree has training's structure. The model record
    holds `normalization`, the inputs these weights expect (None: those of the variant's baseline),
    which evaluation, fine-tuning and prediction then follow, and the reference's eval crop."""
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
    checkpointer = checkpointing.Checkpointer(os.path.join(out_dir, "checkpoints"), max_to_keep=1, asynchronous=False)
    if normalization is None:
        normalization = scaling.get_baseline(scaling.variant_coefficients(variant).baseline).normalization
    checkpointer.save(0, state, checkpointing.ModelRecord.of(model_spec(variant), normalization))
    checkpointer.close()
    return os.path.join(checkpointer.directory, "0")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python -m efficientnet_jax.pretrained <weights file> <variant> <out_dir> [--source=...]`."""
    import argparse

    from efficientnet_jax import console  # here, not at the top: it imports TensorFlow, for the entry points

    parser = argparse.ArgumentParser(
        prog="python -m efficientnet_jax.pretrained",
        description="Convert timm or Keras EfficientNet weights into a checkpoint that eval.py evaluates.",
    )
    parser.add_argument("weights_file", help="timm .safetensors/.pth, or Keras .h5/.weights.h5")
    parser.add_argument("variant", help="b0..b7, lite0..lite4, edgetpu-s/m/l (or efficientnet-b0..)")
    parser.add_argument("out_dir", help="new or empty directory; the checkpoint goes to <out_dir>/checkpoints/0")
    parser.add_argument("--source", choices=("auto", "timm", "keras"), default="auto", help="default: from the suffix")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    # WeightImportError named here: run as `python -m`, this module is __main__, not the one console.py knows.
    # ValueError: an unknown variant name; OSError: an unreadable file or an unwritable out_dir.
    with console.user_errors_as_one_line(parser.prog, WeightImportError, ValueError, OSError):
        if os.path.exists(args.out_dir) and (not os.path.isdir(args.out_dir) or os.listdir(args.out_dir)):
            raise WeightImportError(f"{args.out_dir} exists and is not empty; choose a new out_dir.")
        if not os.path.isfile(args.weights_file):
            raise WeightImportError(f"{args.weights_file} is not a file.")
        source = source_of(args.weights_file) if args.source == "auto" else args.source
        variables = (from_timm if source == "timm" else from_keras)(args.weights_file, args.variant)
        step_directory = write_checkpoint(variables, args.variant, args.out_dir)
    print(
        f"Wrote {step_directory}. Evaluate it with: python eval.py --config=configs/imagenet.py:"
        f"{canonical_variant(args.variant).removeprefix('efficientnet-')} --checkpoint={os.path.abspath(args.out_dir)}"
    )


if __name__ == "__main__":
    main()
