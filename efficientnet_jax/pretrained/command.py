"""The converter's command line: published weights to a checkpoint that eval.py, predict.py and
fine-tuning read (`python -m efficientnet_jax.pretrained`, or `python convert_weights.py` in a checkout)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import optax

from efficientnet_jax import checkpointing, optim, scaling
from efficientnet_jax.model import model_spec
from efficientnet_jax.normalizations import NAMED_NORMALIZATIONS, InputNormalization, describe_normalization
from efficientnet_jax.pretrained.hub import HUB_PREFIX, SOURCES, ImportedWeights, import_weights
from efficientnet_jax.pretrained.mapping import PathLike, Variables, WeightImportError, canonical_variant
from efficientnet_jax.provenance import TRAININGS, official_eval_preprocessing, weights_normalization


def write_checkpoint(
    variables: Variables,
    variant: str,
    out_dir: PathLike,
    normalization: InputNormalization | None = None,
    eval_preprocessing: str | None = None,
) -> str:
    """Saves imported weights as training's step-0 checkpoint (`<out_dir>/checkpoints/0/{state,model}`,
    `checkpointing.write_weights`) with a fresh state of the reference's RMSProp, and returns its step
    directory. The model record holds the variant with the classifier's number of classes,
    `normalization`, the inputs these weights expect (None: those of the variant's ImageNet weights),
    and `eval_preprocessing`, how they were evaluated (None: `official_eval_preprocessing` of ImageNet
    weights), with the reference's crop padding: evaluation, fine-tuning and prediction then follow them."""
    spec = model_spec(variant, num_classes=int(np.shape(variables["params"]["classifier"]["bias"])[0]))
    record = checkpointing.ModelRecord.of(
        spec,
        normalization or weights_normalization(spec),
        checkpointing.REFERENCE_EVAL_CROP_PADDING,
        eval_preprocessing=eval_preprocessing or official_eval_preprocessing(spec),
    )
    # Any schedule gives the same initial state (a step count): only the state's structure matters.
    tx = optim.rmsprop(optax.constant_schedule(0.0), optim.REFERENCE_RMSPROP)
    return checkpointing.write_weights(variables, record, os.fspath(out_dir), tx)


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
        "python eval.py --config=configs/imagenet.py:"
        f"{canonical_variant(imported.spec.name).removeprefix('efficientnet-')} "
        f"--checkpoint={checkpoint}"
    )
    if imported.eval_preprocessing != official_eval_preprocessing(imported.spec):
        command += f" --config.eval_preprocessing={imported.eval_preprocessing}"
    return f"Evaluate it with: {command}"


def main(argv: Sequence[str] | None = None, prog: str = "python -m efficientnet_jax.pretrained") -> None:
    """`<prog> <weights file | hf-hub:repo> <variant> <out_dir> [--source=...] [--advprop] [--training=...]
    [--normalization=...]`: converts, writes the checkpoint, prints what was written and what to run next."""
    import argparse

    from efficientnet_jax import console  # here, not at the top: it imports TensorFlow, for the entry points

    parser = argparse.ArgumentParser(
        prog=prog,
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
        choices=tuple(NAMED_NORMALIZATIONS),
        help="override the input normalisation written with the weights "
        "(default: what they were trained with)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    # ValueError: an unknown variant name; OSError: an unreadable file or an unwritable out_dir.
    with console.user_errors_as_one_line(parser.prog, ValueError, OSError):
        if os.path.exists(args.out_dir) and (not os.path.isdir(args.out_dir) or os.listdir(args.out_dir)):
            raise WeightImportError(f"{args.out_dir} exists and is not empty; choose a new out_dir.")
        imported = import_weights(
            args.weights,
            args.variant,
            source=args.source,
            advprop=args.advprop or None,
            training=args.training,
        )
        normalization = (
            NAMED_NORMALIZATIONS[args.normalization] if args.normalization else imported.normalization
        )
        step_directory = write_checkpoint(
            imported.variables,
            args.variant,
            args.out_dir,
            normalization=normalization,
            eval_preprocessing=imported.eval_preprocessing,
        )
    print(
        f"Wrote {step_directory} from {imported.source} weights ({imported.file}), inputs normalised as "
        f"{describe_normalization(normalization)}. {imported.spec.num_classes} classes, eval "
        f"preprocessing {imported.eval_preprocessing}. {next_step(imported, args.out_dir)}"
    )
