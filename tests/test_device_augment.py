"""Tests for `efficientnet_jax.device_augment` against the host implementation, `efficientnet_jax.augment`
(itself tested against PIL and numpy in `test_augment.py`), on the same photographs.

Per op: the device op and the host op on the same photograph and argument, for every argument the
policies produce (levels 0-10, 17, 22, 23, 28, both policies' constants, both signs), each within a
tolerance stated beside it. Then the level -> argument mapping, the statistics of the random choices
(the same checks as the host's), that the policies apply what they choose, the key derivation (same
key, step and index: same augmentation, whatever the batch), and no recompilation across steps.

Compilation dominates on CPU: every op runs through one jitted `apply_op_by_index` (the op is a traced
index), and each batched policy is compiled once per module.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from efficientnet_jax import augment as A  # noqa: E402
from efficientnet_jax import device_augment as D  # noqa: E402
from tests.augmentation_helpers import (  # noqa: E402
    PHOTOGRAPHS,
    H,
    W,
    assert_autoaugment_choice_statistics,
    assert_uniform_choices,
    load_photograph,
    nearest_warp,
)

LEVELS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 17, 22, 23, 28]
CONSTANTS = {"aa": A.AUTOAUGMENT_CONSTANTS, "ra": A.RANDAUGMENT_CONSTANTS}
KEY = jax.random.key(7)
RA_LAYERS, RA_MAGNITUDE = 2, 5.0  # M=5: at M=10 the 100-pixel translation blanks this 96-pixel image
BATCH = 16


@pytest.fixture(scope="module", params=PHOTOGRAPHS)
def photo(request) -> np.ndarray:
    return load_photograph(request.param)


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    return load_photograph("china.jpg")


# One compilation for every op (the op index and argument are traced).
_apply = jax.jit(D.apply_op_by_index)


def _device(image: np.ndarray, name: str, argument: float) -> np.ndarray:
    return np.asarray(_apply(image, np.int32(D.OP_NAMES.index(name)), np.float32(argument), KEY))


def _host(image: np.ndarray, name: str, argument: float) -> np.ndarray:
    op = A.OPS[name][0]
    no_argument = name in ("AutoContrast", "Equalize", "Invert")
    return (op(tf.constant(image)) if no_argument else op(tf.constant(image), argument)).numpy()


def _policy_arguments(name: str) -> list[float]:
    """Every argument the policies give op `name` at LEVELS, both signs for signed ops."""
    values = {D.op_argument(name, level, consts) for level in LEVELS for consts in CONSTANTS.values()}
    if name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
        values |= {-v for v in values}
    return sorted(values)


def _low_contrast(image: np.ndarray) -> np.ndarray:
    return (image // 3 + 60).astype(np.uint8)  # real photographs often span 0..255 already


# ---------------------------------------------------------------------------------------------------------
# Per op, device against host
# ---------------------------------------------------------------------------------------------------------

# Tolerance: none. Integer arithmetic on both sides (tables), or the same float32 operations, each
# rounded, on exact integer inputs (blends: PIL's `d + f (x - d)`, truncated; without the device's guard
# against a fused multiply-add, 1 value in 3,000 of Color and Contrast came out one level lower).
EXACT_OPS = (
    "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness",
)  # fmt: skip


@pytest.mark.parametrize("name", EXACT_OPS)
def test_exact_ops_equal_host(photo, name):
    for image in (photo, _low_contrast(photo)):
        for argument in _policy_arguments(name):
            np.testing.assert_array_equal(
                _device(image, name, argument), _host(image, name, argument), err_msg=f"{name}({argument})"
            )


def _stretch_tables(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AutoContrast's tables [3, 256] for `image`: exact floor(255 (v - lo) / (hi - lo)), and PIL's
    float64 `int(v * scale - lo * scale)` (which the host reproduces)."""
    lo = image.min(axis=(0, 1)).astype(np.int64)[:, None]
    hi = image.max(axis=(0, 1)).astype(np.int64)[:, None]
    v = np.arange(256)[None, :]
    exact = np.clip((v - lo) * 255 // (hi - lo), 0, 255)
    scale = 255.0 / (hi - lo)
    pil = np.clip(v * scale - lo * scale, 0, 255).astype(np.int64)
    return exact, pil


def test_autocontrast_is_the_exact_stretch_within_one_level_of_host(photo):
    # Tolerance: the host one level lower exactly where PIL's float64 formula rounds below an exact
    # integer (next test: 0.14% of all table entries); on these photographs up to 1.6% of the values,
    # when an affected level is a common one.
    for image in (photo, _low_contrast(photo)):
        exact, pil = _stretch_tables(image)
        channels = np.arange(3)
        device = _device(image, "AutoContrast", 0.0)
        np.testing.assert_array_equal(device, exact[channels, image])
        np.testing.assert_array_equal(_host(image, "AutoContrast", 0.0), pil[channels, image])
        assert set(np.unique(exact - pil)) <= {0, 1}
    flat = np.full((H, W, 3), 77, np.uint8)  # a channel with one value is left unchanged
    np.testing.assert_array_equal(_device(flat, "AutoContrast", 0.0), flat)


def test_autocontrast_table_differs_from_pil_float64_only_by_its_rounding():
    # Every (lo, hi) pair, every level v: the device's table against PIL's float64 formula (the host's).
    lo, hi = (a.astype(np.int32) for a in np.triu_indices(256, k=1))
    pairs = np.stack([lo, hi], axis=1).reshape(-1, 3, 2)  # 32,640 pairs = 10,880 images of 3 channels
    images = np.transpose(pairs, (0, 2, 1))[:, :, None, :].astype(np.uint8)  # [N, 2, 1, 3]: pixels lo, hi
    tables = np.asarray(jax.jit(jax.vmap(lambda im: D._autocontrast_table(im, jnp.float32(0))))(images))
    tables = tables.reshape(-1, 256).astype(np.int64)
    v = np.arange(256, dtype=np.float64)[None, :]
    scale = 255.0 / (hi - lo).astype(np.float64)[:, None]
    pil = np.clip(v * scale - lo[:, None] * scale, 0, 255).astype(np.int64)
    differ = tables != pil
    assert set(np.unique(tables - pil)) == {0, 1}  # only ever one level above PIL
    assert differ.sum() == 12_094 and differ.any(axis=1).sum() == 5_958  # the counts in the docstring


# Geometric ops: nearest neighbour in float32 on both sides, but XLA's and TensorFlow's float32 may
# differ by an ulp (sin/cos, fused multiply-add), which moves a source coordinate across a rounding tie
# only where it lies within 1e-3 of one. So: pixels away from ties (the numpy warp's tie mask) agree
# exactly, and at most 1% of all pixels differ (on the CPU none does, at any argument).
def _source_of(name: str, argument: float):
    if name == "Rotate":
        t = math.radians(argument)
        cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
        return lambda x, y: (
            math.cos(t) * (x - cx) - math.sin(t) * (y - cy) + cx,
            math.sin(t) * (x - cx) + math.cos(t) * (y - cy) + cy,
        )
    return {
        "ShearX": lambda x, y: (x + argument * y, y),
        "ShearY": lambda x, y: (x, argument * x + y),
        "TranslateX": lambda x, y: (x + argument, y),
        "TranslateY": lambda x, y: (x, y + argument),
    }[name]


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"])
def test_geometric_ops_match_host_away_from_rounding_ties(photo, name):
    for argument in _policy_arguments(name) + [12.5, -0.5]:  # plus exact ties: both round away from 0
        device, host = _device(photo, name, argument), _host(photo, name, argument)
        _, tie = nearest_warp(photo, _source_of(name, argument))
        differ = (device != host).any(axis=-1)
        assert not (differ & ~tie).any(), f"{name}({argument}) differs away from ties"
        assert differ.mean() <= 0.01, f"{name}({argument}): {differ.mean():.4f} of pixels differ"


@pytest.mark.parametrize("pad, cy, cx", [(0, 30, 40), (10, 30, 40), (10, 0, 0), (25, 63, 95), (200, 3, 3)])
def test_cutout_at_equals_host(china, pad, cy, cx):
    np.testing.assert_array_equal(
        np.asarray(D.cutout_at(china, pad, cy, cx)), A.cutout_at(china, pad, cy, cx).numpy()
    )


def test_cutout_is_one_grey_square_at_a_random_centre(china):
    image = np.where(china == 128, 127, china).astype(np.uint8)  # so 128 marks the cutout only
    pad, cutout = 4, np.int32(D.OP_NAMES.index("Cutout"))
    boxes = set()
    for i in range(40):
        out = np.asarray(_apply(image, cutout, np.float32(pad), jax.random.fold_in(KEY, i)))
        mask = (out == 128).all(axis=-1)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        np.testing.assert_array_equal(mask, np.outer(mask.any(axis=1), mask.any(axis=0)))  # a rectangle
        assert 0 < rows.size <= 2 * pad and 0 < cols.size <= 2 * pad
        np.testing.assert_array_equal(out[~mask], image[~mask])
        boxes.add((rows[0], rows[-1], cols[0], cols[-1]))
    assert len(boxes) >= 35  # centres uniform over 6,144 pixels: 40 draws rarely coincide


# ---------------------------------------------------------------------------------------------------------
# Level -> argument, the policies' tables
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("consts", CONSTANTS.values(), ids=CONSTANTS.keys())
def test_level_to_argument_equals_host(consts):
    for name in D.OP_NAMES:
        for level in LEVELS:
            host = A.OPS[name][1](
                tf.constant(float(level), tf.float64), tf.constant([1, 2], tf.int64), consts
            )
            expected = abs(float(host[0].numpy())) if host else 0.0  # the host draws the sign here
            assert D.op_argument(name, level, consts) == expected, (name, level)


def test_ops_and_policies_are_the_hosts():
    assert sorted(D.OP_NAMES) == sorted(A.OPS) and len(D.OP_NAMES) == 16
    assert D.POLICIES is A.POLICIES and D.RANDAUGMENT_OPS is A.RANDAUGMENT_OPS


# ---------------------------------------------------------------------------------------------------------
# Statistics of the random choices (the host's checks, on the device's draws)
# ---------------------------------------------------------------------------------------------------------


def _keys(n: int, step: int = 0) -> jax.Array:
    return D.example_keys(KEY, step, jnp.arange(n))


def _signed(name: str) -> bool:
    return name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


@pytest.mark.parametrize(
    "constants", [A.RANDAUGMENT_CONSTANTS, A.PolicyConstants(cutout_const=6, translate_const=14)]
)  # the reference's and another pair (config.randaugment_{cutout,translate}_const)
def test_randaugment_picks_ops_uniformly_with_random_signs(constants):
    n = 3000
    choices = jax.jit(jax.vmap(lambda k: D.randaugment_choices(k, 2, 10.0, constants)))(_keys(n))
    op_index, argument = np.asarray(choices.op_index), np.asarray(choices.argument)
    assert_uniform_choices(op_index, 16)
    assert np.asarray(choices.applied).all()  # always applied, as the reference
    magnitudes = np.array([D.op_argument(name, 10.0, constants) for name in D.OP_NAMES])
    np.testing.assert_array_equal(np.abs(argument), magnitudes[op_index].astype(np.float32))
    signed = np.array([_signed(name) for name in D.OP_NAMES])[op_index]
    negative = (argument[signed] < 0).mean()
    assert abs(negative - 0.5) <= 4.5 * math.sqrt(0.25 / signed.sum())
    assert not (argument[~signed] < 0).any()


def test_autoaugment_subpolicies_uniform_and_ops_at_their_probabilities():
    n = 5000
    index, choices = jax.jit(jax.vmap(D.autoaugment_choices))(_keys(n))
    index = np.asarray(index)
    assert_autoaugment_choice_statistics(index, np.asarray(choices.applied), A.POLICIES["v0"])
    # The chosen sub-policy's ops, at their levels.
    policy = A.POLICIES["v0"]
    names = np.array([[D.OP_NAMES.index(op) for op, _, _ in sub] for sub in policy])[index]
    np.testing.assert_array_equal(np.asarray(choices.op_index), names)
    magnitudes = np.array(
        [[D.op_argument(op, level, A.AUTOAUGMENT_CONSTANTS) for op, _, level in sub] for sub in policy],
        np.float32,
    )[index]
    np.testing.assert_array_equal(np.abs(np.asarray(choices.argument)), magnitudes)


def test_flip_is_a_fair_mirror(china):
    n = 2000
    image = china[:2, :3]
    flipped = np.asarray(jax.jit(jax.vmap(D.flip, in_axes=(None, 0)))(image, _keys(n)))
    is_mirror = (flipped == image[:, ::-1]).all(axis=(1, 2, 3))
    assert ((flipped == image).all(axis=(1, 2, 3)) | is_mirror).all()
    assert abs(is_mirror.mean() - 0.5) <= 4.5 * math.sqrt(0.25 / n)


# ---------------------------------------------------------------------------------------------------------
# Batched policies: what they apply, determinism, no recompilation
# ---------------------------------------------------------------------------------------------------------


def _augment_step(augment: str, batching: str):
    """The batched augmentation as a train step would call it: (images, step, example indices), the
    step an int32 array as the train state's."""
    return jax.jit(
        lambda images, step, indices: D.augment_batch(
            images, D.example_keys(KEY, step, indices), augment, RA_LAYERS, RA_MAGNITUDE, batching=batching
        )
    )


@pytest.fixture(scope="module")
def augment_steps():
    """Per (policy, batching), compiled once for the module; "auto" is "map" on the CPU."""
    return {
        (augment, batching): _augment_step(augment, batching)
        for augment in ("autoaugment", "randaugment")
        for batching in ("vmap", "map")
    }


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    images = [load_photograph(name) for name in PHOTOGRAPHS]
    return np.stack([images[i % 2] for i in range(BATCH)])


def _one_example_reference(image: np.ndarray, key: jax.Array, augment: str) -> np.ndarray:
    """The documented key derivation and op order, op by op through the single-op function."""
    flip_key, policy_key = jax.random.split(key)
    image = np.asarray(jax.jit(D.flip)(image, flip_key))
    if augment == "autoaugment":
        choices = D.autoaugment_choices(policy_key)[1]
    else:
        choices = D.randaugment_choices(policy_key, RA_LAYERS, RA_MAGNITUDE)
    for slot in range(len(choices.op_index)):
        if choices.applied[slot]:
            image = np.asarray(
                _apply(image, choices.op_index[slot], choices.argument[slot], choices.key[slot])
            )
    return image


@pytest.mark.parametrize("batching", ["vmap", "map"])
@pytest.mark.parametrize("augment", ["autoaugment", "randaugment"])
def test_batch_applies_each_examples_choices(augment_steps, batch, augment, batching):
    step = 3
    out = np.asarray(augment_steps[augment, batching](batch, jnp.int32(step), jnp.arange(BATCH)))
    keys = _keys(BATCH, step)
    for i in range(BATCH):
        np.testing.assert_array_equal(
            out[i], _one_example_reference(batch[i], keys[i], augment), err_msg=str(i)
        )
    assert len({out[i].tobytes() for i in range(BATCH)}) >= BATCH // 2  # examples are augmented differently


@pytest.mark.parametrize("augment", ["autoaugment", "randaugment"])
def test_same_key_step_and_index_same_augmentation_in_any_batch(augment_steps, batch, augment):
    step_fn = augment_steps[augment, "vmap"]
    indices = jnp.arange(BATCH)
    out = np.asarray(step_fn(batch, jnp.int32(5), indices))
    np.testing.assert_array_equal(
        np.asarray(step_fn(batch, jnp.int32(5), indices)), out
    )  # replayed on resume
    permutation = np.random.default_rng(0).permutation(BATCH)
    permuted = np.asarray(step_fn(batch[permutation], jnp.int32(5), indices[permutation]))
    np.testing.assert_array_equal(permuted, out[permutation])  # independent of the batch layout
    other = np.asarray(step_fn(batch, jnp.int32(6), indices))
    assert sum((other[i] != out[i]).any() for i in range(BATCH)) >= BATCH // 2  # steps differ


def test_no_recompilation_after_the_first_step(augment_steps, batch):
    compiles = []

    def record(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    step_fn = augment_steps["randaugment", "map"]
    jax.block_until_ready(step_fn(batch, jnp.int32(0), jnp.arange(BATCH)))
    jax.monitoring.register_event_duration_secs_listener(record)
    try:
        for step in range(1, 4):
            jax.block_until_ready(step_fn(batch, jnp.int32(step), jnp.arange(BATCH)))
    finally:
        jax.monitoring.unregister_event_duration_listener(record)
    assert compiles == []


def test_errors_name_the_config_field_and_none_only_flips(batch):
    with pytest.raises(ValueError, match=r"config\.augment.*autoaugment.*randaugment"):
        D.augment_batch(batch, _keys(BATCH), "autoaugmnet")
    with pytest.raises(ValueError, match="randaugment_num_layers"):
        D.augment_batch(batch, _keys(BATCH), "randaugment", -1, 10.0)
    with pytest.raises(ValueError, match="uint8"):
        D.augment_batch(batch.astype(np.float32), _keys(BATCH), None)
    with pytest.raises(ValueError, match="v0"):
        D.autoaugment_choices(KEY, "v3")
    with pytest.raises(ValueError, match="batching"):
        D.augment_batch(batch, _keys(BATCH), None, batching="pmap")
    assert D.resolve_batching("auto", "randaugment") == "map"  # on the CPU (module docstring)
    assert D.resolve_batching("auto", None) == "vmap"
    keys = _keys(2)
    out = np.asarray(D.augment_batch(batch[:2], keys, None))
    for i in range(2):
        np.testing.assert_array_equal(out[i], np.asarray(D.flip(batch[i], jax.random.split(keys[i])[0])))
