"""Random flip, AutoAugment (policy v0) and RandAugment as batched JAX functions, for augmenting on the
accelerators inside the train step instead of on the host's CPU (issue 15: the host's tf.data pipeline
does ~376 images/s per core at 224 pixels without augmentation, 162 with AutoAugment, 132 with
RandAugment; see BENCHMARKS.md).

The host implementation, `augment.py` (TensorFlow inside tf.data), is the reference: the same ops,
sub-policies, probabilities, magnitudes, fill value and rounding, read from the tables and the level ->
argument mapping both share (`augment_policies.py`: `op_argument`, computed in Python when the policy's
tables are built); `tests/test_device_augment.py` measures every op against it on photographs.
Where the two can differ, and by how much (AutoContrast's table, nearest-neighbour rounding ties of the
geometric ops), the function concerned says so.

Images are uint8 batches [N, H, W, 3] with static shapes. Nothing branches in Python on a traced value,
so one compilation serves every step (jit and pmap alike).

Randomness is a function of (key, step, example index) only: `example_keys` gives example i at step s the
key `fold_in(fold_in(key, s), i)`, from which every draw for that example is split:
  example key -> [flip, policy]
  AutoAugment policy key -> [sub-policy, application draws, op 0, op 1]
  RandAugment policy key -> [op choices, layers]; layers -> one key per layer
  op key (AutoAugment op or RandAugment layer) -> [sign, the op's own draws (Cutout's centre)]
So an example gets the same augmentation whatever else is in its batch, on any number of devices, and a
job resumed at step s replays it. The draws themselves differ from the host's (JAX's threefry against
TensorFlow's Philox): the two implementations agree in distribution, not draw for draw.

How the ops are batched. The 16 ops fall into four families, each with one expensive part:
  * table ops (AutoContrast, Equalize, Invert, Posterize, Solarize, SolarizeAdd): a 256-entry lookup
    table per channel, applied with one gather;
  * blend ops (Color, Contrast, Brightness, Sharpness): PIL's blend of a degenerate image with the image;
  * affine ops (Rotate, ShearX, ShearY, TranslateX, TranslateY): one nearest-neighbour warp by a matrix;
  * Cutout: one grey rectangle.
An op is applied by `lax.switch` over the families, and inside its family by `lax.switch` over what the
op contributes (its table, its degenerate image, its matrix). Under `jax.vmap` over the examples a switch
on a per-example index becomes a select that evaluates every branch, so each op slot costs every example
one warp, one table gather, one blend and a cutout mask, plus their inputs (a histogram, the luma, a 3x3
smoothing), instead of all 16 ops (five warps, six gathers, four blends) as a switch over the ops would.
The alternative, `lax.map` over the examples, runs only the chosen branch, one example at a time.
`augment_batch` takes either (`batching`); `benchmarks/device_augment.py` measures both. On the CPU
`map` is much faster (BENCHMARKS.md, "Augmentation on the device"): `vmap` pays for every family, and
XLA:CPU runs their fused select slower than its parts. On GPU and TPU `auto` keeps `vmap`, because a
loop over the examples runs small kernels (and, on a GPU, a host round trip per conditional) one
example at a time, while `vmap` works on the whole batch at once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from efficientnet_jax.augment_policies import (
    AUTOAUGMENT_CONSTANTS,
    FILL_VALUE,
    POLICIES,
    RANDAUGMENT_CONSTANTS,
    RANDAUGMENT_OPS,
    SIGNED_OPS,
    PolicyConstants,
    SubPolicy,
    op_argument,
)

VALID_AUGMENTS = (None, "autoaugment", "randaugment")
BATCHINGS = ("auto", "vmap", "map")
_CHANNEL_OFFSETS = np.arange(3, dtype=np.int32) * 256  # channel c's table starts at 256 c


# ---------------------------------------------------------------------------------------------------------
# Table ops: image (uint8 [H, W, 3]), argument -> lookup table int32 [3, 256], one row per channel.
# ---------------------------------------------------------------------------------------------------------


def _levels() -> jax.Array:
    """The identity table [3, 256]."""
    return jnp.broadcast_to(jnp.arange(256, dtype=jnp.int32), (3, 256))


def _autocontrast_table(image: jax.Array, argument: jax.Array) -> jax.Array:
    """Stretches each channel's [darkest, brightest] to [0, 255]; a channel with one value is unchanged.

    Exact rational arithmetic, floor(255 (v - lo) / (hi - lo)). PIL, and the host after it, truncate the
    float64 `v * scale - lo * scale` instead, which lands one level lower where the exact value is an
    integer and the float64 rounding falls below it: 12,094 of the 8,355,840 (lo, hi, v) entries (0.14%),
    in 5,958 of the 32,640 (lo, hi) pairs; counted by `tests/test_device_augment.py`. Accelerators
    lack float64 (TPUs have none, GPUs run it many times slower), and the difference is one level.
    """
    del argument
    x = image.astype(jnp.int32)
    lo = x.min(axis=(0, 1))[:, None]
    hi = x.max(axis=(0, 1))[:, None]
    levels = _levels()
    stretched = jnp.clip((levels - lo) * 255 // jnp.maximum(hi - lo, 1), 0, 255)
    return jnp.where(hi > lo, stretched, levels)


def _equalize_table(image: jax.Array, argument: jax.Array) -> jax.Array:
    """PIL's `equalize` table per channel, in integers (so exactly the host's).

    step = (pixel count - count of the last occupied level) // 255; level i maps to
    (pixels below i + step // 2) // step, clipped to 255; a channel with step 0 is left unchanged.
    """
    del argument
    values = (image.astype(jnp.int32) + _CHANNEL_OFFSETS).reshape(-1)
    hist = jnp.zeros(3 * 256, jnp.int32).at[values].add(1).reshape(3, 256)
    last_level = 255 - jnp.argmax(hist[:, ::-1] > 0, axis=1)
    last_count = jnp.take_along_axis(hist, last_level[:, None], axis=1)
    step = (hist.sum(axis=1, keepdims=True) - last_count) // 255
    below = jnp.cumsum(hist, axis=1) - hist
    table = jnp.clip((below + step // 2) // jnp.maximum(step, 1), 0, 255)
    return jnp.where(step > 0, table, _levels())


def _invert_table(image: jax.Array, argument: jax.Array) -> jax.Array:
    """255 - pixel (PIL `invert`)."""
    del image, argument
    return 255 - _levels()


def _posterize_table(image: jax.Array, bits: jax.Array) -> jax.Array:
    """Keeps the `bits` (clipped to [1, 8]) most significant bits (PIL `posterize`)."""
    del image
    shift = 8 - jnp.clip(bits.astype(jnp.int32), 1, 8)
    return (_levels() >> shift) << shift


def _solarize_table(image: jax.Array, threshold: jax.Array) -> jax.Array:
    """Inverts every level at or above `threshold` (PIL `solarize`)."""
    del image
    levels = _levels()
    return jnp.where(levels < threshold.astype(jnp.int32), levels, 255 - levels)


def _solarize_add_table(image: jax.Array, addition: jax.Array) -> jax.Array:
    """Adds `addition` (result clipped to [0, 255]) to levels below 128 (the reference's SolarizeAdd)."""
    del image
    levels = _levels()
    return jnp.where(levels < 128, jnp.clip(levels + addition.astype(jnp.int32), 0, 255), levels)


def _apply_table(image: jax.Array, table: jax.Array) -> jax.Array:
    """out[y, x, c] = table[c, image[y, x, c]]: one gather for the three channels."""
    return table.reshape(-1)[image.astype(jnp.int32) + _CHANNEL_OFFSETS].astype(jnp.uint8)


# ---------------------------------------------------------------------------------------------------------
# Blend ops: image -> the degenerate image that the argument (PIL's enhance factor) blends from.
# ---------------------------------------------------------------------------------------------------------


def _luma(image: jax.Array) -> jax.Array:
    """Grey level [H, W] (int32) as PIL's `convert("L")`: ITU-R 601-2 in fixed point, rounded."""
    rgb = image.astype(jnp.int32)
    return (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16


def _grey(image: jax.Array) -> jax.Array:
    """Color: the image's grey version (factor 0 removes all saturation)."""
    return jnp.broadcast_to(_luma(image)[..., None], image.shape).astype(jnp.uint8)


def _mean_grey(image: jax.Array) -> jax.Array:
    """Contrast: the mean grey level everywhere, rounded half up as PIL does (`int(mean + 0.5)`).

    In integers, floor((2 sum + n) / 2n), which is exactly the host's float64 mean rounded: the sum is an
    exact integer there too, and a mean not at .5 lies at least 1/2n from it. Like the host, the mean
    and not the reference's H*W/256 (see `augment.contrast`).
    """
    count = image.shape[0] * image.shape[1]
    mean = (2 * _luma(image).sum() + count) // (2 * count)
    return jnp.full(image.shape, mean, jnp.uint8)


def _black(image: jax.Array) -> jax.Array:
    """Brightness: black (factor 0), so the blend multiplies the image by the factor."""
    return jnp.zeros_like(image)


def _smoothed(image: jax.Array) -> jax.Array:
    """Sharpness: PIL's SMOOTH filter [[1,1,1],[1,5,1],[1,1,1]] / 13 on the interior, rounded half up
    (floor((2 s + 13) / 26) in integers, as the host's float32 floor(s / 13 + 0.5): s / 13 is never
    within float32 rounding of .5); border pixels are the image's."""
    x = image.astype(jnp.int32)
    height, width = image.shape[:2]
    sums = 4 * x[1:-1, 1:-1]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            sums = sums + x[1 + dy : height - 1 + dy, 1 + dx : width - 1 + dx]
    return image.at[1:-1, 1:-1].set(((2 * sums + 13) // 26).astype(jnp.uint8))


def _blend(degenerate: jax.Array, image: jax.Array, factor: jax.Array) -> jax.Array:
    """PIL's `Image.blend`: degenerate + factor (image - degenerate) in float32, clipped, truncated.

    The product is rounded to float32 before the addition, as the host's (and PIL's) separate multiply
    and add do. XLA fuses the two, and LLVM then contracts them into one fused multiply-add whose single
    rounding can land just below an exact integer (55 + 1.72 * -25: 11.9999993 instead of 12.0), which the
    truncation turns into one level less: on the test photographs, 1 value in 3,000 for Color and
    Contrast. The identity select on the product keeps the two operations apart (an optimisation
    barrier or a reduce_precision does not: XLA removes them before code generation); the tests check
    these ops equal to the host's.
    """
    start = degenerate.astype(jnp.float32)
    product = factor.astype(jnp.float32) * (image.astype(jnp.float32) - start)
    product = jnp.where(jnp.isnan(product), 0.0, product)  # never NaN: an identity that blocks the FMA
    return jnp.clip(start + product, 0.0, 255.0).astype(jnp.uint8)


# ---------------------------------------------------------------------------------------------------------
# Affine ops: argument, image height and width -> the output -> input mapping (a0, a1, a2, b0, b1, b2):
# output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2), the host's convention.
# ---------------------------------------------------------------------------------------------------------


def _rotation(degrees: jax.Array, height: int, width: int) -> jax.Array:
    """Rotation by `degrees` about the centre ((W-1)/2, (H-1)/2), in float32 as the host computes it."""
    radians = degrees.astype(jnp.float32) * (math.pi / 180.0)
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    h, w = float(height - 1), float(width - 1)
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    return jnp.stack([cos, -sin, x_offset, sin, cos, y_offset])


def _shear_x(level: jax.Array, height: int, width: int) -> jax.Array:
    """Output (x, y) takes input (x + level y, y)."""
    del height, width
    one, zero = jnp.ones_like(level), jnp.zeros_like(level)
    return jnp.stack([one, level, zero, zero, one, zero]).astype(jnp.float32)


def _shear_y(level: jax.Array, height: int, width: int) -> jax.Array:
    """Output (x, y) takes input (x, level x + y)."""
    del height, width
    one, zero = jnp.ones_like(level), jnp.zeros_like(level)
    return jnp.stack([one, zero, zero, level, one, zero]).astype(jnp.float32)


def _translate_x(pixels: jax.Array, height: int, width: int) -> jax.Array:
    """Output (x, y) takes input (x + pixels, y): content moves left (fractional pixels allowed)."""
    del height, width
    one, zero = jnp.ones_like(pixels), jnp.zeros_like(pixels)
    return jnp.stack([one, zero, pixels, zero, one, zero]).astype(jnp.float32)


def _translate_y(pixels: jax.Array, height: int, width: int) -> jax.Array:
    """Output (x, y) takes input (x, y + pixels): content moves up."""
    del height, width
    one, zero = jnp.ones_like(pixels), jnp.zeros_like(pixels)
    return jnp.stack([one, zero, zero, zero, one, pixels]).astype(jnp.float32)


def _warp(image: jax.Array, matrix: jax.Array) -> jax.Array:
    """Nearest-neighbour inverse warp, uncovered pixels filled with FILL_VALUE.

    As TensorFlow's `ImageProjectiveTransformV3` (the host's): float32 source coordinates, rounded half
    away from zero, pixels whose source falls outside the image filled. All five ops are affine, so
    the projective division is by 1 and left out. Float32 evaluation order and sin/cos may differ
    from TensorFlow's by an ulp, which moves a source coordinate across a .5 tie only where it lies
    very close to one (the tests allow differences only within 1e-3 of a tie).
    """
    height, width = image.shape[:2]
    y = jnp.arange(height, dtype=jnp.float32)[:, None]
    x = jnp.arange(width, dtype=jnp.float32)[None, :]
    a0, a1, a2, b0, b1, b2 = matrix
    source_x = lax.round(a0 * x + a1 * y + a2, lax.RoundingMethod.AWAY_FROM_ZERO)
    source_y = lax.round(b0 * x + b1 * y + b2, lax.RoundingMethod.AWAY_FROM_ZERO)
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    row = jnp.clip(source_y, 0, height - 1).astype(jnp.int32)
    col = jnp.clip(source_x, 0, width - 1).astype(jnp.int32)
    return jnp.where(inside[..., None], image[row, col], jnp.uint8(FILL_VALUE))


# ---------------------------------------------------------------------------------------------------------
# Cutout
# ---------------------------------------------------------------------------------------------------------


def cutout_at(image: jax.Array, pad_size: jax.Array, center_y: jax.Array, center_x: jax.Array) -> jax.Array:
    """Fills rows [cy - pad, cy + pad) x columns [cx - pad, cx + pad), cut at the borders, with 128."""
    rows = jnp.arange(image.shape[0])[:, None]
    cols = jnp.arange(image.shape[1])[None, :]
    inside = (
        (rows >= center_y - pad_size)
        & (rows < center_y + pad_size)
        & (cols >= center_x - pad_size)
        & (cols < center_x + pad_size)
    )
    return jnp.where(inside[..., None], jnp.uint8(FILL_VALUE), image)


def _cutout(image: jax.Array, pad_size: jax.Array, key: jax.Array) -> jax.Array:
    """A (2 pad_size)^2 grey square centred on a pixel drawn uniformly (so the border may cut it)."""
    y_key, x_key = jax.random.split(key)
    center_y = jax.random.randint(y_key, (), 0, image.shape[0])
    center_x = jax.random.randint(x_key, (), 0, image.shape[1])
    return cutout_at(image, pad_size.astype(jnp.int32), center_y, center_x)


# ---------------------------------------------------------------------------------------------------------
# The ops by family, and applying one
# ---------------------------------------------------------------------------------------------------------

_TABLE_OPS: Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "AutoContrast": _autocontrast_table,
    "Equalize": _equalize_table,
    "Invert": _invert_table,
    "Posterize": _posterize_table,
    "Solarize": _solarize_table,
    "SolarizeAdd": _solarize_add_table,
}
_BLEND_OPS: Mapping[str, Callable[[jax.Array], jax.Array]] = {
    "Color": _grey,
    "Contrast": _mean_grey,
    "Brightness": _black,
    "Sharpness": _smoothed,
}
_AFFINE_OPS: Mapping[str, Callable[[jax.Array, int, int], jax.Array]] = {
    "Rotate": _rotation,
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
}
_FAMILIES: tuple[tuple[str, ...], ...] = (
    tuple(_TABLE_OPS),
    tuple(_BLEND_OPS),
    tuple(_AFFINE_OPS),
    ("Cutout",),
)
# Every op, family by family: the index `apply_op_by_index` and the policies' choices use.
OP_NAMES: tuple[str, ...] = tuple(name for family in _FAMILIES for name in family)
_FAMILY_OF_OP = np.array([f for f, family in enumerate(_FAMILIES) for _ in family], np.int32)
_MEMBER_OF_OP = np.array([m for family in _FAMILIES for m in range(len(family))], np.int32)


def apply_op_by_index(
    image: jax.Array, op_index: jax.Array, argument: jax.Array, key: jax.Array
) -> jax.Array:
    """Applies `OP_NAMES[op_index]` (a traced index) with its `argument` to one image.

    `argument` is what the host's op takes (degrees, shear coefficient, pixels, bits, threshold,
    addition, enhance factor, cutout half-size; ignored by AutoContrast, Equalize, Invert), as float32;
    `key` is used by Cutout only. Two levels of `lax.switch`, family then member (module docstring);
    the families an op does not belong to see a member index out of their range, which `lax.switch`
    clamps, and the family switch discards their result.
    """
    argument = jnp.asarray(argument, jnp.float32)
    height, width = image.shape[:2]
    member = jnp.asarray(_MEMBER_OF_OP)[op_index]

    def table_op():
        tables = [functools.partial(fn, image, argument) for fn in _TABLE_OPS.values()]
        return _apply_table(image, lax.switch(member, tables))

    def blend_op():
        return _blend(
            lax.switch(member, [functools.partial(fn, image) for fn in _BLEND_OPS.values()]), image, argument
        )

    def affine_op():
        matrices = [functools.partial(fn, argument, height, width) for fn in _AFFINE_OPS.values()]
        return _warp(image, lax.switch(member, matrices))

    def cutout_op():
        return _cutout(image, argument, key)

    return lax.switch(jnp.asarray(_FAMILY_OF_OP)[op_index], [table_op, blend_op, affine_op, cutout_op])


# ---------------------------------------------------------------------------------------------------------
# Policies, one example at a time
# ---------------------------------------------------------------------------------------------------------


class OpChoices(NamedTuple):
    """What a policy does to one example, op slot by op slot (arrays of length num_slots)."""

    op_index: jax.Array  # int32, into OP_NAMES
    argument: jax.Array  # float32, signed
    applied: jax.Array  # bool
    key: jax.Array  # the op's own draws (Cutout's centre)


_SIGNED = np.array([name in SIGNED_OPS for name in OP_NAMES])


def _op_slot(op_index: jax.Array, magnitude: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(signed argument, op key) of one slot: signed ops negate with probability 1/2, as on the host."""
    sign_key, op_key = jax.random.split(key)
    negate = jnp.asarray(_SIGNED)[op_index] & (jax.random.uniform(sign_key) < 0.5)
    return jnp.where(negate, -magnitude, magnitude), op_key


def _subpolicies(policy: str) -> tuple[SubPolicy, ...]:
    if policy not in POLICIES:
        raise ValueError(f"Unknown AutoAugment policy {policy!r}; valid: {sorted(POLICIES)}")
    return POLICIES[policy]


def autoaugment_choices(key: jax.Array, policy: str = "v0") -> tuple[jax.Array, OpChoices]:
    """(sub-policy index, the ops it applies) for one example: the sub-policy is uniform over the
    policy, its op j applied with its stated probability, at its level with AutoAugment's constants."""
    subpolicies = _subpolicies(policy)
    op_table = np.array([[OP_NAMES.index(name) for name, _, _ in sub] for sub in subpolicies], np.int32)
    probabilities = np.array([[p for _, p, _ in sub] for sub in subpolicies], np.float32)
    magnitudes = np.array(
        [[op_argument(name, level, AUTOAUGMENT_CONSTANTS) for name, _, level in sub] for sub in subpolicies],
        np.float32,
    )
    choice_key, apply_key, *slot_keys = jax.random.split(key, 2 + op_table.shape[1])
    index = jax.random.randint(choice_key, (), 0, len(subpolicies))
    applied = jax.random.uniform(apply_key, (op_table.shape[1],)) < jnp.asarray(probabilities)[index]
    op_index = jnp.asarray(op_table)[index]
    slots = [_op_slot(op_index[s], jnp.asarray(magnitudes)[index, s], k) for s, k in enumerate(slot_keys)]
    arguments, op_keys = zip(*slots)
    return index, OpChoices(op_index, jnp.stack(arguments), applied, jnp.stack(op_keys))


def randaugment_choices(
    key: jax.Array, num_layers: int, magnitude: float, constants: PolicyConstants = RANDAUGMENT_CONSTANTS
) -> OpChoices:
    """The `num_layers` ops RandAugment applies to one example: each uniform over `RANDAUGMENT_OPS`
    (with replacement), always applied (the reference's per-layer probability is unused), at `magnitude`
    with `constants` (the reference's by default)."""
    choice_key, layers_key = jax.random.split(key)
    to_op_index = np.array([OP_NAMES.index(name) for name in RANDAUGMENT_OPS], np.int32)
    magnitudes = np.array(
        [op_argument(name, magnitude, constants) for name in OP_NAMES], np.float32
    )
    op_index = jnp.asarray(to_op_index)[
        jax.random.randint(choice_key, (num_layers,), 0, len(RANDAUGMENT_OPS))
    ]
    slots = [
        _op_slot(op_index[layer], jnp.asarray(magnitudes)[op_index[layer]], k)
        for layer, k in enumerate(jax.random.split(layers_key, num_layers))
    ]
    arguments, op_keys = zip(*slots)
    return OpChoices(op_index, jnp.stack(arguments), jnp.ones((num_layers,), bool), jnp.stack(op_keys))


def apply_choices(image: jax.Array, choices: OpChoices) -> jax.Array:
    """Applies the chosen ops in order, each only where `choices.applied`."""
    for slot in range(choices.op_index.shape[0]):
        augmented = apply_op_by_index(
            image, choices.op_index[slot], choices.argument[slot], choices.key[slot]
        )
        image = jnp.where(choices.applied[slot], augmented, image)
    return image


def flip(image: jax.Array, key: jax.Array) -> jax.Array:
    """Mirrors the image left-right with probability 1/2 (the host's `stateless_random_flip_left_right`)."""
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def augment_example(
    image: jax.Array,
    key: jax.Array,
    augment: str | None,
    randaugment_num_layers: int,
    randaugment_magnitude: float,
    randaugment_constants: PolicyConstants = RANDAUGMENT_CONSTANTS,
) -> jax.Array:
    """The training augmentation of one example after its crop and resize: random flip, then
    `augment` (None, "autoaugment" = policy v0, "randaugment"), as the host's `train_image` does."""
    _check_policy(augment, randaugment_num_layers, randaugment_magnitude)
    flip_key, policy_key = jax.random.split(key)
    image = flip(image, flip_key)
    if augment == "autoaugment":
        return apply_choices(image, autoaugment_choices(policy_key, "v0")[1])
    if augment == "randaugment" and randaugment_num_layers > 0:
        return apply_choices(
            image,
            randaugment_choices(
                policy_key, randaugment_num_layers, randaugment_magnitude, randaugment_constants
            ),
        )
    return image


def _check_policy(augment: str | None, num_layers: int, magnitude: float) -> None:
    if augment not in VALID_AUGMENTS:
        raise ValueError(f"config.augment must be one of {VALID_AUGMENTS}, got {augment!r}")
    if augment == "randaugment" and (num_layers < 0 or magnitude < 0):
        raise ValueError(
            f"RandAugment needs config.randaugment_num_layers and config.randaugment_magnitude >= 0; "
            f"got {num_layers}, {magnitude}"
        )


# ---------------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------------


def example_keys(key: jax.Array, step: jax.Array | int, example_indices: jax.Array) -> jax.Array:
    """One key per example: fold_in(fold_in(key, step), index), so an example's augmentation depends on
    (key, step, its index) only, never on the batch layout or the devices.

    `example_indices` are the examples' positions in their host's batch (under pmap, device d of a host
    holds d * per_device_batch + arange(per_device_batch)); `key` should already differ between hosts
    (e.g. folded with the process index), as the host pipeline's seeds do.
    """
    step_key = jax.random.fold_in(key, step)
    return jax.vmap(lambda index: jax.random.fold_in(step_key, index))(example_indices)


def resolve_batching(batching: str, augment: str | None) -> str:
    """`batching` ("auto", "vmap", "map") as `augment_batch` runs it on the default backend: "auto" is
    "map" for a policy on the CPU, where it is faster, else "vmap" (module docstring; the flip alone has
    no switch for `vmap` to turn into a select, and is faster with it: BENCHMARKS.md)."""
    if batching not in BATCHINGS:
        raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")
    if batching == "auto":
        return "map" if augment is not None and jax.default_backend() == "cpu" else "vmap"
    return batching


def augment_batch(
    images: jax.Array,
    keys: jax.Array,
    augment: str | None,
    randaugment_num_layers: int = 2,
    randaugment_magnitude: float = 10.0,
    randaugment_constants: PolicyConstants = RANDAUGMENT_CONSTANTS,
    batching: str = "auto",
) -> jax.Array:
    """`augment_example` on every example of a uint8 batch [N, H, W, 3], with its key of `keys` [N]
    (`example_keys`): vectorised with `jax.vmap`, or one example after another with `lax.map`
    (`resolve_batching`). Both give the same images; they differ in speed only."""
    if images.dtype != jnp.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"augment_batch expects uint8 images [N, H, W, 3], got {images.dtype}{images.shape}")
    _check_policy(augment, randaugment_num_layers, randaugment_magnitude)

    def one_example(image: jax.Array, key: jax.Array) -> jax.Array:
        return augment_example(
            image, key, augment, randaugment_num_layers, randaugment_magnitude, randaugment_constants
        )

    if resolve_batching(batching, augment) == "vmap":
        return jax.vmap(one_example)(images, keys)
    return lax.map(lambda example: one_example(*example), (images, keys))
