"""The train state and the pure, pmapped train and eval steps.

Below the jobs (trainer.py, evaluation.py) and above the model: it imports neither TensorFlow nor
the input pipeline nor any metric writer, so the steps can be built, timed and tested on a machine
that has only JAX, Flax and optax (benchmarks/, the accelerator suite).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator, Optional

import flax
import flax.jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax

from efficientnet_jax import optim
from efficientnet_jax.model import EfficientNet

AXIS_NAME = "batch"


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any  # exponential moving averages, used for evaluation as in the reference
    ema_batch_stats: Any


def create_train_state(rng: jax.Array, model: EfficientNet, image_size: int, tx: optax.GradientTransformation) -> TrainState:
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


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
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


def step_rngs(rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
    """This device's keys for this step: folded with the step (so a resumed job replays the same
    draws) and with the device's index (so replicas draw different masks). Call under pmap."""
    key = jax.random.fold_in(jax.random.fold_in(rng, step), lax.axis_index(AXIS_NAME))
    dropout_rng, drop_path_rng = jax.random.split(key)
    return {"dropout": dropout_rng, "drop_path": drop_path_rng}


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: EfficientNet,
    tx: optax.GradientTransformation,
    learning_rate_fn: optax.Schedule,
    config: ml_collections.ConfigDict,
    rng: jax.Array,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on one device's shard; run under `jax.pmap(axis_name='batch')`.

    Batch-norm statistics are reduced across replicas inside the model (its BN axis_name), the
    gradients here with `pmean`, so N devices compute what one device would on the whole batch.
    Each device draws its own dropout/stochastic-depth masks (`step_rngs`).
    """
    num_classes = model.spec.num_classes

    def loss_fn(params):
        logits, new_model_state = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs=step_rngs(rng, state.step),
        )
        data_loss = jnp.mean(cross_entropy(logits, batch["label"], num_classes, config.label_smoothing))
        loss = data_loss + config.weight_decay * optim.l2_penalty(params)
        return loss, (data_loss, logits, new_model_state["batch_stats"])

    (loss, (data_loss, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
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


def all_finite(tree: Any) -> jax.Array:
    """1.0 if no floating-point leaf of `tree` holds a NaN or an infinity, else 0.0."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])).astype(jnp.float32)


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], *, model: EfficientNet) -> dict[str, jax.Array]:
    """Sums of loss, top-1/top-5 hits and real examples (padding masked out) over all devices."""
    logits = model.apply(variables, batch["image"], train=False)
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
    devices: Optional[list] = None,
) -> Callable:
    """`train_step` pmapped over the devices, the state's buffers donated (updated in place)."""
    step = functools.partial(train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn, config=config, rng=rng)
    return jax.pmap(step, axis_name=AXIS_NAME, donate_argnums=(0,), devices=devices)


def pmap_eval_step(model: EfficientNet, devices: Optional[list] = None) -> Callable:
    return jax.pmap(functools.partial(eval_step, model=model), axis_name=AXIS_NAME, devices=devices)


def replicate(tree: Any, devices: Optional[list] = None) -> Any:
    """Copies a host tree to every device, laid out exactly as pmap's outputs are.

    `flax.jax_utils.replicate` alone gives arrays sharded over a differently named mesh, so the
    second train step (fed the first step's outputs) would compile the whole step again.
    """
    replicated = flax.jax_utils.replicate(tree, devices)
    return jax.pmap(lambda x: x, axis_name=AXIS_NAME, devices=devices)(replicated)


def unreplicate(tree: Any) -> Any:
    """The first local device's copy of a replicated tree, as host (numpy) arrays.

    Reads the local shard directly: indexing a multi-process array would run a computation that
    every host must join, and hosts reach this point at different times. The reshape is numpy's:
    on device it would compile one program per parameter shape."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data).reshape(x.shape[1:]), tree)
