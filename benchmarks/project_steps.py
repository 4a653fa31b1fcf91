"""The project's pmapped train and eval steps, built exactly as training builds them, for the
benchmarks (`throughput.py`, `max_batch.py`): the reference recipe's config with the benchmarked
model and size, the model, RMSProp and schedule of `trainer.train_and_evaluate`, and synthetic batches on the
devices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from configs import default
from efficientnet_jax import optim, scaling, steps
from efficientnet_jax.configuration import (
    batch_norm_group_size,
    model_spec_from_config,
    resolve_input_normalization,
)
from efficientnet_jax.model import EfficientNet, batch_norm_groups

IMAGENET_TRAIN_EXAMPLES = 1_281_167  # only sizes the learning-rate schedule, which does not affect speed


def benchmark_config(
    model: str,
    per_device_batch: int,
    resolution: int | None = None,
    dtype: str = "float32",
    width: float | None = None,
    depth: float | None = None,
    depthwise_implementation: str = "auto",
    remat: bool = False,
    num_devices: int | None = None,
) -> ml_collections.ConfigDict:
    """The reference recipe (`configs/default.py`) with the benchmarked model, size and precision."""
    spec = scaling.variant_spec(model)
    config = default.get_config()
    config.model.variant = spec.name
    config.model.width = width
    config.model.depth = depth
    config.model.depthwise_implementation = depthwise_implementation
    config.model.remat = remat
    config.half_precision = dtype == "bfloat16"
    config.image_size = resolution or spec.resolution
    config.batch_size = per_device_batch * (num_devices or jax.local_device_count())
    config.eval_batch_size = config.batch_size
    return config


def synthetic_batch(
    config: ml_collections.ConfigDict, num_classes: int, with_mask: bool
) -> dict[str, jax.Array]:
    """A batch laid out as `prefetch_to_device` delivers it: [devices, per_device, ...], on the devices."""
    num_devices = jax.local_device_count()
    per_device = config.batch_size // num_devices
    size = config.image_size

    def make(key):
        image_key, label_key = jax.random.split(key)
        batch = {
            "image": jax.random.randint(
                image_key, (per_device, size, size, 3), 0, 256, jnp.int32
            ).astype(jnp.uint8),
            "label": jax.random.randint(label_key, (per_device,), 0, num_classes, jnp.int32),
        }
        if with_mask:
            batch["mask"] = jnp.ones((per_device,), jnp.float32)
        return batch

    return jax.pmap(make)(jax.random.split(jax.random.key(1), num_devices))


def model_and_optimizer(
    config: ml_collections.ConfigDict, num_classes: int
) -> tuple[EfficientNet, optax.GradientTransformation, optax.Schedule]:
    """The model, RMSProp and learning-rate schedule exactly as `trainer.train_and_evaluate` makes them."""
    spec = model_spec_from_config(config, num_classes)
    num_replicas = jax.device_count()
    groups = batch_norm_groups(num_replicas, batch_norm_group_size(config, num_replicas))
    model = EfficientNet(spec, batch_norm_axis_name=steps.AXIS_NAME, batch_norm_axis_index_groups=groups)
    learning_rate_fn = optim.learning_rate_schedule(
        optim.scaled_learning_rate(config.base_learning_rate, config.batch_size),
        max(1, IMAGENET_TRAIN_EXAMPLES // config.batch_size),
        config.warmup_epochs,
        config.lr_decay_factor,
        config.lr_decay_epochs,
    )
    return model, optim.rmsprop(learning_rate_fn, config), learning_rate_fn


def pmapped_step(config: ml_collections.ConfigDict, mode: str, num_classes: int) -> tuple[Callable, Callable]:
    """The project's pmapped step for `mode`, and a function making its initial (unreplicated) state
    from an RNG key: the `TrainState` for training, {'params', 'batch_stats'} for evaluation."""
    model, tx, learning_rate_fn = model_and_optimizer(config, num_classes)

    def initial_state(rng: jax.Array):
        state = steps.create_train_state(rng, model, config.image_size, tx)
        return state if mode == "train" else {"params": state.params, "batch_stats": state.batch_stats}

    normalization = resolve_input_normalization(config)
    if mode == "train":
        step_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
        train_step = steps.pmap_train_step(model, tx, learning_rate_fn, config, step_rng, normalization)
        return train_step, initial_state
    return steps.pmap_eval_step(model, normalization), initial_state


def build_step(
    config: ml_collections.ConfigDict, mode: str, num_classes: int
) -> tuple[Callable, tuple[Any, ...]]:
    """The project's pmapped step for `mode` and its first arguments (replicated state, batch)."""
    step, initial_state = pmapped_step(config, mode, num_classes)
    state = steps.replicate(initial_state(jax.random.key(config.seed)))
    return step, (state, synthetic_batch(config, num_classes, with_mask=mode == "eval"))
