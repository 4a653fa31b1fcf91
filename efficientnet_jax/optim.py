"""The reference optimiser, learning-rate schedule and weight decay, with TensorFlow semantics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

BATCH_NORM_SUFFIX = "_bn"  # every BatchNorm module of the model is named '*_bn'
CLASSIFIER = "classifier"  # the model's final dense layer; every other parameter is the backbone
# The reference's RMSProp (TF1's): what configs/default.py trains with, and the optimizer whose fresh
# state the weight converter writes. TF1 initialises the mean-square slot to 1, not 0.
REFERENCE_RMSPROP = ml_collections.ConfigDict(
    dict(rmsprop_decay=0.9, rmsprop_momentum=0.9, rmsprop_epsilon=1e-3, rmsprop_initial_scale=1.0)
)


def scaled_learning_rate(base_learning_rate: float, global_batch_size: int) -> float:
    """The reference's linear scaling: `base_learning_rate` is per 256 examples (0.016)."""
    return base_learning_rate * global_batch_size / 256.0


def learning_rate_schedule(
    peak_learning_rate: float,
    steps_per_epoch: int,
    warmup_epochs: float,
    decay_factor: float,
    decay_epochs: float,
) -> optax.Schedule:
    """Linear warm-up from 0, then `decay_factor` every `decay_epochs` (staircase).

    As in the reference's `build_learning_rate`, the staircase counts from step 0, not from the end
    of the warm-up, and the warm-up simply replaces the decayed value while it lasts. Decay
    boundaries fall at multiples of `steps_per_epoch * decay_epochs`, a float (2.4 epochs).
    """
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    decayed = optax.exponential_decay(
        peak_learning_rate,
        transition_steps=steps_per_epoch * decay_epochs,
        decay_rate=decay_factor,
        staircase=True,
    )

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if warmup_steps == 0:
            return decayed(step)
        warmup = peak_learning_rate * step / warmup_steps
        return jnp.where(step < warmup_steps, warmup, decayed(step))

    return schedule


def rmsprop(
    learning_rate: optax.ScalarOrSchedule, config: ml_collections.ConfigDict
) -> optax.GradientTransformation:
    """TF1 RMSProp: ms = decay*ms + (1-decay)*g^2 with ms starting at 1.0; mom = momentum*mom +
    lr*g/sqrt(ms + eps); w -= mom. optax's rmsprop chains these in that order (the learning rate
    is applied before the momentum trace, as TF does)."""
    return optax.rmsprop(
        learning_rate,
        decay=config.rmsprop_decay,
        eps=config.rmsprop_epsilon,
        initial_scale=config.rmsprop_initial_scale,
        eps_in_sqrt=True,
        momentum=config.rmsprop_momentum,
    )


def optimizer(
    learning_rate: optax.ScalarOrSchedule, config: ml_collections.ConfigDict
) -> optax.GradientTransformation:
    """The job's optimiser: the reference RMSProp, with the backbone slowed down or frozen for fine-tuning.

    `config.backbone_learning_rate_multiplier` scales the backbone's updates, which equals RMSProp at
    that multiple of the learning rate (TF1 RMSProp applies the rate before the momentum trace, so the
    update is linear in it); the classifier keeps the full rate. `config.freeze_backbone` leaves the
    backbone unchanged whatever the multiplier, and keeps no optimizer state for it. With neither,
    this is `rmsprop` itself, so the reference recipe's optimizer state is unchanged.
    """
    classifier = rmsprop(learning_rate, config)
    if config.freeze_backbone:
        backbone = optax.set_to_zero()
    elif config.backbone_learning_rate_multiplier != 1.0:
        multiplier = config.backbone_learning_rate_multiplier
        backbone = optax.chain(rmsprop(learning_rate, config), optax.scale(multiplier))
    else:
        return classifier
    return optax.multi_transform({CLASSIFIER: classifier, "backbone": backbone}, parameter_groups)


def parameter_groups(params) -> Any:
    """The optimizer group of every parameter: 'classifier' for the final dense layer, 'backbone' else."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: CLASSIFIER if is_classifier_parameter(path) else "backbone", params
    )


def is_classifier_parameter(path: tuple[Any, ...]) -> bool:
    return str(getattr(path[0], "key", path[0])) == CLASSIFIER


def is_batch_norm_parameter(path: tuple[Any, ...]) -> bool:
    return any(str(getattr(key, "key", key)).endswith(BATCH_NORM_SUFFIX) for key in path)


def weight_decay_mask(params) -> Any:
    """True for every trainable variable the reference decays: all but batch-norm scales/offsets."""
    return jax.tree_util.tree_map_with_path(lambda path, _: not is_batch_norm_parameter(path), params)


def l2_penalty(params) -> jax.Array:
    """sum(v^2) / 2 over decayed variables (tf.nn.l2_loss); times `weight_decay` it joins the loss,
    so its gradient goes through RMSProp as in the reference (unlike decoupled weight decay)."""
    mask = weight_decay_mask(params)
    squares = jax.tree.map(
        lambda p, m: jnp.sum(jnp.square(p.astype(jnp.float32))) if m else 0.0, params, mask
    )
    return 0.5 * sum(jax.tree.leaves(squares))
