"""Any source, from a file or a Hugging Face hub repository (`hf-hub:timm/tf_efficientnet_b0.ns_jft_in1k`,
through `huggingface_hub`'s cache): the naming recognised from the file (`source="auto"`), the number
of classes from the classifier (21,843 for ImageNet-21k weights), and from the weights' published
name which release they are, so which input normalisation they expect and how the official code
evaluated them (provenance.py).
"""

from __future__ import annotations

import dataclasses
import os
import re

from efficientnet_jax import scaling
from efficientnet_jax.model import model_spec
from efficientnet_jax.normalizations import InputNormalization
from efficientnet_jax.pretrained.keras_files import _import_keras_tensors, read_keras
from efficientnet_jax.pretrained.mapping import (
    PathLike,
    Variables,
    WeightImportError,
    classifier_classes,
    import_tensors,
)
from efficientnet_jax.pretrained.state_dicts import TORCH_SOURCES, _checked_torch_naming, read_state_dict
from efficientnet_jax.provenance import (
    IMAGENET_21K_CLASSES,
    IN1K,
    IN21K,
    IN21K_FT_IN1K,
    TRAININGS,
    official_eval_preprocessing,
    weights_normalization,
)

HUB_PREFIX = "hf-hub:"
HUB_FILE = "model.safetensors"  # where timm's hub repositories keep their weights
_TORCH_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_KERAS_SUFFIXES = (".h5",)
SOURCES = ("timm", "efficientnet_pytorch", "keras")
_ADVPROP_FILE = re.compile(r"adv-efficientnet-|tf_efficientnet_\w+_ap-")


def hub_tag(name: str) -> str:
    """The weight tag of a hub name ('ap_in1k' for 'hf-hub:timm/tf_efficientnet_b0.ap_in1k'),
    '' without one."""
    return name.rsplit("/", 1)[-1].partition(".")[2]


@dataclasses.dataclass(frozen=True)
class ImportedWeights:
    """Weights converted for one variant, and how the images they see must be cropped, resized and
    normalised."""

    variables: Variables
    source: str  # the naming read: one of SOURCES
    normalization: InputNormalization
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
        return hub_tag(name).split("_")[0] == "ap"
    return _ADVPROP_FILE.match(os.path.basename(name)) is not None


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
        tag = hub_tag(name)
        return tag if tag in TRAININGS else IN1K
    base = os.path.basename(name)
    if _IN21K_FT_IN1K_FILE.match(base):
        return IN21K_FT_IN1K
    if _IN21K_FILE.match(base):
        return IN21K
    return IN1K


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
        f"{path} is not a weights file this converter reads "
        f"({', '.join(_TORCH_SUFFIXES + _KERAS_SUFFIXES)}): "
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
