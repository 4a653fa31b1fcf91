"""The train state and the pure, pmapped train and eval steps.

Below the jobs (trainer.py, evaluation.py) and above the model: it imports neither TensorFlow nor
the input pipeline nor any metric writer, so the steps can be built, timed and tested on a machine
that has only JAX, Flax and optax (benchmarks/, the accelerator suite).

The steps take the host's pixels as they are, uint8 [devices, per_device, S, S, 3] (a quarter of the
bytes of float32 inputs to copy to the devices), and make the network's inputs themselves: the
training augmentation when config.augment_on_device (`augment_on_device`), then the normalisation the
weights expect (`normalize`), then the model's compute dtype (the model casts).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import flax
import flax.jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax

from efficientnet_jax import augment_policies, device_augment, optim
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.normalizations import InputNormalization

AXIS_NAME = "batch"


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any  # exponential moving averages, used for evaluation as in the reference
    ema_batch_stats: Any


def create_train_state(
    rng: jax.Array, model: EfficientNet, image_size: int, tx: optax.GradientTransformation
) -> TrainState:
    """Initial state on the host; the EMA starts at the initial values (TF's moving averages do)."""

    @jax.jit
    def init(rng):
        variables = model.init(rng, jnp.zeros((1, image_size, image_size, 3), jnp.float32))
        params, batch_stats = variables["params"], variables["batch_stats"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            ema_params=params,
            ema_batch_stats=batch_stats,
        )

    return init(rng)


def cross_entropy(
    logits: jax.Array, labels: jax.Array, num_classes: int, label_smoothing: float
) -> jax.Array:
    """Per-example softmax cross-entropy in float32 with TF-style label smoothing.

    `labels` are class ids [N] or, from Mixup/CutMix (batch_mixing.py), probabilities [N, num_classes];
    either is smoothed here, as the official EfficientNetV2 loss smooths its mixed labels.
    """
    probabilities = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
    targets = optax.smooth_labels(probabilities, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def hard_labels(labels: jax.Array) -> jax.Array:
    """Class ids of labels [N] or probabilities [N, K]: a mixed example counts as its largest share
    (Mixup's own image, weight >= 1/2; CutMix's larger area), ties to the lower class id."""
    return jnp.argmax(labels, -1) if labels.ndim == 2 else labels


def normalization_table(normalization: InputNormalization) -> np.ndarray:
    """float32 [256, 3]: `(pixel - mean) / std` of every pixel value in every channel, computed on the
    host in IEEE float32 as the host pipeline computed each pixel before the steps took uint8."""
    pixels = np.arange(256, dtype=np.float32)[:, None]
    return (pixels - np.asarray(normalization.mean, np.float32)) / np.asarray(normalization.std, np.float32)


def normalize(images: jax.Array, normalization: InputNormalization) -> jax.Array:
    """uint8 pixels [..., 3] to the float32 inputs the weights were trained on, `(pixels - mean) / std`
    per channel (which mean and std is part of the weights: configuration.resolve_input_normalization).

    Looked up in `normalization_table` rather than computed: XLA rewrites a division by a per-channel
    value into a multiplication by its reciprocal (constant or not), which is one unit in the last
    place off the true quotient for about a quarter of the pixels, and a train step on those inputs
    then differs from the step on the host-normalised ones in some parameters. The lookup gives the
    host's bits exactly (tests/test_train.py).
    Mixup/CutMix batches arrive as blended float32 pixels in [0, 255], which are not table entries:
    those are normalised arithmetically."""
    if images.dtype != jnp.uint8:
        mean, std = (jnp.asarray(values, jnp.float32) for values in (normalization.mean, normalization.std))
        return (images.astype(jnp.float32) - mean) / std
    table = jnp.asarray(normalization_table(normalization))
    return table[images.astype(jnp.int32), jnp.arange(3)]


def step_rngs(rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
    """This device's keys for this step: folded with the step (so a resumed job replays the same
    draws) and with the device's index (so replicas draw different masks). Call under pmap."""
    key = jax.random.fold_in(jax.random.fold_in(rng, step), lax.axis_index(AXIS_NAME))
    dropout_rng, drop_path_rng = jax.random.split(key)
    return {"dropout": dropout_rng, "drop_path": drop_path_rng}


def augment_on_device(
    images: jax.Array, rng: jax.Array, step: jax.Array, config: ml_collections.ConfigDict
) -> jax.Array:
    """The random flip and config.augment (device_augment.augment_batch) of this device's uint8 shard,
    in place of the host's (input_pipeline.train_image). Call under pmap.

    Each example's draws come from (rng, this host, step, its index in the host's batch): the index is
    the device's position among the host's devices times the per-device batch plus the position in the
    shard, as the host pipeline lays its batch out, so a job resumed at step s replays the same
    augmentations, and hosts draw differently as their pipelines do. The key is a split of `rng`, apart
    from the dropout and stochastic-depth keys folded from `rng` itself (`step_rngs`)."""
    _, augmentation_rng = jax.random.split(rng)
    host_key = jax.random.fold_in(augmentation_rng, jax.process_index())
    per_device = images.shape[0]
    local_device = lax.axis_index(AXIS_NAME) % jax.local_device_count()
    keys = device_augment.example_keys(host_key, step, local_device * per_device + jnp.arange(per_device))
    return device_augment.augment_batch(
        images,
        keys,
        config.augment,
        config.randaugment_num_layers,
        config.randaugment_magnitude,
        augment_policies.randaugment_constants(config),
    )


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: EfficientNet,
    tx: optax.GradientTransformation,
    learning_rate_fn: optax.Schedule,
    config: ml_collections.ConfigDict,
    rng: jax.Array,
    normalization: InputNormalization,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on one device's shard of uint8 images (augmented here when
    config.augment_on_device); run under `jax.pmap(axis_name='batch')`.

    Batch-norm statistics are reduced inside the model, across all replicas (its BN axis_name) or
    within its replica groups (`batch_norm_axis_index_groups`); the gradients here with `pmean` over
    all replicas. With one group, N devices compute what one device would on the whole batch.
    Each device draws its own dropout/stochastic-depth masks (`step_rngs`).

    With several groups, each replica's moving statistics would follow its own group's batches; the
    official code keeps them apart and saves (and so evaluates) replica 0's. Here every replica takes
    replica 0's updated moving statistics and their EMA (`from_first_replica`) at every step. Nothing in
    training reads them (batch norm normalises with the batch's statistics), so parameters, optimizer
    state and replica 0's statistics are what the official code computes, and the state stays identical
    on every replica: a checkpoint holds replica 0's statistics from any host, eval on every device uses
    them as the official eval does, and a resumed job (the checkpoint replicated) continues bit for bit.
    """
    num_classes = model.spec.num_classes
    images = batch["image"]
    if config.augment_on_device:
        images = augment_on_device(images, rng, state.step, config)
    images = normalize(images, normalization)

    def loss_fn(params):
        logits, new_model_state = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs=step_rngs(rng, state.step),
        )
        data_loss = jnp.mean(cross_entropy(logits, batch["label"], num_classes, config.label_smoothing))
        loss = data_loss + config.weight_decay * optim.l2_penalty(params)
        return loss, (data_loss, logits, new_model_state["batch_stats"])

    (loss, (data_loss, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if model.batch_norm_axis_index_groups is not None:
        batch_stats = from_first_replica(batch_stats)
    grads = lax.pmean(grads, AXIS_NAME)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    # The reference's EMA warm-up: the decay is small for the first steps.
    ema_decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=optax.incremental_update(params, state.ema_params, 1.0 - ema_decay),
        ema_batch_stats=optax.incremental_update(batch_stats, state.ema_batch_stats, 1.0 - ema_decay),
    )
    metrics = {
        "loss": loss,
        "cross_entropy": data_loss,
        "top1": jnp.mean(jnp.argmax(logits, -1) == hard_labels(batch["label"])),
        "learning_rate": learning_rate_fn(state.step),
        "grad_norm": optax.tree_utils.tree_norm(grads),
        # 1.0 when every float of the updated state is finite: fetched with the metrics, so a state
        # whose update overflowed is never saved (the loss above is of the state before the update).
        "state_finite": all_finite(new_state),
    }
    return new_state, lax.pmean(metrics, AXIS_NAME)


def from_first_replica(tree: Any) -> Any:
    """Replica 0's values on every replica, exactly: a sum of replica 0's values and the others' zeros.
    Call under pmap."""
    is_first = lax.axis_index(AXIS_NAME) == 0
    return jax.tree.map(lambda x: lax.psum(jnp.where(is_first, x, jnp.zeros_like(x)), AXIS_NAME), tree)


def all_finite(tree: Any) -> jax.Array:
    """1.0 if no floating-point leaf of `tree` holds a NaN or an infinity, else 0.0."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])).astype(jnp.float32)


def eval_step(
    variables: dict[str, Any],
    batch: dict[str, jax.Array],
    *,
    model: EfficientNet,
    normalization: InputNormalization,
) -> dict[str, jax.Array]:
    """Sums of loss, top-1/top-5 hits and real examples (padding masked out) over all devices, for a
    batch of uint8 images normalised here with `normalization`."""
    logits = model.apply(variables, normalize(batch["image"], normalization), train=False)
    labels, mask = batch["label"], batch["mask"]
    num_classes = model.spec.num_classes
    loss = cross_entropy(logits, labels, num_classes, 0.0)
    _, top5 = lax.top_k(logits, min(5, num_classes))
    sums = {
        "loss": jnp.sum(loss * mask),
        "top1": jnp.sum((top5[:, 0] == labels) * mask),
        "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        "num_examples": jnp.sum(mask),
    }
    return lax.psum(sums, AXIS_NAME)


def evaluate(
    p_eval_step: Callable, variables: dict[str, Any], batches: Iterator[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Runs a full pass; every example counted once (the pipeline pads and masks the last batch)."""
    totals = None
    for batch in batches:
        sums = p_eval_step(variables, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.tree.map(lambda x: float(x[0]), jax.device_get(totals))
    count = totals["num_examples"]
    return {
        "top1": totals["top1"] / count,
        "top5": totals["top5"] / count,
        "loss": totals["loss"] / count,
        "num_examples": int(count),
    }


def pmap_train_step(
    model: EfficientNet,
    tx: optax.GradientTransformation,
    learning_rate_fn: optax.Schedule,
    config: ml_collections.ConfigDict,
    rng: jax.Array,
    normalization: InputNormalization,
    devices: list | None = None,
) -> Callable:
    """`train_step` pmapped over the devices, the state's buffers donated (updated in place); the
    normalisation is a constant of the compiled step."""
    step = functools.partial(
        train_step,
        model=model,
        tx=tx,
        learning_rate_fn=learning_rate_fn,
        config=config,
        rng=rng,
        normalization=normalization,
    )
    return jax.pmap(step, axis_name=AXIS_NAME, donate_argnums=(0,), devices=devices)


def pmap_eval_step(
    model: EfficientNet, normalization: InputNormalization, devices: list | None = None
) -> Callable:
    """`eval_step` pmapped over the devices, the normalisation a constant of the compiled step."""
    step = functools.partial(eval_step, model=model, normalization=normalization)
    return jax.pmap(step, axis_name=AXIS_NAME, devices=devices)


def replicate(tree: Any, devices: list | None = None) -> Any:
    """Copies a host tree to every device, laid out exactly as pmap's outputs are.

    `flax.jax_utils.replicate` alone gives arrays sharded over a differently named mesh, so the
    second train step (fed the first step's outputs) would compile the whole step again. It is given
    host arrays: it stacks and splits those with numpy, where device arrays would compile a stack and a
    slice program per leaf shape (102 programs for the tiny test network).
    """
    replicated = flax.jax_utils.replicate(jax.device_get(tree), devices)
    return jax.pmap(lambda x: x, axis_name=AXIS_NAME, devices=devices)(replicated)


def unreplicate(tree: Any) -> Any:
    """The first local device's copy of a replicated tree, as host (numpy) arrays.

    Reads the local shard directly: indexing a multi-process array would run a computation that
    every host must join, and hosts reach this point at different times. The reshape is numpy's:
    on device it would compile one program per parameter shape."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data).reshape(x.shape[1:]), tree)
