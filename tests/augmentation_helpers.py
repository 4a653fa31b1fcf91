"""What the tests of the host augmentation (`test_augment.py`) and of the device augmentation
(`test_device_augment.py`) share: the photographs, the numpy nearest-neighbour warp, and the
statistical checks of the policies' random choices."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

H, W = 64, 96  # downscaled photographs keep the tests fast
PHOTOGRAPHS = ("china.jpg", "flower.jpg")  # scikit-learn's bundled sample images: no download


def load_photograph(name: str) -> np.ndarray:
    """A sample photograph, bilinearly downscaled to H x W, uint8 [H, W, 3]."""
    return np.asarray(Image.fromarray(load_sample_image(name)).resize((W, H), Image.BILINEAR))


def nearest_warp(image: np.ndarray, source_xy: Callable) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour inverse warp with fill 128: output (y, x) <- input at source_xy(x, y).

    Also returns the pixels whose source coordinate sits within 1e-3 of a rounding tie (x.5): there a
    float32 kernel may legitimately pick either neighbour, so comparisons skip them.
    """
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    sx, sy = (np.asarray(v, np.float64) for v in source_xy(x, y))
    rx = np.floor(sx + 0.5).astype(np.int64)
    ry = np.floor(sy + 0.5).astype(np.int64)
    valid = (rx >= 0) & (rx < w) & (ry >= 0) & (ry < h)
    out = np.full_like(image, 128)
    out[valid] = image[ry[valid], rx[valid]]
    tie = (np.abs(sx - np.floor(sx) - 0.5) < 1e-3) | (np.abs(sy - np.floor(sy) - 0.5) < 1e-3)
    return out, tie


# Chi-square bounds at p = 0.001 (the seeds are fixed, so a test either always passes or always fails).
CHI2_P001 = {15: 37.7, 24: 51.2}


def assert_uniform_choices(picks: np.ndarray, num_choices: int) -> None:
    """`picks` (ints in [0, num_choices)) cover every choice, uniformly by a chi-square test."""
    counts = np.bincount(np.ravel(picks), minlength=num_choices)
    expected = np.size(picks) / num_choices
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert counts.size == num_choices and counts.min() > 0, counts
    assert chi2 < CHI2_P001[num_choices - 1], counts


def assert_autoaugment_choice_statistics(
    index: np.ndarray, applied: np.ndarray, policy: Sequence[Sequence[tuple[str, float, int]]]
) -> None:
    """Sub-policies uniform; within each, every op applied at its stated probability (4.5 sigma);
    the two slots drawn independently."""
    assert_uniform_choices(index, len(policy))
    for k, sub in enumerate(policy):
        chosen = applied[index == k]
        for slot, (_, prob, _) in enumerate(sub):
            freq = chosen[:, slot].mean()
            tolerance = 4.5 * math.sqrt(prob * (1 - prob) / len(chosen))
            assert abs(freq - prob) <= tolerance + 1e-12, (k, slot, freq, prob)
    # P(both) ~ p0 * p1 over sub-policies with p in (0, 1).
    p = np.array([[q for _, q, _ in sub] for sub in policy])[index]
    both = applied.all(axis=1).mean()
    assert abs(both - (p[:, 0] * p[:, 1]).mean()) < 0.03
