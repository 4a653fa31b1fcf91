"""Mixup and CutMix on train batches, in tf.data on the host, as EfficientNetV2 trains
(google/automl `efficientnetv2/datasets.py`, `ImageNetInput.mixing`; alphas per variant in
`effnetv2_configs.py`, copied into `configs/imagenet.py`).

What the official code does, and this module reproduces:
  * Each example is mixed with its partner in the *reversed* batch (example i with example n-1-i), not
    with a random permutation: one batch, no second draw.
  * Mixup draws one weight per example, w ~ Beta(alpha, alpha), keeps the larger side, w = max(w, 1 - w)
    (so the example's own image dominates), and mixes image and label with it:
    image = w * image + (1 - w) * partner, label = w * label + (1 - w) * partner's label.
  * CutMix draws one box per example: a centre uniform over the pixels, a side ratio sqrt(1 - a) with
    a ~ Beta(alpha, alpha), side lengths truncated to whole pixels, the box clipped to the image. The
    partner's pixels are pasted inside the box; the label weight is the box's true area fraction (after
    truncation and clipping), not the drawn one.
  * With both alphas set, the first half of the batch (n // 2 examples) gets Mixup and the second half
    CutMix, each half mixed with its own reverse: every batch carries both, none is drawn by chance.
  * The batch mixed is one accelerator's batch (the official input_fn builds TPUEstimator's per-core
    batches), so `mix_device_batches` mixes each device's batch on its own.
  * Labels are mixed as one-hot probabilities; label smoothing is applied afterwards, in the loss
    (`steps.cross_entropy`), as the official loss (`tf.losses.softmax_cross_entropy(label_smoothing=)`)
    does to its mixed labels. Smoothing is affine with weights summing to 1, so smoothing before mixing
    gives the same targets.

Where this deviates, and why: the official draws come from TensorFlow's stateful ops (a different
stream on every run); here every draw is a stateless op seeded from the batch's key, which the input
pipeline derives from (config.seed, host index, global step), so a resumed job replays the same mixing
and another host mixes differently. The alphas are arguments, read from the config by the caller, so
that progressive learning can set them per stage (the official code scales them with the stage).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Appended to (seed, host, epoch) so that mixing keys never equal input_pipeline's per-example keys.
_MIXING_STREAM = 1


def _beta_samples(alpha: float, shape: list[int], seed: tf.Tensor) -> tf.Tensor:
    """Beta(alpha, alpha) draws as X / (X + Y), X and Y ~ Gamma(alpha), stateless."""
    x_seed, y_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    x = tf.random.stateless_gamma(shape, x_seed, alpha=alpha)
    y = tf.random.stateless_gamma(shape, y_seed, alpha=alpha)
    return x / (x + y)


def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup of float images [n, H, W, C] and probabilities [n, K] with the reversed batch."""
    weight = _beta_samples(alpha, [tf.shape(images)[0]], seed)
    weight = tf.maximum(weight, 1.0 - weight)
    image_weight = weight[:, None, None, None]
    mixed_images = images * image_weight + images[::-1] * (1.0 - image_weight)
    mixed_labels = labels * weight[:, None] + labels[::-1] * (1.0 - weight[:, None])
    return mixed_images, mixed_labels


def cutmix_masks(
    alpha: float, num_examples: tf.Tensor, height: int, width: int, seed: tf.Tensor
) -> tf.Tensor:
    """float32 [n, H, W, 1], 1 inside each example's pasted box (official geometry, see the module)."""
    x_seed, y_seed, area_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    centre_x = tf.random.stateless_uniform([num_examples], x_seed, 0, width, tf.int32)
    centre_y = tf.random.stateless_uniform([num_examples], y_seed, 0, height, tf.int32)
    side_ratio = tf.sqrt(1.0 - _beta_samples(alpha, [num_examples], area_seed))
    half_width = tf.cast(side_ratio * width, tf.int32) // 2
    half_height = tf.cast(side_ratio * height, tf.int32) // 2
    x1, x2 = (tf.clip_by_value(centre_x + sign * half_width, 0, width) for sign in (-1, 1))
    y1, y2 = (tf.clip_by_value(centre_y + sign * half_height, 0, height) for sign in (-1, 1))
    rows, columns = tf.range(height)[None, :, None], tf.range(width)[None, None, :]
    inside = (
        (rows >= y1[:, None, None])
        & (rows < y2[:, None, None])
        & (columns >= x1[:, None, None])
        & (columns < x2[:, None, None])
    )
    return tf.cast(inside, tf.float32)[..., None]


def cutmix(
    images: tf.Tensor, labels: tf.Tensor, alpha: float, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix of float images [n, H, W, C] (static H, W) and probabilities [n, K] with the reversed batch."""
    height, width = images.shape[1], images.shape[2]
    masks = cutmix_masks(alpha, tf.shape(images)[0], height, width, seed)
    pasted_fraction = tf.reduce_mean(masks, axis=[1, 2, 3])[:, None]
    mixed_images = (1.0 - masks) * images + masks * images[::-1]
    mixed_labels = (1.0 - pasted_fraction) * labels + pasted_fraction * labels[::-1]
    return mixed_images, mixed_labels


def mix_batch(
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One device's batch mixed: images [n, H, W, C] (float32, or uint8 pixels) and int labels [n] ->
    (float32 images, float32 probabilities [n, num_classes] whose rows sum to 1). An alpha of 0 turns
    its method off; with both set, Mixup on the first n // 2 examples and CutMix on the rest. Call only
    with an alpha > 0.

    uint8 pixels come back as float32 pixels, unrounded (the official code mixes float pixels too):
    mixing and `(pixels - mean) / std` commute (the weights sum to 1), so a step that normalises its
    inputs may receive them either way."""
    if not (mixup_alpha > 0 or cutmix_alpha > 0):
        raise ValueError("mix_batch needs mixup_alpha > 0 or cutmix_alpha > 0.")
    images = tf.cast(images, tf.float32)
    probabilities = tf.one_hot(labels, num_classes, dtype=tf.float32)
    mixup_seed, cutmix_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    if mixup_alpha > 0 and cutmix_alpha > 0:
        half = images.shape[0] // 2
        mixup_images, mixup_labels = mixup(images[:half], probabilities[:half], mixup_alpha, mixup_seed)
        cutmix_images, cutmix_labels = cutmix(images[half:], probabilities[half:], cutmix_alpha, cutmix_seed)
        return tf.concat([mixup_images, cutmix_images], 0), tf.concat([mixup_labels, cutmix_labels], 0)
    if mixup_alpha > 0:
        return mixup(images, probabilities, mixup_alpha, mixup_seed)
    return cutmix(images, probabilities, cutmix_alpha, cutmix_seed)


def mix_device_batches(
    batch: dict[str, tf.Tensor],
    *,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    seed: tf.Tensor,
) -> dict[str, tf.Tensor]:
    """`mix_batch` on each device's batch of {"image": [devices, n, H, W, C], "label": [devices, n]},
    each device with its own key split from `seed`; other entries pass through."""
    num_devices = batch["image"].shape[0]
    device_seeds = tf.random.experimental.stateless_split(seed, num=num_devices)
    mixed = [
        mix_batch(
            batch["image"][d],
            batch["label"][d],
            num_classes=num_classes,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            seed=device_seeds[d],
        )
        for d in range(num_devices)
    ]
    return {**batch, "image": tf.stack([m[0] for m in mixed]), "label": tf.stack([m[1] for m in mixed])}


def mix_train_batch(
    batch: dict[str, tf.Tensor],
    *,
    seed: int,
    process_index: int,
    epoch: int,
    host_batch: int,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
) -> dict[str, tf.Tensor]:
    """The input pipeline's hook: mixes a train batch in device layout that still carries "index" (each
    example's position in the epoch). Its key is a function of (seed, host, epoch, the batch's position
    in the epoch) only, i.e. of (seed, host, global step): a resumed job replays the same mixing."""
    state = np.random.SeedSequence([seed, process_index, epoch, _MIXING_STREAM]).generate_state(2)
    batch_position = batch["index"][0, 0] // host_batch
    batch_seed = tf.random.experimental.stateless_fold_in(tf.constant(state.astype(np.int64)), batch_position)
    return mix_device_batches(
        batch, num_classes=num_classes, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, seed=batch_seed
    )
