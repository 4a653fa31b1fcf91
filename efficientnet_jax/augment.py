"""AutoAugment (policy v0) and RandAugment as pure, stateless TensorFlow functions for `tf.data`.

The facts (operation list, constants, sub-policy table, magnitude-to-argument scaling) follow the official
EfficientNet code, tensorflow/tpu `models/official/efficientnet/autoaugment.py` ("the reference" below);
the code is written afresh for TF2 and graph mode (`tf.data.Dataset.map`), on uint8 images `[H, W, 3]`.

Randomness is *stateless*: every public entry point takes a `seed` of shape [2] (int32 or int64) and draws
only with `tf.random.stateless_*` on seeds split from it (Philox, fixed so CPU and accelerators agree).
The same (image, seed) therefore always gives the same output, which is what lets the input pipeline
resume bit-exactly from a per-example seed derived from (config seed, host, epoch, index).

Where this module deliberately differs from the reference, or reproduces one of its quirks, the docstring
of the function concerned says so:
  * Contrast blends towards the *mean* grey level, as PIL does. The reference's "mean" is
    `sum(histogram) / 256` = H*W/256 (196 for a 224x224 crop), a known bug (tensorflow/tpu#825, #1057;
    fixed in tensorflow/models#11219). Its maintainers expected no measurable effect on accuracy.
  * Solarize and Posterize reproduce how the reference's Python-int arguments wrap when TF converts them
    to uint8 (threshold 256 -> 0, i.e. full inversion; a negative shift -> 1-bit posterize). This only
    matters at magnitude >= 10 for Solarize and for levels giving 0 or > 8 bits for Posterize (policy v0's
    ('Posterize', 0.8, 2); RandAugment M >= 22.5). See `augment_policies.op_argument`, the level ->
    argument mapping this module shares with `device_augment.py`.
  * RandAugment applies the chosen operation always: the reference draws a probability per layer but never
    uses it (no operation takes a `prob` argument), so its chosen op is applied unconditionally.
  * Grey levels (Color, Contrast) and the Sharpness smoothing round exactly as PIL does (ITU-R 601-2 integer
    luma; SMOOTH filter rounded half up), so those ops equal PIL's `ImageEnhance` bit for bit. The
    reference's `tf.image.rgb_to_grayscale` and truncating cast differ from PIL by 1 grey level on some
    pixels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from efficientnet_jax.augment_policies import (
    AUTOAUGMENT_CONSTANTS,
    FILL_VALUE,
    OPS_WITHOUT_ARGUMENT,
    POLICIES,
    RANDAUGMENT_CONSTANTS,
    RANDAUGMENT_OPS,
    SIGNED_OPS,
    PolicyConstants,
    SubPolicy,
    op_argument,
)

# Fixed rather than "auto_select", so a given seed gives the same draws on every device.
RNG_ALG = "philox"

TensorLike = tf.Tensor | float | int


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def blend(image1: tf.Tensor, image2: tf.Tensor, factor: TensorLike) -> tf.Tensor:
    """`image1 + factor * (image2 - image1)` clipped to [0, 255] and truncated to uint8.

    This is PIL's `Image.blend` (float32 arithmetic, truncating cast), on which all `ImageEnhance`
    operations are built: factor 0 gives image1, 1 gives image2, > 1 extrapolates away from image1.
    """
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    factor = tf.cast(factor, tf.float32)
    blended = image1 + factor * (image2 - image1)
    return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def _luma(image: tf.Tensor) -> tf.Tensor:
    """Grey level [H, W] (int32) exactly as PIL's `convert("L")`: ITU-R 601-2, fixed point, rounded.

    Used instead of `tf.image.rgb_to_grayscale` (weights 0.2989/0.5870/0.1140 and a x255.5 truncating
    conversion), which lands one grey level away from PIL on some pixels.
    """
    rgb = tf.cast(image, tf.int32)
    weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
    return tf.bitwise.right_shift(weighted, 16)


def _transform(image: tf.Tensor, matrix: Sequence[TensorLike]) -> tf.Tensor:
    """Applies a projective transform (8 coefficients, output -> input mapping), nearest, fill 128.

    Output pixel (x, y) samples input ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1,
    the convention of the reference's `tf.contrib.image.transform`. `ImageProjectiveTransformV3` is TF
    core (no tensorflow-addons) and fills uncovered pixels with `fill_value` directly, which replaces the
    reference's extra-channel wrap/unwrap trick with the same result.
    """
    transforms = tf.reshape(tf.stack([tf.cast(m, tf.float32) for m in matrix]), [1, 8])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transforms,
        output_shape=tf.shape(image)[:2],
        fill_value=tf.constant(FILL_VALUE, tf.float32),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return out[0]


# ---------------------------------------------------------------------------------------------------------
# Operations: image (uint8 [H, W, 3]) plus explicit arguments -> uint8 image of the same shape.
# ---------------------------------------------------------------------------------------------------------


def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """Stretches each channel so its darkest value maps to 0 and its brightest to 255 (PIL `autocontrast`).

    Channels with a single value are left unchanged. Computed in float64 with PIL's formula
    `int(x * scale + offset)`, so the result equals PIL's lookup table exactly (the reference uses float32,
    which can truncate an exact 255 to 254).
    """
    x = tf.cast(image, tf.float64)
    lo = tf.reduce_min(x, axis=[0, 1])
    hi = tf.reduce_max(x, axis=[0, 1])
    scale = tf.math.divide_no_nan(tf.constant(255.0, tf.float64), hi - lo)
    stretched = tf.cast(tf.clip_by_value(x * scale - lo * scale, 0.0, 255.0), tf.uint8)
    return tf.where(hi > lo, stretched, image)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """Histogram-equalises each channel with PIL's `equalize` lookup table.

    Per channel: step = (pixel count - count of the last occupied level) // 255; level i maps to
    (pixels below i + step // 2) // step, clipped to 255; a channel with step 0 is left unchanged.
    Histograms of the three channels are one `bincount` over values offset by 256 per channel.
    """
    offsets = tf.constant([0, 256, 512], tf.int32)
    values = tf.cast(image, tf.int32) + offsets
    hist = tf.reshape(
        tf.math.bincount(tf.reshape(values, [-1]), minlength=768, maxlength=768, dtype=tf.int32), [3, 256]
    )
    occupied_from_top = tf.reverse(tf.cast(hist > 0, tf.int32), axis=[1])
    last_level = 255 - tf.argmax(occupied_from_top, axis=1, output_type=tf.int32)
    last_count = tf.gather(hist, last_level, batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last_count) // 255
    below = tf.cumsum(hist, axis=1, exclusive=True)
    lut = tf.clip_by_value((below + (step // 2)[:, None]) // tf.maximum(step, 1)[:, None], 0, 255)
    lut = tf.where((step > 0)[:, None], lut, tf.range(256, dtype=tf.int32)[None, :])
    return tf.cast(tf.gather(tf.reshape(lut, [-1]), values), tf.uint8)


def invert(image: tf.Tensor) -> tf.Tensor:
    """255 - pixel (PIL `invert`)."""
    return 255 - image


def posterize(image: tf.Tensor, bits: TensorLike) -> tf.Tensor:
    """Keeps the `bits` most significant bits of every pixel (PIL `posterize`, which takes bits in [1, 8]).

    `bits` is clipped to [1, 8]. The reference-specific mapping of levels to bits (including its
    wrap-around, which sends out-of-range bit counts to 1) lives in `augment_policies.op_argument`; this
    operation itself is PIL's definition.
    """
    shift = 8 - tf.clip_by_value(tf.cast(bits, tf.int32), 1, 8)
    x = tf.cast(image, tf.int32)
    return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(x, shift), shift), tf.uint8)


def solarize(image: tf.Tensor, threshold: TensorLike) -> tf.Tensor:
    """Inverts every pixel at or above `threshold` (PIL `solarize`); compared in int32, so any int works."""
    threshold = tf.cast(threshold, tf.int32)
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image: tf.Tensor, addition: TensorLike, threshold: TensorLike = 128) -> tf.Tensor:
    """Adds `addition` (clipped to [0, 255]) to every pixel below `threshold`; others are unchanged.

    No PIL equivalent; this is the reference's definition (threshold fixed at 128 by the policies).
    """
    x = tf.cast(image, tf.int32)
    added = tf.cast(tf.clip_by_value(x + tf.cast(addition, tf.int32), 0, 255), tf.uint8)
    return tf.where(x < tf.cast(threshold, tf.int32), added, image)


def color(image: tf.Tensor, factor: TensorLike) -> tf.Tensor:
    """Saturation: blends from the grey version of the image (factor 0) to the image (factor 1); PIL `Color`.

    `tf.image.adjust_saturation` is not used: it scales saturation in HSV space, a different operation.
    """
    grey = tf.cast(tf.repeat(_luma(image)[..., tf.newaxis], 3, axis=-1), tf.uint8)
    return blend(grey, image, factor)


def contrast(image: tf.Tensor, factor: TensorLike) -> tf.Tensor:
    """Blends from a uniform image at the mean grey level (factor 0) to the image (factor 1); PIL `Contrast`.

    The degenerate image is `int(mean(luma) + 0.5)` everywhere, as in PIL. The reference intends this but
    computes `sum(histogram) / 256` (= H*W/256, i.e. 196 for 224x224) instead of the mean — a known bug
    (tensorflow/tpu#825, #1057), fixed upstream in tensorflow/models#11219; we use the intended definition.
    `tf.image.adjust_contrast` is not used: it pivots each channel around its own mean and does not
    truncate like PIL.
    """
    mean = tf.reduce_mean(tf.cast(_luma(image), tf.float64))
    degenerate = tf.fill(tf.shape(image), tf.cast(tf.floor(mean + 0.5), tf.uint8))
    return blend(degenerate, image, factor)


def brightness(image: tf.Tensor, factor: TensorLike) -> tf.Tensor:
    """Blends from black (factor 0) to the image (factor 1), i.e. multiplies by `factor`; PIL `Brightness`.

    `tf.image.adjust_brightness` is not used: it *adds* a delta instead of scaling.
    """
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: TensorLike) -> tf.Tensor:
    """Blends from a smoothed image (factor 0) to the image (factor 1); PIL `Sharpness`.

    The smoothed image is PIL's SMOOTH filter: 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 on the interior
    (depthwise `tf.nn.depthwise_conv2d`, VALID), with border pixels copied from the image. Sums are exact
    integers in float32 and k/13 is never at .5, so rounding half up reproduces PIL exactly (the reference
    truncates, a difference of at most one level before blending).
    """
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], tf.float32)
    kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
    sums = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[tf.newaxis], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.cast(tf.floor(sums / 13.0 + 0.5), tf.uint8)
    padding = [[1, 1], [1, 1], [0, 0]]
    interior = tf.pad(tf.ones_like(smooth, dtype=tf.bool), padding, constant_values=False)
    degenerate = tf.where(interior, tf.pad(smooth, padding), image)
    return blend(degenerate, image, factor)


def rotate(image: tf.Tensor, degrees: TensorLike) -> tf.Tensor:
    """Rotates by `degrees` about the image centre (counter-clockwise on screen for positive angles).

    Same matrix as the reference's `tf.contrib.image.rotate` (centre ((W-1)/2, (H-1)/2)), nearest
    neighbour, uncovered corners filled with 128. The sign is randomised by the level mapping.
    """
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
    width = tf.cast(tf.shape(image)[1], tf.float32) - 1.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def shear_x(image: tf.Tensor, level: TensorLike) -> tf.Tensor:
    """Horizontal shear: output (x, y) takes input (x + level * y, y); fill 128.

    PIL's affine transform (1, level, 0, 0, 1, 0), as in the reference.
    """
    return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image: tf.Tensor, level: TensorLike) -> tf.Tensor:
    """Vertical shear: output (x, y) takes input (x, level * x + y); fill 128.

    PIL's affine transform (1, 0, 0, level, 1, 0), as in the reference.
    """
    return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def translate_x(image: tf.Tensor, pixels: TensorLike) -> tf.Tensor:
    """Output (x, y) takes input (x + pixels, y): content moves left by `pixels`; fill 128."""
    return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image: tf.Tensor, pixels: TensorLike) -> tf.Tensor:
    """Output (x, y) takes input (x, y + pixels): content moves up by `pixels`; fill 128."""
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


def cutout_at(
    image: tf.Tensor, pad_size: TensorLike, center_y: TensorLike, center_x: TensorLike
) -> tf.Tensor:
    """Fills rows [cy - pad, cy + pad) x columns [cx - pad, cx + pad), cut at the borders, with 128."""
    pad_size = tf.cast(pad_size, tf.int32)
    center_y = tf.cast(center_y, tf.int32)
    center_x = tf.cast(center_x, tf.int32)
    rows = tf.range(tf.shape(image)[0])[:, tf.newaxis]
    cols = tf.range(tf.shape(image)[1])[tf.newaxis, :]
    inside = (
        (rows >= center_y - pad_size)
        & (rows < center_y + pad_size)
        & (cols >= center_x - pad_size)
        & (cols < center_x + pad_size)
    )
    return tf.where(inside[..., tf.newaxis], tf.constant(FILL_VALUE, tf.uint8), image)


def cutout(image: tf.Tensor, pad_size: TensorLike, seed: tf.Tensor) -> tf.Tensor:
    """Cutout (DeVries & Taylor 2017): a (2 pad_size)^2 square of 128 centred uniformly over the image.

    The centre is drawn uniformly from all pixels (so the square may be cut by the border), as in the
    reference; the draw is stateless from `seed`.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=2, alg=RNG_ALG)
    center_y, center_x = (
        tf.random.stateless_uniform([], s, minval=0, maxval=size, dtype=tf.int32, alg=RNG_ALG)
        for s, size in zip(tf.unstack(seeds), tf.unstack(tf.shape(image)[:2]))
    )
    return cutout_at(image, pad_size, center_y, center_x)


# ---------------------------------------------------------------------------------------------------------
# Level -> arguments: `augment_policies.op_argument` (shared with the device implementation), then what the
# op takes besides the image: the argument with a random sign (signed ops), with the op's seed (Cutout), or
# nothing (ops without argument).
# ---------------------------------------------------------------------------------------------------------

# name -> operation. Order is the reference's NAME_TO_FUNC.
_OPERATIONS: Mapping[str, Callable[..., tf.Tensor]] = {
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Invert": invert,
    "Rotate": rotate,
    "Posterize": posterize,
    "Solarize": solarize,
    "SolarizeAdd": solarize_add,
    "Color": color,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "Cutout": cutout,
}


def _randomly_negate(value: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Negates `value` with probability 1/2, so signed ops (rotate, shear, translate) go both ways."""
    negate = tf.random.stateless_uniform([], seed, dtype=tf.float32, alg=RNG_ALG) < 0.5
    return tf.where(negate, -value, value)


def _op_inputs(name: str, argument: tf.Tensor, seed: tf.Tensor) -> tuple[TensorLike, ...]:
    """What op `name` takes after the image, from its unsigned `argument` (float64 scalar tensor)."""
    if name in OPS_WITHOUT_ARGUMENT:
        return ()
    if name in SIGNED_OPS:
        return (_randomly_negate(argument, seed),)
    if name == "Cutout":
        return (argument, seed)
    return (argument,)


def level_to_op_inputs(
    name: str, level: TensorLike, seed: tf.Tensor, consts: PolicyConstants
) -> tuple[TensorLike, ...]:
    """What op `name` takes after the image at `level`: `op_argument`, then `_op_inputs`.

    `level` is a number, or a tensor whose value is known when the graph is built (a constant): levels
    are constants of the policy or the config, and the mapping is plain Python.
    """
    static_level = tf.get_static_value(level)
    if static_level is None:
        raise ValueError(f"the level of {name} must be known when the graph is built, got {level!r}")
    argument = op_argument(name, float(static_level), consts)
    return _op_inputs(name, tf.constant(argument, tf.float64), seed)


ArgsFn = Callable[[TensorLike, tf.Tensor, PolicyConstants], tuple[TensorLike, ...]]

# name -> (operation, level -> what the operation takes after the image).
OPS: Mapping[str, tuple[Callable[..., tf.Tensor], ArgsFn]] = {
    name: (operation, functools.partial(level_to_op_inputs, name)) for name, operation in _OPERATIONS.items()
}


_OP_NAMES: tuple[str, ...] = tuple(OPS)
VALID_AUGMENTS = (None, "autoaugment", "randaugment")


# ---------------------------------------------------------------------------------------------------------
# Applying operations
# ---------------------------------------------------------------------------------------------------------


def apply_op(
    image: tf.Tensor, name: str, level: TensorLike, seed: tf.Tensor, consts: PolicyConstants
) -> tf.Tensor:
    """Applies op `name` at `level` (the reference's magnitude scale, a constant), its own randomness from
    `seed`."""
    op, level_to_inputs = OPS[name]
    return op(image, *level_to_inputs(level, seed, consts))


def _apply_one_of(
    image: tf.Tensor,
    op_index: tf.Tensor,
    names: Sequence[str],
    arguments: Sequence[TensorLike],
    seed: tf.Tensor,
) -> tf.Tensor:
    """Applies `names[op_index]` (a tensor index) with its unsigned argument `arguments[op_index]` (float64
    scalar tensors): one `switch_case`, so only the chosen op runs."""
    branches = [
        lambda name=name, argument=argument: _OPERATIONS[name](image, *_op_inputs(name, argument, seed))
        for name, argument in zip(names, arguments)
    ]
    return tf.switch_case(op_index, branches)


def _check_inputs(image: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    image = tf.convert_to_tensor(image)
    seed = tf.convert_to_tensor(seed)
    if image.dtype != tf.uint8:
        raise TypeError(f"augmentations expect a uint8 image, got {image.dtype.name}")
    if image.shape.rank is not None and (image.shape.rank != 3 or image.shape[-1] not in (None, 3)):
        raise ValueError(f"augmentations expect an image of shape [H, W, 3], got {image.shape}")
    if seed.dtype not in (tf.int32, tf.int64) or not seed.shape.is_compatible_with([2]):
        raise ValueError(f"seed must be int32/int64 of shape [2], got {seed.dtype.name}{seed.shape}")
    return image, seed


def _finish(augmented: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
    """Restores the input's static shape, which `switch_case`/`cond` may have weakened."""
    return tf.ensure_shape(augmented, image.shape)


# ---------------------------------------------------------------------------------------------------------
# AutoAugment
# ---------------------------------------------------------------------------------------------------------


def _policy(policy: str) -> tuple[SubPolicy, ...]:
    if policy not in POLICIES:
        raise ValueError(f"Unknown AutoAugment policy {policy!r}; valid: {sorted(POLICIES)}")
    return POLICIES[policy]


def _autoaugment_seeds(seed: tf.Tensor) -> tf.Tensor:
    """Four independent seeds: [sub-policy choice, apply draws, op seed of slot 0, op seed of slot 1]."""
    return tf.random.experimental.stateless_split(seed, num=4, alg=RNG_ALG)


def autoaugment_choices(seed: tf.Tensor, policy: str = "v0") -> tuple[tf.Tensor, tf.Tensor]:
    """The random choices `autoaugment` makes for `seed`: (sub-policy index, applied? per op [2]).

    The sub-policy is uniform over the policy; op j is applied with its stated probability. Exposed so
    tests can check these distributions on the exact code path `autoaugment` uses.
    """
    subpolicies = _policy(policy)
    seeds = _autoaugment_seeds(tf.convert_to_tensor(seed))
    index = tf.random.stateless_uniform(
        [], seeds[0], minval=0, maxval=len(subpolicies), dtype=tf.int32, alg=RNG_ALG
    )
    probs = tf.constant([[p for _, p, _ in sub] for sub in subpolicies], tf.float32)
    draws = tf.random.stateless_uniform([probs.shape[1]], seeds[1], dtype=tf.float32, alg=RNG_ALG)
    return index, draws < tf.gather(probs, index)


def autoaugment(image: tf.Tensor, seed: tf.Tensor, policy: str = "v0") -> tf.Tensor:
    """AutoAugment: one sub-policy chosen uniformly, each of its ops applied in turn with its probability.

    Constants: cutout_const 100, translate_const 250 (the reference's AutoAugment hyper-parameters).
    The chosen sub-policy's ops, probabilities and arguments (`op_argument` of each op's level) are
    gathered from constant tables, so the graph holds one `switch_case` over the 16 ops per slot rather
    than a copy of every sub-policy.
    """
    image, seed = _check_inputs(image, seed)
    subpolicies = _policy(policy)
    index, applied = autoaugment_choices(seed, policy)
    seeds = _autoaugment_seeds(seed)
    op_table = tf.constant([[_OP_NAMES.index(name) for name, _, _ in sub] for sub in subpolicies], tf.int32)
    argument_table = tf.constant(
        [[op_argument(name, level, AUTOAUGMENT_CONSTANTS) for name, _, level in sub] for sub in subpolicies],
        tf.float64,
    )
    augmented = image
    for slot in range(op_table.shape[1]):
        op_index = op_table[index, slot]
        arguments = [argument_table[index, slot]] * len(_OP_NAMES)  # whichever op the index picks
        op_seed = seeds[2 + slot]
        augmented = tf.cond(
            applied[slot],
            lambda im=augmented, i=op_index, a=arguments, s=op_seed: _apply_one_of(im, i, _OP_NAMES, a, s),
            lambda im=augmented: im,
        )
    return _finish(augmented, image)


# ---------------------------------------------------------------------------------------------------------
# RandAugment
# ---------------------------------------------------------------------------------------------------------


def _randaugment_seeds(seed: tf.Tensor) -> tf.Tensor:
    """Two independent seeds: [op choices, parent of the per-layer op seeds]."""
    return tf.random.experimental.stateless_split(seed, num=2, alg=RNG_ALG)


def randaugment_op_indices(seed: tf.Tensor, num_layers: int) -> tf.Tensor:
    """Indices into `RANDAUGMENT_OPS` that `randaugment` picks for `seed`: uniform, with replacement."""
    seeds = _randaugment_seeds(tf.convert_to_tensor(seed))
    return tf.random.stateless_uniform(
        [num_layers], seeds[0], minval=0, maxval=len(RANDAUGMENT_OPS), dtype=tf.int32, alg=RNG_ALG
    )


def randaugment(
    image: tf.Tensor,
    seed: tf.Tensor,
    num_layers: int,
    magnitude: float,
    constants: PolicyConstants = RANDAUGMENT_CONSTANTS,
) -> tf.Tensor:
    """RandAugment: `num_layers` times, apply one op drawn uniformly from `RANDAUGMENT_OPS` at `magnitude`.

    As in the reference, the chosen op is always applied (the reference's per-layer probability is drawn
    but unused), signed ops take a random sign, and `constants` default to the reference's cutout_const
    40, translate_const 100. Magnitudes above MAX_LEVEL (10) extrapolate (EfficientNet-B5 uses 17, B7 28).
    """
    image, seed = _check_inputs(image, seed)
    if num_layers < 0 or magnitude < 0:
        raise ValueError(f"RandAugment needs num_layers, magnitude >= 0; got {num_layers}, {magnitude}")
    if num_layers == 0:
        return image
    op_indices = randaugment_op_indices(seed, num_layers)
    parent = _randaugment_seeds(seed)[1]
    layer_seeds = tf.random.experimental.stateless_split(parent, num=num_layers, alg=RNG_ALG)
    arguments = [
        tf.constant(op_argument(name, float(magnitude), constants), tf.float64)
        for name in RANDAUGMENT_OPS
    ]
    augmented = image
    for layer in range(num_layers):
        augmented = _apply_one_of(
            augmented, op_indices[layer], RANDAUGMENT_OPS, arguments, layer_seeds[layer]
        )
    return _finish(augmented, image)


# ---------------------------------------------------------------------------------------------------------
# Dispatch from the config
# ---------------------------------------------------------------------------------------------------------


def apply(
    image: tf.Tensor,
    seed: tf.Tensor,
    augment: str | None,
    randaugment_num_layers: int,
    randaugment_magnitude: float,
    randaugment_constants: PolicyConstants = RANDAUGMENT_CONSTANTS,
) -> tf.Tensor:
    """Applies `config.augment` (None, "autoaugment" = policy v0, or "randaugment") to a uint8 image."""
    if augment is None:
        return image
    if augment == "autoaugment":
        return autoaugment(image, seed, "v0")
    if augment == "randaugment":
        return randaugment(image, seed, randaugment_num_layers, randaugment_magnitude, randaugment_constants)
    raise ValueError(f"config.augment must be one of {VALID_AUGMENTS}, got {augment!r}")
