"""Mixup and CutMix (batch_mixing.py): exact pixels and labels, the distribution of the mixing weight,
determinism by (seed, host, step), the input pipeline's hook, and a real train loop on mixed labels."""

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf

from configs import imagenet
from efficientnet_jax import batch_mixing, configuration, input_pipeline, optim, steps
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.normalizations import IMAGENET_NORMALIZATION
from tests.workers.tiny_config import tiny_config

NUM_CLASSES = 10
# Mixed pixels are two float32 products and a sum of values <= 255: at most ~3 * 255 * 2**-24 = 5e-5 off
# any other float32 evaluation of the same formula.
PIXEL_TOLERANCE = 1e-4
# A weight w read back from a label, or a row sum w + (1 - w): at most one float32 rounding from exact.
LABEL_TOLERANCE = 1e-6


def _batch(num_examples: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images (no two pixels equal, so a pixel's source is identifiable) and labels
    0..n-1 mod NUM_CLASSES, which differ from their reversed partner's when n is even and n <= 10."""
    images = np.random.default_rng(seed).uniform(0, 255, (num_examples, size, size, 3)).astype(np.float32)
    return images, (np.arange(num_examples) % NUM_CLASSES).astype(np.int32)


def _mix(images, labels, seed=(1, 2), **alphas):
    mixed_images, mixed_labels = batch_mixing.mix_batch(
        tf.constant(images),
        tf.constant(labels),
        num_classes=NUM_CLASSES,
        seed=tf.constant(seed, tf.int64),
        **{"mixup_alpha": 0.0, "cutmix_alpha": 0.0, **alphas},
    )
    return mixed_images.numpy(), mixed_labels.numpy()


def _assert_mixup(images, labels, mixed_images, mixed_labels, partner):
    for i, j in enumerate(partner):
        weight = mixed_labels[i, labels[i]]
        assert weight >= 0.5  # the official max(w, 1 - w): the example's own image dominates
        assert mixed_labels[i, labels[j]] == pytest.approx(1.0 - weight, abs=LABEL_TOLERANCE)
        expected = weight * images[i] + (1.0 - weight) * images[j]
        np.testing.assert_allclose(mixed_images[i], expected, rtol=0, atol=PIXEL_TOLERANCE)


def _assert_cutmix(images, labels, mixed_images, mixed_labels, partner):
    size = images.shape[1] * images.shape[2]
    for i, j in enumerate(partner):
        from_own = np.all(mixed_images[i] == images[i], axis=-1)
        from_partner = np.all(mixed_images[i] == images[j], axis=-1)
        assert np.all(from_own ^ from_partner)  # every pixel is exactly one image's, all channels
        rows, columns = np.any(from_partner, axis=1), np.any(from_partner, axis=0)
        np.testing.assert_array_equal(from_partner, np.outer(rows, columns))  # a box
        pasted_fraction = from_partner.sum() / size
        assert mixed_labels[i, labels[j]] == pytest.approx(pasted_fraction, abs=LABEL_TOLERANCE)
        assert mixed_labels[i, labels[i]] == pytest.approx(1.0 - pasted_fraction, abs=LABEL_TOLERANCE)


def test_mixup_mixes_each_example_with_the_reversed_batch_by_its_label_weight():
    images, labels = _batch(8, 4)
    mixed_images, mixed_labels = _mix(images, labels, mixup_alpha=0.2)
    np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, rtol=0, atol=LABEL_TOLERANCE)
    _assert_mixup(images, labels, mixed_images, mixed_labels, partner=range(7, -1, -1))


def test_uint8_pixels_are_mixed_as_float32_pixels():
    images, labels = _batch(8, 4)
    pixels = images.astype(np.uint8)
    mixed_images, mixed_labels = _mix(pixels, labels, mixup_alpha=0.2)
    assert mixed_images.dtype == np.float32
    _assert_mixup(pixels.astype(np.float32), labels, mixed_images, mixed_labels, partner=range(7, -1, -1))


def test_cutmix_pastes_a_box_of_the_reversed_batch_whose_area_is_the_label_weight():
    images, labels = _batch(8, 16)
    mixed_images, mixed_labels = _mix(images, labels, cutmix_alpha=1.0)
    np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, rtol=0, atol=LABEL_TOLERANCE)
    _assert_cutmix(images, labels, mixed_images, mixed_labels, partner=range(7, -1, -1))
    pasted = 1.0 - mixed_labels[np.arange(8), labels]
    assert np.any((pasted > 0) & (pasted < 1))  # the boxes are not all empty or full


def test_both_alphas_give_mixup_to_the_first_half_and_cutmix_to_the_second():
    images, labels = _batch(8, 16)
    mixed_images, mixed_labels = _mix(images, labels, mixup_alpha=0.5, cutmix_alpha=0.5)
    np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, rtol=0, atol=LABEL_TOLERANCE)
    _assert_mixup(images[:4], labels[:4], mixed_images[:4], mixed_labels[:4], partner=[3, 2, 1, 0])
    _assert_cutmix(images[4:], labels[4:], mixed_images[4:], mixed_labels[4:], partner=[3, 2, 1, 0])


@pytest.mark.parametrize("alpha", [0.2, 0.5])
def test_mixup_fraction_follows_the_folded_beta_distribution(alpha):
    # 4000 draws (one per example). The mixed-in fraction is min(B, 1 - B), B ~ Beta(alpha, alpha):
    # mean I_{1/2}(alpha + 1, alpha) (regularised incomplete beta), CDF 2 F_Beta(t) on [0, 1/2].
    num_examples = 4000
    images = np.zeros((num_examples, 1, 1, 1), np.float32)
    labels = (np.arange(num_examples) % 2).astype(np.int32)  # i and n-1-i always differ
    _, mixed_labels = batch_mixing.mix_batch(
        tf.constant(images),
        tf.constant(labels),
        num_classes=2,
        mixup_alpha=alpha,
        cutmix_alpha=0.0,
        seed=tf.constant([3, 4], tf.int64),
    )
    fraction = 1.0 - mixed_labels.numpy()[np.arange(num_examples), labels].astype(np.float64)
    expected_mean = scipy.special.betainc(alpha + 1, alpha, 0.5)
    standard_error = fraction.std() / np.sqrt(num_examples)
    # 6 standard errors: a correct sampler fails this with probability ~2e-9; a wrong alpha (0.2 vs 0.5
    # moves the mean by ~0.07, ~25 standard errors) cannot pass. Deterministic at this seed.
    assert abs(fraction.mean() - expected_mean) < 6 * standard_error
    # The distribution above 1e-5: w is float32, so 1 - w near 0 moves in steps of 2**-24 = 6e-8, which
    # a KS test on the continuous CDF detects; below 1e-5 (a tenth of the draws at alpha 0.2, 6% of
    # them under 1e-6) only their share is checked.
    floor = 1e-5

    def folded_cdf(t):
        return np.minimum(2.0 * scipy.stats.beta.cdf(t, alpha, alpha), 1.0)

    below = np.mean(fraction < floor)
    assert abs(below - folded_cdf(floor)) < 6 * np.sqrt(
        folded_cdf(floor) * (1 - folded_cdf(floor)) / num_examples
    )

    def conditional_cdf(t):
        return (folded_cdf(t) - folded_cdf(floor)) / (1.0 - folded_cdf(floor))

    assert scipy.stats.kstest(fraction[fraction >= floor], conditional_cdf).pvalue > 1e-4


def test_cutmix_area_follows_the_official_box_distribution():
    # The pasted fraction is not Beta-distributed (sides truncated to pixels, boxes clipped at the
    # border): compared with 200,000 boxes drawn by numpy with the official geometry, independently of
    # the TensorFlow implementation, in mean (6 standard errors, see the Mixup test) and distribution.
    alpha, num_examples, size = 0.5, 4000, 16
    images = np.zeros((num_examples, size, size, 1), np.float32)
    labels = (np.arange(num_examples) % 2).astype(np.int32)
    _, mixed_labels = batch_mixing.mix_batch(
        tf.constant(images),
        tf.constant(labels),
        num_classes=2,
        mixup_alpha=0.0,
        cutmix_alpha=alpha,
        seed=tf.constant([5, 6], tf.int64),
    )
    pasted = 1.0 - mixed_labels.numpy()[np.arange(num_examples), labels].astype(np.float64)
    rng = np.random.default_rng(0)
    reference_draws = 200_000
    centres = rng.integers(0, size, (2, reference_draws))
    half_sides = (np.sqrt(1.0 - rng.beta(alpha, alpha, reference_draws)) * size).astype(int) // 2
    low, high = np.clip(centres - half_sides, 0, size), np.clip(centres + half_sides, 0, size)
    reference = np.prod(high - low, axis=0) / size**2
    standard_error = np.hypot(
        pasted.std() / np.sqrt(num_examples), reference.std() / np.sqrt(reference_draws)
    )
    assert abs(pasted.mean() - reference.mean()) < 6 * standard_error
    # Discrete values: ks_2samp's p-value is conservative there, so this cannot fail more often.
    assert scipy.stats.ks_2samp(pasted, reference).pvalue > 1e-4


def _pipeline_batch(process_index=0, epoch=0, first_index=0, seed=0):
    images, labels = _batch(8, 8)
    batch = {
        "image": tf.reshape(images, [2, 4, 8, 8, 3]),
        "label": tf.reshape(labels, [2, 4]),
        "index": tf.reshape(tf.range(first_index, first_index + 8, dtype=tf.int64), [2, 4]),
    }
    mixed = batch_mixing.mix_train_batch(
        batch,
        seed=seed,
        process_index=process_index,
        epoch=epoch,
        host_batch=8,
        num_classes=NUM_CLASSES,
        mixup_alpha=0.2,
        cutmix_alpha=0.2,
    )
    return {key: value.numpy() for key, value in mixed.items()}


def test_mixing_is_a_function_of_seed_host_and_step_only():
    first = _pipeline_batch()
    np.testing.assert_array_equal(first["image"], _pipeline_batch()["image"])
    np.testing.assert_array_equal(first["label"], _pipeline_batch()["label"])
    assert first["label"].shape == (2, 4, NUM_CLASSES)
    for other in (
        _pipeline_batch(process_index=1),
        _pipeline_batch(first_index=8),  # the next batch of the epoch
        _pipeline_batch(epoch=1),
        _pipeline_batch(seed=1),
    ):
        assert not np.array_equal(first["label"], other["label"])
    # Each device mixes its own batch (classes 0..3 on device 0, 4..7 on device 1): none crosses over.
    for device, classes in enumerate([{0, 1, 2, 3}, {4, 5, 6, 7}]):
        for example in range(4):
            assert set(np.flatnonzero(first["label"][device, example])) <= classes


def test_pipeline_mixes_train_batches_reproducibly_and_leaves_alpha_zero_and_eval_alone(data_dir):
    hosts = {"process_index": 0, "process_count": 1, "local_device_count": 2}
    plain_config = tiny_config(data_dir, batch_size=8, augment_on_device=False)
    mixed_config = tiny_config(
        data_dir, batch_size=8, mixup_alpha=0.2, cutmix_alpha=0.2, augment_on_device=False
    )
    plain = input_pipeline.create_train_iterator(plain_config, **hosts)
    mixed = input_pipeline.create_train_iterator(mixed_config, **hosts)
    plain_batches, mixed_batches = [next(plain) for _ in range(3)], [next(mixed) for _ in range(3)]
    for step, (plain_batch, mixed_batch) in enumerate(zip(plain_batches, mixed_batches)):
        assert plain_batch["label"].dtype == np.int32 and plain_batch["label"].shape == (2, 4)
        assert mixed_batch["label"].dtype == np.float32 and mixed_batch["label"].shape == (2, 4, 10)
        np.testing.assert_allclose(mixed_batch["label"].sum(-1), 1.0, rtol=0, atol=LABEL_TOLERANCE)
        # The mixed batch is the unmixed one (alphas 0: today's batch) mixed with the step's key.
        expected = batch_mixing.mix_train_batch(
            {**plain_batch, "index": np.arange(step * 8, step * 8 + 8).reshape(2, 4)},
            seed=0,
            process_index=0,
            epoch=0,
            host_batch=8,
            num_classes=10,
            mixup_alpha=0.2,
            cutmix_alpha=0.2,
        )
        np.testing.assert_array_equal(mixed_batch["image"], expected["image"].numpy())
        np.testing.assert_array_equal(mixed_batch["label"], expected["label"].numpy())
    resumed = input_pipeline.create_train_iterator(mixed_config, start_step=2, **hosts)
    np.testing.assert_array_equal(next(resumed)["image"], mixed_batches[2]["image"])
    eval_batches, _ = input_pipeline.create_eval_iterator(mixed_config, **hosts)
    eval_batch = next(iter(eval_batches))
    assert eval_batch["label"].dtype == np.int32


def test_soft_labels_give_the_loss_of_their_targets_and_one_hot_equals_class_ids():
    logits = jax.random.normal(jax.random.key(0), (6, NUM_CLASSES))
    class_ids = jnp.arange(6) % NUM_CLASSES
    from_ids = steps.cross_entropy(logits, class_ids, NUM_CLASSES, 0.1)
    from_one_hot = steps.cross_entropy(logits, jax.nn.one_hot(class_ids, NUM_CLASSES), NUM_CLASSES, 0.1)
    np.testing.assert_array_equal(from_ids, from_one_hot)  # the integer path's numerics are unchanged
    probabilities = 0.7 * jax.nn.one_hot(class_ids, NUM_CLASSES) + 0.3 * jax.nn.one_hot(
        class_ids[::-1], NUM_CLASSES
    )
    smoothed = 0.9 * probabilities + 0.1 / NUM_CLASSES  # TF's label smoothing, applied to the mixture
    expected = -jnp.sum(smoothed * jax.nn.log_softmax(logits), -1)
    np.testing.assert_allclose(
        steps.cross_entropy(logits, probabilities, NUM_CLASSES, 0.1), expected, rtol=1e-6
    )
    np.testing.assert_array_equal(steps.hard_labels(probabilities), class_ids)


def test_v2_configs_carry_the_official_alphas_and_v1_configs_none():
    for variant, alpha in [
        ("v2-s", 0.0),
        ("v2-m", 0.2),
        ("v2-l", 0.5),
        ("v2-xl", 0.5),
        ("v2-b0", 0.0),
        ("b0", 0.0),
        ("b7", 0.0),
    ]:
        config = imagenet.get_config(variant)
        assert (config.mixup_alpha, config.cutmix_alpha) == (alpha, alpha), variant


def test_negative_alpha_is_a_config_error_naming_the_key():
    config = imagenet.get_config("v2-m")
    config.cutmix_alpha = -0.2
    with pytest.raises(configuration.ConfigError, match="config.cutmix_alpha"):
        configuration.validate(config)


def test_mixing_with_augmentation_on_the_device_is_a_config_error_and_v2_configs_avoid_it():
    config = imagenet.get_config("v2-l")
    assert config.augment_on_device is False
    configuration.validate(config)
    config.augment_on_device = True
    with pytest.raises(configuration.ConfigError, match="config.augment_on_device=False"):
        configuration.validate(config)


def test_training_on_mixed_labels_runs_without_recompiling(data_dir):
    # One block: what is checked is the step on soft labels, and compiling a bigger network costs CI time.
    config = tiny_config(
        data_dir,
        mixup_alpha=0.2,
        cutmix_alpha=0.2,
        augment_on_device=False,  # mixing is the host's, after augmentation (configuration.validate)
        **{"model.block_strings": ("r1_k3_s11_e1_i32_o16",)},
    )
    spec = configuration.model_spec_from_config(config, num_classes=10)
    model = EfficientNet(spec, batch_norm_axis_name=steps.AXIS_NAME)
    schedule = optim.learning_rate_schedule(0.05, 10, 0.0, 0.97, 2.4)
    tx = optim.rmsprop(schedule, config)
    devices = jax.local_devices()[:1]  # one device: the cheapest compile (the suite's time is compile time)
    state = steps.replicate(
        steps.create_train_state(jax.random.key(0), model, config.image_size, tx), devices
    )
    step = steps.pmap_train_step(
        model, tx, schedule, config, jax.random.key(1), IMAGENET_NORMALIZATION, devices=devices
    )
    batches = flax.jax_utils.prefetch_to_device(
        input_pipeline.create_train_iterator(
            config,
            process_index=0,
            process_count=1,
            local_device_count=1,
        ),
        2,
        devices,
    )
    first_batch = next(batches)
    assert first_batch["label"].shape == (1, 16, 10) and first_batch["label"].dtype == jnp.float32
    state, metrics = step(state, first_batch)
    jax.block_until_ready(metrics)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kwargs: compiles.append(event) if "backend_compile" in event else None
    )
    for _ in range(3):
        state, metrics = step(state, next(batches))
    metrics = jax.device_get(metrics)
    assert compiles == []
    assert np.isfinite(metrics["loss"]).all() and metrics["state_finite"].min() == 1.0
