"""How a block computes: initialisers, depthwise convolution, squeeze-and-excitation, stochastic
depth, and the MBConv and Fused-MBConv blocks. These modules know nothing of compound scaling (see
`scaling.py`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
ReplicaGroups = tuple[tuple[int, ...], ...]  # indices along a pmapped axis, as lax.pmean's axis_index_groups

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "swish": nn.silu,  # x * sigmoid(x), as the reference's tf.nn.swish
    "relu6": nn.relu6,  # MobileNetV2
    "relu": nn.relu,
}

DEPTHWISE_IMPLEMENTATIONS = ("auto", "xla", "shift")


def conv_kernel_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    """normal(0, sqrt(2 / fan_out)) with fan_out = kh * kw * out_channels (reference
    `conv_kernel_initializer`). Shape is Flax's (kh, kw, in, out)."""
    kh, kw, _, out_channels = shape
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / (kh * kw * out_channels))


def depthwise_kernel_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    """The reference initialises depthwise kernels, TF shape (kh, kw, channels, 1), with the same rule,
    so fan_out = kh * kw. Flax's variance scaling on our (kh, kw, 1, channels) layout would give
    kh * kw * channels: a std about sqrt(channels) too small."""
    kh, kw, _, _ = shape
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / (kh * kw))


def dense_kernel_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    """uniform(-1/sqrt(num_outputs), 1/sqrt(num_outputs)) (reference `dense_kernel_initializer`)."""
    limit = 1.0 / math.sqrt(shape[1])
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def tf_same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: the odd pixel goes at the end (bottom/right)."""
    output_size = -(-size // stride)
    total = max((output_size - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def resolve_depthwise_implementation(implementation: str) -> str:
    """'auto' picks per backend. On CPU, XLA's grouped convolution is an order of magnitude slower
    than a sum of shifted per-channel multiplies (BENCHMARKS.md); accelerators have
    dedicated depthwise kernels."""
    if implementation not in DEPTHWISE_IMPLEMENTATIONS:
        raise ValueError(
            f"Unknown depthwise implementation {implementation!r}; valid: {DEPTHWISE_IMPLEMENTATIONS}."
        )
    if implementation == "auto":
        return "shift" if jax.default_backend() == "cpu" else "xla"
    return implementation


def _shifted_sum(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    kh, kw, _, _ = kernel.shape
    _, height, width, _ = x.shape
    pad_h, pad_w = tf_same_padding(height, kh, stride), tf_same_padding(width, kw, stride)
    x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    out_h, out_w = -(-height // stride), -(-width // stride)
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            term = x[:, i : i + span_h : stride, j : j + span_w : stride, :] * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv_shift(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Depthwise convolution with TF SAME padding as a sum of kh*kw strided slices times per-channel
    weights. `kernel` is (kh, kw, 1, C). Computes exactly what the grouped convolution computes; its
    kernel gradient is `depthwise_kernel_gradient`."""
    return _shifted_sum(x, kernel, stride)


def depthwise_kernel_gradient(
    x: jax.Array, cotangent: jax.Array, kernel_shape: tuple[int, ...], stride: int
) -> jax.Array:
    """Gradient of `depthwise_conv_shift` with respect to its kernel, accumulated in float32: for tap
    (i, j) and channel c, the sum over n, h, w of padded_x[n, stride*h + i, stride*w + j, c] *
    cotangent[n, h, w, c].

    All kh*kw taps are one variadic reduction, so XLA emits a single loop that reads each input
    element once and keeps kh*kw accumulators, instead of one pass over both arrays per tap (as
    autodiff of the shifted sum, or a sum per tap, gives). It reduces over H and W per example and
    then over the batch, which leaves the batch dimension for XLA:CPU to split across threads.
    Faster than a reduction per tap on this project's CPU (BENCHMARKS.md, "What made it fast").
    """
    kh, kw, _, _ = kernel_shape
    _, height, width, _ = x.shape
    _, out_h, out_w, _ = cotangent.shape
    pad_h, pad_w = tf_same_padding(height, kh, stride), tf_same_padding(width, kw, stride)
    padded = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0))).astype(jnp.float32)
    cotangent = cotangent.astype(jnp.float32)
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    products = tuple(
        padded[:, i : i + span_h : stride, j : j + span_w : stride] * cotangent
        for i in range(kh)
        for j in range(kw)
    )
    zeros = (jnp.zeros((), jnp.float32),) * len(products)
    per_example = jax.lax.reduce(products, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (1, 2))
    return jnp.stack(per_example).sum(axis=1).reshape(kernel_shape)


def _depthwise_conv_shift_forward(x: jax.Array, kernel: jax.Array, stride: int):
    return _shifted_sum(x, kernel, stride), (x, kernel)


def _depthwise_conv_shift_backward(stride: int, residuals: tuple[jax.Array, jax.Array], cotangent: jax.Array):
    x, kernel = residuals
    # Linear in x: the input gradient is the transpose of the shifted sum, which XLA fuses well.
    (x_gradient,) = jax.linear_transpose(lambda x: _shifted_sum(x, kernel, stride), x)(cotangent)
    return x_gradient, depthwise_kernel_gradient(x, cotangent, kernel.shape, stride).astype(kernel.dtype)


depthwise_conv_shift.defvjp(_depthwise_conv_shift_forward, _depthwise_conv_shift_backward)


class DepthwiseConv(nn.Module):
    """kxk depthwise convolution, no bias. One parameter layout (kh, kw, 1, C), whatever the
    implementation, so checkpoints do not depend on it."""

    kernel_size: int
    stride: int = 1
    implementation: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param(
            "kernel", depthwise_kernel_init, (self.kernel_size, self.kernel_size, 1, channels), jnp.float32
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if resolve_depthwise_implementation(self.implementation) == "shift":
            return depthwise_conv_shift(x, kernel, self.stride)
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(self.stride, self.stride),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=channels,
        )


class PointwiseConv(nn.Conv):
    """1x1 convolution computed as one matrix product over all positions, [N*H*W, C_in] x [C_in, C_out].

    The same module as `nn.Conv(features, (1, 1))` to everything outside it (parameters `kernel`
    (1, 1, C_in, C_out) and `bias`, initialisers, dtypes, parameter and multiply-add accounting): only
    the computation differs. On XLA:CPU the B0 train step ran 1.5x faster with it than with
    `nn.Conv`'s 1x1 `conv_general_dilated` (BENCHMARKS.md); on accelerators XLA lowers a 1x1
    convolution to a dot anyway.
    """

    kernel_size: Sequence[int] = (1, 1)

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if tuple(self.kernel_size) != (1, 1) or self.strides not in (1, (1, 1), None):
            raise ValueError(
                f"PointwiseConv is 1x1 with stride 1, got kernel {self.kernel_size}, strides {self.strides}."
            )
        in_features = inputs.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (1, 1, in_features, self.features), self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        )
        inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        flat = inputs.reshape(-1, in_features) @ kernel[0, 0]
        outputs = flat.reshape(*inputs.shape[:-1], self.features)
        return outputs if bias is None else outputs + bias


class SqueezeExcite(nn.Module):
    """Channel gating: mean over H, W; 1x1 conv down to `reduced_filters` (computed by the caller
    from the block's *input* filters, as the reference does) with the block's activation; 1x1 conv
    back to the expanded width; sigmoid; multiply."""

    reduced_filters: int
    activation: str = "swish"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(PointwiseConv, kernel_init=conv_kernel_init, dtype=self.dtype)
        gate = jnp.mean(x, axis=(1, 2), keepdims=True)
        gate = ACTIVATIONS[self.activation](conv(self.reduced_filters, name="reduce")(gate))
        gate = conv(x.shape[-1], name="expand")(gate)
        return x * nn.sigmoid(gate)


class StochasticDepth(nn.Module):
    """Drops the whole residual branch of each example with probability `rate` in training and
    rescales the survivors by 1 / (1 - rate) (reference `drop_connect`); the identity at inference.
    Draws from the 'drop_path' RNG stream."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        survival_probability = 1.0 - self.rate
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = jax.random.bernoulli(self.make_rng("drop_path"), survival_probability, mask_shape)
        return jnp.where(keep, x / jnp.asarray(survival_probability, x.dtype), jnp.zeros_like(x))


class Block(nn.Module):
    """What MBConv and FusedMBConv share: their fields, and the batch norm, 1x1 convolution,
    squeeze-and-excitation and residual that both build alike. `input_filters` is the stage table's
    (scaled) value: it sets the expansion and SE widths, while convolutions take the channels they
    are given, as in the official code (EdgeTPU's first block expands 24 * 4 filters from the stem's
    32 channels)."""

    input_filters: int
    output_filters: int
    kernel_size: int
    stride: int
    expand_ratio: int
    se_ratio: float | None
    drop_path_rate: float
    identity_skip: bool = True  # False: no residual even where the shapes allow one ('noskip')
    activation: str = "swish"
    batch_norm_momentum: float = 0.99
    batch_norm_epsilon: float = 1e-3
    batch_norm_axis_name: str | None = None
    batch_norm_axis_index_groups: ReplicaGroups | None = None
    dtype: Dtype = jnp.float32
    freeze_batch_norm: bool = False  # normalise with the moving statistics and keep them, even in training

    @nn.nowrap
    def _batch_norm(self, train: bool, name: str) -> nn.BatchNorm:
        return nn.BatchNorm(
            use_running_average=not train or self.freeze_batch_norm,
            momentum=self.batch_norm_momentum,
            epsilon=self.batch_norm_epsilon,
            axis_name=self.batch_norm_axis_name,
            axis_index_groups=self.batch_norm_axis_index_groups,
            dtype=self.dtype,
            name=name,
        )

    @nn.nowrap
    def _pointwise_conv(self, features: int, name: str) -> PointwiseConv:
        return PointwiseConv(
            features, use_bias=False, kernel_init=conv_kernel_init, dtype=self.dtype, name=name
        )

    @nn.nowrap
    def _squeeze_excite(self, x: jax.Array) -> jax.Array:
        if not self.se_ratio:
            return x
        reduced_filters = max(1, int(self.input_filters * self.se_ratio))
        return SqueezeExcite(reduced_filters, self.activation, self.dtype, name="se")(x)

    @nn.nowrap
    def _residual(self, x: jax.Array, inputs: jax.Array, train: bool) -> jax.Array:
        """Adds the block's input, with stochastic depth, when the stride is 1 and the width unchanged."""
        if not (self.identity_skip and self.stride == 1 and self.input_filters == self.output_filters):
            return x
        x = StochasticDepth(self.drop_path_rate, name="stochastic_depth")(x, deterministic=not train)
        return x + inputs


class MBConv(Block):
    """Mobile inverted bottleneck: [1x1 expand, BN, act] -> depthwise kxk, BN, act -> SE -> 1x1 project,
    BN; identity skip with stochastic depth when the stride is 1 and the width is unchanged."""

    depthwise_implementation: str = "auto"

    @nn.compact
    def __call__(self, inputs: jax.Array, train: bool) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        x = inputs
        if self.expand_ratio != 1:
            expanded_filters = self.input_filters * self.expand_ratio
            x = self._pointwise_conv(expanded_filters, "expand_conv")(x)
            x = activation(self._batch_norm(train, "expand_bn")(x))
        x = DepthwiseConv(
            self.kernel_size, self.stride, self.depthwise_implementation, self.dtype, name="depthwise_conv"
        )(x)
        x = activation(self._batch_norm(train, "depthwise_bn")(x))
        x = self._squeeze_excite(x)
        x = self._pointwise_conv(self.output_filters, "project_conv")(x)
        x = self._batch_norm(train, "project_bn")(x)
        return self._residual(x, inputs, train)


class FusedMBConv(Block):
    """Fused-MBConv: kxk expand with the stride, BN, act -> SE -> 1x1 project, BN; residual as MBConv.
    One dense kxk convolution replaces MBConv's 1x1 expansion and depthwise convolution, which uses
    accelerators better on large, shallow feature maps (EdgeTPU's early stages, EfficientNetV2).

    The stride sits on the kxk convolution, as in EfficientNetV2's `FusedMBConvBlock` (google/automl)
    and timm's `EdgeResidual`, whose ports of the EdgeTPU weights we import. tensorflow/tpu's
    EfficientNet code builds `c1` blocks as `MBConvBlockWithoutDepthwise`, which strides the 1x1
    projection instead: the same parameters, and on even feature-map sizes an output grid one pixel
    apart.

    With `expand_ratio` 1 the block is, as in EfficientNetV2, a single kxk convolution to the output
    width with BN and the activation: [SE] -> kxk project with the stride, BN, act.
    """

    @nn.compact
    def __call__(self, inputs: jax.Array, train: bool) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        expands = self.expand_ratio != 1
        x = inputs
        if expands:
            x = self._spatial_conv(self.input_filters * self.expand_ratio, "expand_conv")(x)
            x = activation(self._batch_norm(train, "expand_bn")(x))
        x = self._squeeze_excite(x)
        project = self._pointwise_conv if expands else self._spatial_conv
        x = self._batch_norm(train, "project_bn")(project(self.output_filters, "project_conv")(x))
        if not expands:
            x = activation(x)  # EfficientNetV2: the block's only convolution keeps its activation
        return self._residual(x, inputs, train)

    @nn.nowrap
    def _spatial_conv(self, features: int, name: str) -> nn.Conv:
        """The block's kxk convolution, with the stride and TensorFlow's SAME padding."""
        return nn.Conv(
            features,
            (self.kernel_size, self.kernel_size),
            strides=(self.stride, self.stride),
            padding="SAME",
            use_bias=False,
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            name=name,
        )
