"""Fine-tuning: a new training job's initial weights, read from another checkpoint (config.init_checkpoint).

The checkpoint is a training workdir, one of its step directories, or the output of `python -m
efficientnet_jax.pretrained`, holding the same network (variant, width, depth) trained on another
dataset. Its backbone (every parameter but the classifier) and its batch-norm statistics replace
the new job's random ones; the classifier stays the new, randomly initialised one for the job's own
classes unless `config.keep_classifier` (the same classes, e.g. ImageNet at a higher resolution).
Only the chosen weights are read (`checkpointing.read_variables`: EMA or raw, no optimizer state), so
the source's optimizer and number of classes do not matter. The step, the optimizer state and the
learning-rate schedule start afresh; the EMA starts at the loaded weights. The input normalisation the
checkpoint's weights were trained with comes along: unless the config sets one, the new job feeds
the network the inputs it learnt on (configuration.resolve_input_normalization).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from efficientnet_jax import checkpointing, optim
from efficientnet_jax.checkpointing import CheckpointError, complete_saved_spec, spec_to_json
from efficientnet_jax.normalizations import IMAGENET_NORMALIZATION, InputNormalization
from efficientnet_jax.scaling import ModelSpec

# The ModelSpec fields that shape the backbone's variables (checkpointing.check_same_model's, less
# num_classes, which only shapes the classifier).
BACKBONE_FIELDS = (
    "width",
    "depth",
    "stages",
    "stem_filters",
    "head_filters",
    "fix_head_stem",
    "min_filters_fraction",
)

Variables = dict[str, Any]


def describe_backbone(description: dict[str, Any]) -> str:
    return f"{description.get('name')} (width {description.get('width')}, depth {description.get('depth')})"


def check_same_backbone(saved: dict[str, Any], spec: ModelSpec, where: str) -> None:
    """The checkpoint's network must be the config's, up to the number of classes."""
    expected, saved = spec_to_json(spec), complete_saved_spec(saved)
    mismatched = [field for field in BACKBONE_FIELDS if saved[field] != expected[field]]
    if mismatched:
        raise CheckpointError(
            f"config.init_checkpoint={where} holds {describe_backbone(saved)}, but the config asks for "
            f"{describe_backbone(expected)} (differing: {', '.join(mismatched)}). Set "
            f"--config.model.variant (and model.width / model.depth) to the checkpoint's network, or point "
            f"config.init_checkpoint at a checkpoint of {expected['name']}."
        )


def read_pretrained(
    config: ml_collections.ConfigDict, spec: ModelSpec
) -> tuple[Variables, InputNormalization]:
    """The variables a new job takes from config.init_checkpoint: every parameter but the classifier
    (and the classifier too with `config.keep_classifier`) and the batch-norm statistics, of the
    `config.init_weights` weights, as host arrays; and the input normalisation they were trained
    with. Read by process 0 and broadcast to every host; a CheckpointError names what does not fit,
    before any model is compiled."""
    keep_classifier = config.keep_classifier

    def read() -> tuple[Variables, np.ndarray]:
        location = checkpointing.locate_checkpoint(config.init_checkpoint)
        where = location.step_directory
        record = checkpointing.read_model_record(where)
        check_same_backbone(record.spec, spec, where)
        source_classes = record.spec["num_classes"]
        if keep_classifier and source_classes != spec.num_classes:
            raise CheckpointError(
                f"config.keep_classifier needs the classes of config.init_checkpoint={where} "
                f"({source_classes}) to be the dataset's ({spec.num_classes}). Set "
                f"--config.keep_classifier=false to learn a new classifier."
            )
        source_spec = dataclasses.replace(spec, num_classes=source_classes)
        variables = checkpointing.read_variables(location, source_spec, config.init_weights)
        normalization = checkpointing.normalization_to_array(record.input_normalization)
        return transferred(variables, keep_classifier), normalization

    def like() -> tuple[Variables, np.ndarray]:
        shapes = transferred(checkpointing.abstract_variables(spec), keep_classifier)
        placeholder = checkpointing.normalization_to_array(IMAGENET_NORMALIZATION)
        return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), placeholder

    variables, normalization = checkpointing.on_coordinator(read, like)
    return variables, checkpointing.normalization_from_array(normalization)


def transferred(variables: Variables, keep_classifier: bool) -> Variables:
    """The part of a checkpoint's variables a fine-tuning job takes (see `read_pretrained`)."""
    params = {
        name: value
        for name, value in variables["params"].items()
        if keep_classifier or name != optim.CLASSIFIER
    }
    return {"params": params, "batch_stats": variables["batch_stats"]}


def start_from(state: Any, pretrained: Variables, tx: optax.GradientTransformation) -> Any:
    """A fresh train state (step 0, random weights) with `pretrained` replacing its variables, as the
    raw and the EMA weights, and the optimizer state initialised for the result. The initialisation
    is one jitted program: eagerly, every leaf shape of the optimizer's slots compiled its own
    (50 for the tiny test network)."""
    params = {**state.params, **pretrained["params"]}
    return state.replace(
        params=params,
        batch_stats=pretrained["batch_stats"],
        opt_state=jax.jit(tx.init)(params),
        ema_params=params,
        ema_batch_stats=pretrained["batch_stats"],
    )
