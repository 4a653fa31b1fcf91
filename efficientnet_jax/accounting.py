"""Model accounting without allocating a model: parameter counts and forward multiply-adds.

Both work under `jax.eval_shape`, so B7 at 600x600 costs a second of tracing and no memory.

FLOPs are an *analytic* count of multiply-adds in convolutions and the classifier (what the paper
reports as FLOPs): each convolution or dense layer contributes output_positions * kernel_size, read
from the traced shapes. Batch norm, activations, pooling and the SE gating multiply are elementwise
and not counted, as in the paper; they add well under 1% on B0.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from efficientnet_jax import layers
from efficientnet_jax.model import EfficientNet, model_spec
from efficientnet_jax.scaling import ModelSpec

_COUNTED_MODULES = (nn.Conv, nn.Dense, layers.DepthwiseConv)


def _init_shapes(spec: ModelSpec, resolution: int):
    model = EfficientNet(spec)
    images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


def count_parameters(name_or_spec: str | ModelSpec, resolution: int | None = None) -> dict[str, int]:
    """{'trainable': …, 'batch_norm_statistics': …}; trainable excludes BN moving mean/variance."""
    spec = model_spec(name_or_spec)
    shapes = _init_shapes(spec, resolution or spec.resolution)
    return {
        "trainable": sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"])),
        "batch_norm_statistics": sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["batch_stats"])),
    }


def count_multiply_adds(name_or_spec: str | ModelSpec, resolution: int | None = None) -> int:
    """Forward multiply-adds for one image at `resolution` (default: the spec's)."""
    spec = model_spec(name_or_spec)
    resolution = resolution or spec.resolution
    total = 0

    def count(next_fun, args, kwargs, context):
        nonlocal total
        output = next_fun(*args, **kwargs)
        if isinstance(context.module, _COUNTED_MODULES) and context.method_name == "__call__":
            kernel = context.module.get_variable("params", "kernel")
            output_positions = math.prod(output.shape[1:-1])  # spatial dims; none for dense
            total += output_positions * math.prod(kernel.shape)
        return output

    model = EfficientNet(spec)
    images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    with nn.intercept_methods(count):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
    return total
