"""The training job: pmapped step equivalence, EMA, and clear errors for bad configurations. Resume
after preemption: test_recovery.py; learning on real data: test_quickstart.py."""

import os
import subprocess
import sys

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_jax import configuration, input_pipeline, normalizations, optim, steps, trainer
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.normalizations import IMAGENET_NORMALIZATION
from tests.workers.tiny_config import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _step_fn(config, devices, normalization=IMAGENET_NORMALIZATION):
    spec = configuration.model_spec_from_config(config, num_classes=10)
    model = EfficientNet(spec, batch_norm_axis_name=steps.AXIS_NAME)
    schedule = optim.learning_rate_schedule(0.05, 10, 0.0, 0.97, 2.4)  # no warm-up: lr > 0 at step 0
    tx = optim.rmsprop(schedule, config)
    state = steps.create_train_state(jax.random.key(0), model, config.image_size, tx)
    step = steps.pmap_train_step(
        model, tx, schedule, config, jax.random.key(1), normalization, devices=devices
    )
    return state, step


def test_normalize_maps_known_pixels_as_each_normalisation_says():
    """Pixels 0, 127 and 255 (and a red-green-blue pixel): ImageNet's per-channel statistics of the
    official EfficientNet code, the official Lite/EdgeTPU 127/128, AdvProp's [-1, 1]."""
    pixels = np.array([[0, 0, 0], [127, 127, 127], [255, 255, 255], [255, 127, 0]], np.uint8)
    expected = {
        "imagenet": [
            [-2.117904, -2.035714, -1.804444],
            [0.056940, 0.187675, 0.409063],
            [2.248908, 2.428571, 2.640000],
            [2.248908, 0.187675, -1.804444],
        ],
        "edge": [[-0.9921875] * 3, [0.0] * 3, [1.0] * 3, [1.0, 0.0, -0.9921875]],
        "signed_unit": [[-1.0] * 3, [-0.003921569] * 3, [1.0] * 3, [1.0, -0.003921569, -1.0]],
    }
    for name, values in expected.items():
        normalized = steps.normalize(pixels, normalizations.NAMED_NORMALIZATIONS[name])
        assert normalized.dtype == jnp.float32
        np.testing.assert_allclose(normalized, values, rtol=1e-5, atol=1e-6, err_msg=name)


def test_uint8_feeding_gives_the_float_feeding_step_bit_for_bit(data_dir, monkeypatch):
    """The step fed uint8 pixels (normalised inside it) against the step as it was before, fed the
    host's float32 `(pixels - mean) / std` computed by TensorFlow and normalising nothing: the same
    inputs, and the loss, the metrics and every leaf of the new state, to the bit (augmentation off)."""
    config = tiny_config(
        data_dir, augment_on_device=False, **{"model.drop_connect_rate": 0.0, "model.dropout_rate": 0.0}
    )
    pixels = np.random.default_rng(0).integers(0, 256, size=(1, 4, 16, 16, 3), dtype=np.uint8)
    pixels[0, 0] = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)  # every pixel value
    labels = np.arange(4, dtype=np.int32)[None]
    mean = tf.constant(IMAGENET_NORMALIZATION.mean, tf.float32)
    std = tf.constant(IMAGENET_NORMALIZATION.std, tf.float32)
    host_floats = ((tf.cast(pixels, tf.float32) - mean) / std).numpy()
    device_floats = jax.jit(steps.normalize, static_argnums=1)(pixels, IMAGENET_NORMALIZATION)
    np.testing.assert_array_equal(np.asarray(device_floats), host_floats)

    devices = jax.local_devices()[:1]
    state, uint8_step = _step_fn(config, devices)
    from_uint8 = uint8_step(steps.replicate(state, devices), {"image": pixels, "label": labels})
    _, float_step = _step_fn(config, devices)
    with monkeypatch.context() as patch:  # the step as it was: its inputs as they come
        patch.setattr(steps, "normalize", lambda images, normalization: images)
        from_floats = float_step(steps.replicate(state, devices), {"image": host_floats, "label": labels})
    for a, b in zip(jax.tree.leaves(from_uint8), jax.tree.leaves(from_floats)):
        np.testing.assert_array_equal(a, b)


def test_device_augmentation_depends_on_the_example_index_on_its_host_not_on_the_devices(monkeypatch):
    """Each example's on-device augmentation is drawn from (key, host, step, its index in the host's
    batch): 8 devices of 2 examples give every example the key 1 device of 16 gives it, the step
    changes the keys, and RandAugment changed pixels. Keys, not pixels, are compared across the two
    layouts: an affine op's source coordinate on a .5 tie may round either way in a program compiled
    for another batch shape (seen under the tests' XLA flags: 5 pixels of one example)."""
    config = tiny_config(None, augment="randaugment", randaugment_num_layers=1)
    images = np.random.default_rng(0).integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
    rng = jax.random.key(3)

    def augmented(devices, step):
        augment = jax.pmap(
            lambda shard: steps.augment_on_device(shard, rng, step, config),
            axis_name=steps.AXIS_NAME,
            devices=devices,
        )
        return np.asarray(augment(images.reshape(len(devices), -1, 16, 16, 3)))

    assert not np.array_equal(augmented(jax.local_devices(), 5).reshape(images.shape), images)
    # The keys augment_batch is handed, per example, in place of the augmented images.
    monkeypatch.setattr(
        steps.device_augment, "augment_batch", lambda images, keys, *args: jax.random.key_data(keys)
    )
    on_8 = augmented(jax.local_devices(), 5).reshape(16, -1)
    np.testing.assert_array_equal(on_8, augmented(jax.local_devices()[:1], 5).reshape(16, -1))
    assert len({tuple(key) for key in on_8}) == 16  # every example its own draws
    assert not np.any(np.all(on_8 == augmented(jax.local_devices(), 6).reshape(16, -1), axis=1))


def test_pmapped_step_on_8_devices_equals_one_device_on_the_whole_batch(data_dir):
    """Cross-replica BN and gradient averaging: loss, gradients (inside RMSProp's slots: the mean
    square holds 0.1 g^2 + 0.9), parameters, BN statistics and EMA agree to float32 tolerance;
    and the EMA follows the reference's update."""
    assert jax.local_device_count() == 8
    config = tiny_config(data_dir, **{"model.drop_connect_rate": 0.0, "model.dropout_rate": 0.0})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(16,)).astype(np.int32)

    state, step8 = _step_fn(config, jax.local_devices())
    _, step1 = _step_fn(config, jax.local_devices()[:1])
    out8, metrics8 = step8(
        steps.replicate(state), {"image": images.reshape(8, 2, 16, 16, 3), "label": labels.reshape(8, 2)}
    )
    out1, metrics1 = step1(
        steps.replicate(state, devices=jax.local_devices()[:1]),
        {"image": images[None], "label": labels[None]},
    )
    for key in ("loss", "cross_entropy", "grad_norm", "top1"):
        np.testing.assert_allclose(metrics8[key][0], metrics1[key][0], rtol=1e-5, err_msg=key)
    # Compared on the host: indexing and arithmetic on device arrays compile a program per leaf shape
    # (206 of them, 40 s of compilation on 2 cores).
    single, out8, state = steps.unreplicate(out1), jax.device_get(out8), jax.device_get(state)
    for device in (0, 7):
        replica = jax.tree.map(lambda x, device=device: x[device], out8)
        for name in ("params", "batch_stats", "opt_state", "ema_params", "ema_batch_stats"):
            for a, b in zip(jax.tree.leaves(getattr(replica, name)), jax.tree.leaves(getattr(single, name))):
                np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)
    # The parameters moved, so the comparison above is not between two untouched copies.
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), single.params, state.params)
    assert max(jax.tree.leaves(moved)) > 1e-3

    # The EMA after the first step, with the reference's warm-up: decay = (1 + 0) / (10 + 0).
    decay = min(config.ema_decay, 1.0 / 10.0)
    for new, old, ema in zip(
        jax.tree.leaves((single.params, single.batch_stats)),
        jax.tree.leaves((state.params, state.batch_stats)),
        jax.tree.leaves((single.ema_params, single.ema_batch_stats)),
    ):
        np.testing.assert_allclose(ema, decay * old + (1 - decay) * new, rtol=1e-5, atol=1e-7)
    assert int(single.step) == 1


def test_per_device_rng_streams_differ_and_replay_by_step():
    keys = jax.pmap(
        lambda step: jax.tree.map(jax.random.key_data, steps.step_rngs(jax.random.key(0), step)),
        axis_name=steps.AXIS_NAME,
    )
    first, again, later = keys(np.zeros(8, np.int32)), keys(np.zeros(8, np.int32)), keys(np.ones(8, np.int32))
    for stream in ("dropout", "drop_path"):
        per_device = {tuple(np.asarray(k).ravel()) for k in first[stream]}
        assert len(per_device) == 8, stream  # every replica its own key
        np.testing.assert_array_equal(first[stream], again[stream])  # a resumed step replays its draws
        assert not np.array_equal(first[stream], later[stream])
    assert not np.array_equal(first["dropout"], first["drop_path"])


def test_no_recompilation_after_the_first_step(data_dir):
    """uint8 batches, RandAugment on the devices: one compilation for every step."""
    config = tiny_config(data_dir, augment="randaugment", augment_on_device=True)
    state, step = _step_fn(config, jax.local_devices())
    batches = flax.jax_utils.prefetch_to_device(input_pipeline.create_train_iterator(config), 2)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kwargs: compiles.append(event) if "backend_compile" in event else None
    )
    state = steps.replicate(state)
    state, metrics = step(state, next(batches))
    jax.block_until_ready(metrics)
    assert compiles, "the listener saw no compilation at all"
    compiles.clear()
    for _ in range(3):
        state, metrics = step(state, next(batches))
    jax.block_until_ready(metrics)
    assert compiles == []


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"dataset": "no_such_dataset"}, "config.dataset"),
        ({"batch_size": 12}, "config.batch_size"),
        ({"eval_batch_size": 0}, "config.eval_batch_size"),
    ],
)
def test_bad_config_fails_before_the_first_step(data_dir, tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        trainer.train_and_evaluate(tiny_config(data_dir, **overrides), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_imagenet_without_manual_dir_is_a_clear_error(tmp_path):
    config = tiny_config(str(tmp_path / "empty_tfds"), dataset="imagenet2012")
    with pytest.raises(ValueError, match="config.manual_dir"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))


def test_unwritable_workdir_is_a_clear_error(data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="--workdir"):
        trainer.train_and_evaluate(tiny_config(data_dir), str(blocker / "run"))


def test_unknown_or_mistyped_config_keys_fail_on_the_command_line(data_dir, tmp_path):
    for flag, message in (
        ("--config.batch_sise=8", "batch_sise"),
        ("--config.batch_size=eight", "batch_size"),
    ):
        result = subprocess.run(
            [sys.executable, "train.py", f"--workdir={tmp_path}", flag],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
        assert not os.path.exists(tmp_path / "checkpoints")


def test_misspelt_key_in_a_config_file_is_named(tmp_path):
    sys.path.insert(0, REPO)
    import train
    from configs import default

    config = default.get_config()
    config.unlock()
    config.lerning_rate = 0.1
    with pytest.raises(ValueError, match="config.lerning_rate"):
        train.check_keys(config, default.get_config())
