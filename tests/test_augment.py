"""Tests for `efficientnet_jax.augment` on real photographs (scikit-learn's bundled sample images).

Every operation is checked against an independent computation of its definition: PIL (`ImageOps`,
`ImageEnhance`) where the op is PIL's definition, numpy otherwise (SolarizeAdd, the geometric ops with
their 128 fill, Cutout, the Sharpness kernel). Then the reference's level -> argument mapping, the policy
statistics (on the helpers the policies themselves use), determinism, and graph mode inside tf.data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

from efficientnet_jax import augment as A  # noqa: E402
from tests.augmentation_helpers import (  # noqa: E402
    PHOTOGRAPHS,
    H,
    W,
    assert_autoaugment_choice_statistics,
    assert_uniform_choices,
    load_photograph,
    nearest_warp,
)

SEED = tf.constant([1234, 5678], tf.int64)
ENHANCE_FACTORS = [0.0, 0.1, 0.5, 1.0, 1.9, 2.8, 5.14]  # 0.1 = level 0, 1.9 = level 10, 5.14 = M=28
LEVELS = [0, 1, 5, 10, 17, 28]


@pytest.fixture(scope="module", params=PHOTOGRAPHS)
def photo(request) -> np.ndarray:
    return load_photograph(request.param)


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    return load_photograph("china.jpg")


def _np(x) -> np.ndarray:
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def _pil(fn, image: np.ndarray, *args) -> np.ndarray:
    return np.asarray(fn(Image.fromarray(image), *args))


def _seed(i: int) -> tf.Tensor:
    return tf.constant([7, i], tf.int64)


# ---------------------------------------------------------------------------------------------------------
# Pixel operations against PIL
# ---------------------------------------------------------------------------------------------------------


def test_autocontrast_matches_pil(photo):
    low_contrast = (photo // 3 + 60).astype(np.uint8)  # real photos often span 0..255 already
    for image in (photo, low_contrast):
        np.testing.assert_array_equal(_np(A.autocontrast(image)), _pil(ImageOps.autocontrast, image))
    flat = np.full((H, W, 3), 77, np.uint8)  # a channel with one value is left unchanged
    np.testing.assert_array_equal(_np(A.autocontrast(flat)), flat)


def test_equalize_matches_pil(photo):
    low_contrast = (photo // 3 + 60).astype(np.uint8)
    for image in (photo, low_contrast, np.full((H, W, 3), 9, np.uint8)):
        np.testing.assert_array_equal(_np(A.equalize(image)), _pil(ImageOps.equalize, image))


def test_invert_matches_pil(photo):
    np.testing.assert_array_equal(_np(A.invert(photo)), _pil(ImageOps.invert, photo))


@pytest.mark.parametrize("bits", range(1, 9))
def test_posterize_matches_pil(photo, bits):
    np.testing.assert_array_equal(_np(A.posterize(photo, bits)), _pil(ImageOps.posterize, photo, bits))


@pytest.mark.parametrize("threshold", [0, 1, 64, 128, 179, 204, 255, 256])
def test_solarize_matches_pil(photo, threshold):
    expected = _pil(ImageOps.solarize, photo, threshold)
    np.testing.assert_array_equal(_np(A.solarize(photo, threshold)), expected)


@pytest.mark.parametrize(
    "op, enhancer",
    [
        (A.color, ImageEnhance.Color),
        (A.contrast, ImageEnhance.Contrast),
        (A.brightness, ImageEnhance.Brightness),
        (A.sharpness, ImageEnhance.Sharpness),
    ],
    ids=["color", "contrast", "brightness", "sharpness"],
)
def test_enhance_ops_match_pil(photo, op, enhancer):
    for factor in ENHANCE_FACTORS:
        expected = np.asarray(enhancer(Image.fromarray(photo)).enhance(factor))
        np.testing.assert_array_equal(_np(op(photo, factor)), expected, err_msg=f"factor {factor}")


def test_contrast_pivots_on_mean_grey_not_reference_bug(china):
    # Factor 0 gives the degenerate image: the rounded mean PIL luma, not the reference's H*W/256 (= 24 here).
    r, g, b = (china[..., c].astype(np.int64) for c in range(3))
    luma = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    expected = int(luma.mean() + 0.5)
    out = _np(A.contrast(china, 0.0))
    assert (out == expected).all() and expected != H * W // 256


def test_sharpness_degenerate_is_smooth_kernel_with_original_border(china):
    # Independent numpy computation: [[1,1,1],[1,5,1],[1,1,1]] / 13 on the interior, rounded; borders kept.
    x = china.astype(np.int64)
    neighbours = [x[1 + dy : H - 1 + dy, 1 + dx : W - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    sums = sum(neighbours) + 4 * x[1:-1, 1:-1]
    expected = china.copy()
    expected[1:-1, 1:-1] = np.floor(sums / 13 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(_np(A.sharpness(china, 0.0)), expected)


@pytest.mark.parametrize("addition", [0, 33, 110, 187, 308, -50])
def test_solarize_add_matches_numpy(photo, addition):
    x = photo.astype(np.int64)
    expected = np.where(x < 128, np.clip(x + addition, 0, 255), x).astype(np.uint8)
    np.testing.assert_array_equal(_np(A.solarize_add(photo, addition)), expected)


# ---------------------------------------------------------------------------------------------------------
# Geometric operations and cutout against numpy
# ---------------------------------------------------------------------------------------------------------


def _assert_warp_equal(out: np.ndarray, expected: np.ndarray, tie: np.ndarray) -> None:
    assert tie.mean() < 0.2  # the comparison still covers most pixels (0.3 * y ties on every 10th row)
    np.testing.assert_array_equal(out[~tie], expected[~tie])


@pytest.mark.parametrize("pixels", [-200, -30, -5, 0, 7, 40, 200])
def test_translate_is_shift_with_grey_fill(photo, pixels):
    expected_x = np.full_like(photo, 128)
    expected_y = np.full_like(photo, 128)
    if pixels >= 0:  # output (x, y) takes input (x + pixels, y): content moves left / up
        expected_x[:, : max(W - pixels, 0)] = photo[:, pixels:]
        expected_y[: max(H - pixels, 0)] = photo[pixels:]
    else:
        expected_x[:, -pixels:] = photo[:, : W + pixels]
        expected_y[-pixels:] = photo[: max(H + pixels, 0)]
    np.testing.assert_array_equal(_np(A.translate_x(photo, float(pixels))), expected_x)
    np.testing.assert_array_equal(_np(A.translate_y(photo, float(pixels))), expected_y)


@pytest.mark.parametrize("level", [-0.84, -0.3, 0.09, 0.21, 0.3])
def test_shear_matches_numpy(photo, level):
    _assert_warp_equal(_np(A.shear_x(photo, level)), *nearest_warp(photo, lambda x, y: (x + level * y, y)))
    _assert_warp_equal(_np(A.shear_y(photo, level)), *nearest_warp(photo, lambda x, y: (x, level * x + y)))


def test_rotate_quarter_turns_are_exact(china):
    square = china[:, 16:80]  # 64 x 64
    np.testing.assert_array_equal(_np(A.rotate(square, 90.0)), np.rot90(square, 1))
    np.testing.assert_array_equal(_np(A.rotate(square, 180.0)), square[::-1, ::-1])
    np.testing.assert_array_equal(_np(A.rotate(square, -90.0)), np.rot90(square, -1))


@pytest.mark.parametrize("degrees", [-84.0, -30.0, 12.0, 45.0])
def test_rotate_matches_numpy_about_centre(photo, degrees):
    t = math.radians(degrees)
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    expected, tie = nearest_warp(
        photo,
        lambda x, y: (
            math.cos(t) * (x - cx) - math.sin(t) * (y - cy) + cx,
            math.sin(t) * (x - cx) + math.cos(t) * (y - cy) + cy,
        ),
    )
    out = _np(A.rotate(photo, degrees))
    _assert_warp_equal(out, expected, tie)
    assert (out[0, 0] == 128).all() and (out[-1, -1] == 128).all()  # uncovered corners are grey


@pytest.mark.parametrize(
    "pad, cy, cx", [(0, 30, 40), (10, 30, 40), (10, 0, 0), (25, 63, 95), (40, 5, 90), (200, 3, 3)]
)
def test_cutout_at_matches_numpy(china, pad, cy, cx):
    expected = china.copy()
    expected[max(0, cy - pad) : min(H, cy + pad), max(0, cx - pad) : min(W, cx + pad)] = 128
    np.testing.assert_array_equal(_np(A.cutout_at(china, pad, cy, cx)), expected)


@pytest.mark.parametrize("pad", [4, 16, 40])
def test_cutout_is_one_grey_square_of_stated_size(china, pad):
    image = np.where(china == 128, 127, china).astype(np.uint8)  # so 128 marks the cutout only
    for i in range(8):
        out = _np(A.cutout(image, pad, _seed(i)))
        mask = (out == 128).all(axis=-1)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask.any()
        np.testing.assert_array_equal(mask, np.outer(mask.any(axis=1), mask.any(axis=0)))  # a rectangle
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        assert rows.size <= 2 * pad and cols.size <= 2 * pad
        # Cut only by the image border: a side shorter than 2*pad touches the border.
        assert rows.size == 2 * pad or rows[0] == 0 or rows[-1] == H - 1
        assert cols.size == 2 * pad or cols[0] == 0 or cols[-1] == W - 1
        np.testing.assert_array_equal(out[~mask], image[~mask])


def test_identity_arguments(photo):
    identities = {
        "rotate 0": A.rotate(photo, 0.0),
        "shear_x 0": A.shear_x(photo, 0.0),
        "shear_y 0": A.shear_y(photo, 0.0),
        "translate_x 0": A.translate_x(photo, 0.0),
        "translate_y 0": A.translate_y(photo, 0.0),
        "color 1": A.color(photo, 1.0),
        "contrast 1": A.contrast(photo, 1.0),
        "brightness 1": A.brightness(photo, 1.0),
        "sharpness 1": A.sharpness(photo, 1.0),
        "posterize 8": A.posterize(photo, 8),
        "solarize 256": A.solarize(photo, 256),
        "solarize_add 0": A.solarize_add(photo, 0),
        "cutout 0": A.cutout(photo, 0, SEED),
    }
    for name, out in identities.items():
        np.testing.assert_array_equal(_np(out), photo, err_msg=name)


# ---------------------------------------------------------------------------------------------------------
# Level -> argument mapping (the reference's formulas, in Python floats)
# ---------------------------------------------------------------------------------------------------------


def _args(name: str, level: float, consts, seed=SEED):
    return [_np(a) for a in A.OPS[name][1](tf.constant(level, tf.float64), seed, consts)]


def _ref_posterize_bits(level: float) -> int:
    # int(level/10*4) bits; the reference's uint8 shift by (8 - bits) is clamped to [0, 7] after wrapping.
    shift = (8 - int(level / 10.0 * 4)) % 256
    return 8 - min(shift, 7)


@pytest.mark.parametrize("level", LEVELS + [2, 3, 6, 7, 9, 22, 23])
@pytest.mark.parametrize("consts", [A.AUTOAUGMENT_CONSTANTS, A.RANDAUGMENT_CONSTANTS], ids=["aa", "ra"])
def test_level_to_argument(level, consts):
    unsigned = {
        "Posterize": _ref_posterize_bits(level),
        "Solarize": int(level / 10.0 * 256) % 256,
        "SolarizeAdd": int(level / 10.0 * 110),
        "Color": level / 10.0 * 1.8 + 0.1,
        "Contrast": level / 10.0 * 1.8 + 0.1,
        "Brightness": level / 10.0 * 1.8 + 0.1,
        "Sharpness": level / 10.0 * 1.8 + 0.1,
    }
    for name, expected in unsigned.items():
        (got,) = _args(name, level, consts)
        assert got == pytest.approx(expected, abs=1e-12), name
    pad, _ = _args("Cutout", level, consts)
    assert pad == int(level / 10.0 * consts.cutout_const)
    signed = {
        "Rotate": level / 10.0 * 30.0,
        "ShearX": level / 10.0 * 0.3,
        "ShearY": level / 10.0 * 0.3,
        "TranslateX": level / 10.0 * consts.translate_const,
        "TranslateY": level / 10.0 * consts.translate_const,
    }
    for name, magnitude in signed.items():
        values = np.array([_args(name, level, consts, _seed(i))[0] for i in range(40)])
        np.testing.assert_allclose(np.abs(values), magnitude, rtol=1e-12, err_msg=name)
        if level:
            assert 8 <= (values > 0).sum() <= 32, name  # random sign, 1/2 each (binomial(40, .5), ~4 sigma)
    for name in ("AutoContrast", "Equalize", "Invert"):
        assert _args(name, level, consts) == []


def test_published_constants_and_extrapolation():
    assert (A.AUTOAUGMENT_CONSTANTS.cutout_const, A.AUTOAUGMENT_CONSTANTS.translate_const) == (100, 250)
    assert (A.RANDAUGMENT_CONSTANTS.cutout_const, A.RANDAUGMENT_CONSTANTS.translate_const) == (40, 100)
    ra = A.RANDAUGMENT_CONSTANTS
    assert abs(_args("Rotate", 28, ra)[0]) == pytest.approx(84.0)
    assert abs(_args("TranslateX", 28, ra)[0]) == pytest.approx(280.0)
    assert _args("Cutout", 28, ra)[0] == 112
    assert _args("Color", 28, ra)[0] == pytest.approx(5.14)
    assert _args("SolarizeAdd", 28, ra)[0] == 308
    assert _args("Solarize", 10, ra)[0] == 0  # 256 wraps to 0 in the reference: full inversion
    assert _args("Solarize", 17, ra)[0] == 179 and _args("Solarize", 28, ra)[0] == 204
    assert _args("Posterize", 17, ra)[0] == 6 and _args("Posterize", 28, ra)[0] == 1
    assert _args("Posterize", 2, ra)[0] == 1  # v0's ('Posterize', 0.8, 2): 0 bits, 1 in the reference
    assert abs(_args("TranslateY", 9, A.AUTOAUGMENT_CONSTANTS)[0]) == pytest.approx(225.0)
    policy = A.POLICIES["v0"]
    assert len(policy) == 25 and all(len(sub) == 2 for sub in policy)
    assert policy[0] == (("Equalize", 0.8, 1), ("ShearY", 0.8, 4))
    assert policy[-1] == (("Color", 0.8, 6), ("Rotate", 0.4, 5))
    assert sorted(A.RANDAUGMENT_OPS) == sorted(A.OPS) and len(A.RANDAUGMENT_OPS) == 16


@pytest.mark.parametrize("consts", [A.AUTOAUGMENT_CONSTANTS, A.RANDAUGMENT_CONSTANTS], ids=["aa", "ra"])
def test_every_op_keeps_dtype_and_shape_at_all_levels(china, consts):
    for name in A.OPS:
        for level in LEVELS:
            out = A.apply_op(tf.constant(china), name, level, SEED, consts)
            assert out.dtype == tf.uint8 and tuple(out.shape) == (H, W, 3), (name, level)
    # Extreme translation leaves nothing but fill.
    assert (_np(A.apply_op(tf.constant(china), "TranslateX", 28, SEED, consts)) == 128).all()


# ---------------------------------------------------------------------------------------------------------
# Policies: statistics on the helpers the policies use, and the real path through them
# ---------------------------------------------------------------------------------------------------------


def _over_seeds(fn, n: int):
    """fn(seed) for seeds [7, 0..n), evaluated in one graph-mode tf.data pass (fast)."""
    ds = tf.data.Dataset.range(n).map(lambda i: fn(tf.stack([tf.constant(7, tf.int64), i])))
    return next(iter(ds.batch(n)))


def test_randaugment_picks_ops_uniformly():
    n, layers = 3000, 2
    assert_uniform_choices(_np(_over_seeds(lambda s: A.randaugment_op_indices(s, layers), n)), 16)


def test_autoaugment_subpolicies_uniform_and_ops_at_their_probabilities():
    n = 5000
    index, applied = (_np(x) for x in _over_seeds(A.autoaugment_choices, n))
    assert_autoaugment_choice_statistics(index, applied, A.POLICIES["v0"])


# Ops whose result does not depend on the op seed (no random sign, no random position).
_SEEDLESS = {
    "AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness",
}  # fmt: skip


def test_randaugment_applies_the_ops_its_helper_picks(china):
    checked = 0
    for i in range(60):
        names = [A.RANDAUGMENT_OPS[j] for j in _np(A.randaugment_op_indices(_seed(i), 2))]
        if not set(names) <= _SEEDLESS:
            continue
        expected = tf.constant(china)
        for name in names:  # applied always (the reference's per-layer probability is unused)
            expected = A.apply_op(expected, name, 9.0, SEED, A.RANDAUGMENT_CONSTANTS)
        out = A.randaugment(china, _seed(i), 2, 9.0)
        np.testing.assert_array_equal(_np(out), _np(expected), err_msg=str(names))
        checked += 1
    assert checked >= 5


def test_autoaugment_applies_the_choices_its_helper_makes(china):
    policy = A.POLICIES["v0"]
    checked = 0
    for i in range(120):
        index, applied = (_np(x) for x in A.autoaugment_choices(_seed(i)))
        ops = [op for op, use in zip(policy[int(index)], applied) if use]
        if not {name for name, _, _ in ops} <= _SEEDLESS:
            continue
        expected = tf.constant(china)
        for name, _, level in ops:
            expected = A.apply_op(expected, name, level, SEED, A.AUTOAUGMENT_CONSTANTS)
        np.testing.assert_array_equal(_np(A.autoaugment(china, _seed(i))), _np(expected), err_msg=str(ops))
        checked += 1
    assert checked >= 10


# ---------------------------------------------------------------------------------------------------------
# Determinism, graph mode, dispatch
# ---------------------------------------------------------------------------------------------------------


def test_same_seed_same_image_different_seeds_differ(china):
    for fn in (lambda s: A.autoaugment(china, s), lambda s: A.randaugment(china, s, 2, 28.0)):
        for seed in (SEED, tf.constant([3, 4], tf.int32)):
            np.testing.assert_array_equal(_np(fn(seed)), _np(fn(seed)))
    # M=5: at M=10 RandAugment's 100-pixel translation would blank this 96-pixel-wide test image.
    ra = {_np(A.randaugment(china, _seed(i), 2, 5.0)).tobytes() for i in range(16)}
    aa = {_np(A.autoaugment(china, _seed(i))).tobytes() for i in range(16)}
    assert len(ra) >= 12 and len(aa) >= 8


def test_inside_tf_data_map_with_per_element_seed(china):
    n = 12
    images = tf.data.Dataset.from_tensors(tf.constant(china)).repeat(n)
    seeds = tf.data.Dataset.range(n).map(lambda i: tf.stack([tf.constant(7, tf.int64), i]))
    for augment, m in (("autoaugment", 0.0), ("randaugment", 17.0)):
        ds = tf.data.Dataset.zip((images, seeds)).map(
            lambda im, s, augment=augment, m=m: A.apply(im, s, augment, 2, m)
        )
        assert ds.element_spec == tf.TensorSpec((H, W, 3), tf.uint8)  # static shape survives
        for i, out in enumerate(ds):
            np.testing.assert_array_equal(out.numpy(), _np(A.apply(china, _seed(i), augment, 2, m)))


def test_apply_dispatch_and_errors(china):
    np.testing.assert_array_equal(_np(A.apply(china, SEED, None, 2, 10.0)), china)
    with pytest.raises(ValueError, match=r"config\.augment.*autoaugment.*randaugment"):
        A.apply(china, SEED, "autoaugmnet", 2, 10.0)
    with pytest.raises(ValueError, match="config.augment"):
        A.apply(china, SEED, "none", 2, 10.0)
    with pytest.raises(ValueError, match="v0"):
        A.autoaugment(china, SEED, policy="v3")
    with pytest.raises(TypeError, match="uint8"):
        A.randaugment(china.astype(np.float32), SEED, 2, 10.0)
