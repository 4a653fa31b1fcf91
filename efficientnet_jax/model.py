"""The EfficientNet network (EfficientNet, Lite, EdgeTPU and EfficientNetV2 alike): stem, MBConv and
Fused-MBConv stages built from a `ModelSpec`, head; and `create_model`."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from efficientnet_jax import layers, scaling
from efficientnet_jax.layers import ReplicaGroups
from efficientnet_jax.scaling import ModelSpec


def stochastic_depth_rate(block_index: int, num_blocks: int, drop_connect_rate: float) -> float:
    """Drop rate of block `block_index` (0-based over the whole network): it grows linearly from 0,
    `drop_connect_rate * block_index / num_blocks`, as the reference's `survival_prob` schedule."""
    return drop_connect_rate * block_index / num_blocks


def batch_norm_groups(num_replicas: int, group_size: int) -> ReplicaGroups | None:
    """Consecutive groups of `group_size` replicas, in the order of the pmapped axis (across hosts:
    jax.devices()' order), each normalising with its members' pooled batch statistics, as the official
    TPU batch norms group shards (`TpuBatchNormalization`; configuration.batch_norm_group_size gives
    their sizes). None when one group holds every replica: the plain cross-replica reduction."""
    if group_size <= 0 or num_replicas % group_size:
        raise ValueError(
            f"A batch-norm group of {group_size} replicas does not divide {num_replicas} replicas."
        )
    if group_size == num_replicas:
        return None
    return tuple(tuple(range(start, start + group_size)) for start in range(0, num_replicas, group_size))


def block_module(stage: scaling.StageSpec, spec: ModelSpec) -> tuple[type[layers.Block], dict]:
    """The block module of a stage, rematerialised with `spec.remat`, and the options only it takes."""
    if stage.fused:
        module, options = layers.FusedMBConv, {}
    else:
        module, options = layers.MBConv, {"depthwise_implementation": spec.depthwise_implementation}
    return (nn.remat(module, static_argnums=(2,)) if spec.remat else module), options


class EfficientNet(nn.Module):
    """`apply(variables, images, train=...)` maps normalised NHWC float images to float32 logits.

    With `features=True` it returns instead the last feature map at each stride (2, 4, 8, 16, 32
    for the EfficientNet and EfficientNetV2 stage tables), for use as a detection or segmentation
    backbone.
    Variables: {'params', 'batch_stats'}; training draws from the 'dropout' and 'drop_path' RNGs.

    With `freeze_batch_norm`, batch norm normalises with its moving statistics and leaves them
    unchanged even when `train=True`, while dropout and stochastic depth still train: fine-tuning
    on a small dataset or small per-device batches keeps the statistics learnt on the large one.
    """

    spec: ModelSpec
    batch_norm_axis_name: str | None = None  # set under pmap for cross-replica statistics
    # Replica groups that share batch statistics (`batch_norm_groups`); None: all replicas of the axis.
    batch_norm_axis_index_groups: ReplicaGroups | None = None
    freeze_batch_norm: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, features: bool = False):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"EfficientNet expects a batch of RGB images shaped [batch, height, width, 3] (NHWC), "
                f"got shape {tuple(images.shape)}."
            )
        spec = self.spec
        dtype = jnp.dtype(spec.dtype)
        activation = layers.ACTIVATIONS[spec.activation]
        batch_norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train or self.freeze_batch_norm,
            momentum=spec.batch_norm_momentum,
            epsilon=spec.batch_norm_epsilon,
            axis_name=self.batch_norm_axis_name,
            axis_index_groups=self.batch_norm_axis_index_groups,
            dtype=dtype,
        )
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=layers.conv_kernel_init, dtype=dtype)

        x = images.astype(dtype)
        x = conv(spec.scaled_stem_filters, (3, 3), strides=(2, 2), name="stem_conv")(x)
        x = activation(batch_norm(name="stem_bn")(x))

        stages = spec.scaled_stages()
        num_blocks = sum(stage.repeats for stage in stages)
        feature_maps = []
        block_index = 0
        for stage_index, stage in enumerate(stages):
            block_type, block_options = block_module(stage, spec)
            for repeat in range(stage.repeats):
                x = block_type(
                    input_filters=stage.input_filters if repeat == 0 else stage.output_filters,
                    output_filters=stage.output_filters,
                    kernel_size=stage.kernel_size,
                    stride=stage.stride if repeat == 0 else 1,
                    expand_ratio=stage.expand_ratio,
                    se_ratio=stage.se_ratio,
                    drop_path_rate=stochastic_depth_rate(block_index, num_blocks, spec.drop_connect_rate),
                    identity_skip=stage.identity_skip,
                    activation=spec.activation,
                    batch_norm_momentum=spec.batch_norm_momentum,
                    batch_norm_epsilon=spec.batch_norm_epsilon,
                    batch_norm_axis_name=self.batch_norm_axis_name,
                    batch_norm_axis_index_groups=self.batch_norm_axis_index_groups,
                    dtype=dtype,
                    freeze_batch_norm=self.freeze_batch_norm,
                    name=f"block_{block_index}",
                    **block_options,
                )(x, train)
                block_index += 1
            is_last_stage = stage_index == len(stages) - 1
            if is_last_stage or stages[stage_index + 1].stride > 1:
                feature_maps.append(x)
        if features:
            return feature_maps

        x = conv(spec.scaled_head_filters, (1, 1), name="head_conv")(x)
        x = activation(batch_norm(name="head_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(spec.dropout_rate, name="head_dropout")(x, deterministic=not train)
        logits = nn.Dense(
            spec.num_classes, kernel_init=layers.dense_kernel_init, dtype=dtype, name="classifier"
        )(x)
        return logits.astype(jnp.float32)


def model_spec(name_or_spec: str | ModelSpec, **overrides) -> ModelSpec:
    """A `ModelSpec` from a variant name ('efficientnet-b0'..'efficientnet-b7', 'b0'..'b7', 'b8', 'l2',
    'lite0'..'lite4', 'edgetpu-s'/'-m'/'-l', 'efficientnetv2-s' or 'v2-s', 'v2-m', 'v2-l', 'v2-xl',
    'v2-b0'..'v2-b3') or an existing spec, with field overrides (e.g. num_classes=10,
    dtype='bfloat16')."""
    if isinstance(name_or_spec, ModelSpec):
        return dataclasses.replace(name_or_spec, **overrides) if overrides else name_or_spec
    if isinstance(name_or_spec, str):
        return scaling.variant_spec(name_or_spec, **overrides)
    raise TypeError(f"Expected a variant name or a ModelSpec, got {type(name_or_spec).__name__}.")


def create_model(
    name_or_spec: str | ModelSpec,
    num_classes: int | None = None,
    batch_norm_axis_name: str | None = None,
    **overrides,
) -> EfficientNet:
    """The public entry point used by train.py, eval.py and the tests. `num_classes` defaults to the
    spec's (1000 for a variant name); other overrides are `ModelSpec` fields.

    >>> model = create_model("efficientnet-b0", num_classes=10)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    spec = model_spec(name_or_spec, **overrides)
    return EfficientNet(spec, batch_norm_axis_name=batch_norm_axis_name)
