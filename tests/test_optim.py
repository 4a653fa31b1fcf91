"""The optimiser, schedule and weight decay against the reference's TensorFlow semantics."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import efficientnet_jax as ej
from efficientnet_jax import optim

RMSPROP = ml_collections.ConfigDict(
    dict(rmsprop_decay=0.9, rmsprop_momentum=0.9, rmsprop_epsilon=1e-3, rmsprop_initial_scale=1.0)
)


def test_rmsprop_matches_the_tensorflow_update_rule_by_hand():
    """TF1 RMSProp, written out for three steps with lr 0.1 and gradients 0.5, -1.0, 2.0:
    ms = 0.9 ms + 0.1 g^2 (ms0 = 1); mom = 0.9 mom + lr g / sqrt(ms + 1e-3); w -= mom."""
    grads = [0.5, -1.0, 2.0]
    ms, mom, w = 1.0, 0.0, 3.0
    expected = []
    for g in grads:
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + 0.1 * g / math.sqrt(ms + 1e-3)
        w -= mom
        expected.append(w)
    # The first step by hand: ms = 0.925, mom = 0.05 / sqrt(0.926), w = 3 - 0.0519594...
    assert expected[0] == pytest.approx(3.0 - 0.05 / math.sqrt(0.926), abs=1e-12)

    tx = optim.rmsprop(0.1, RMSPROP)
    params = jnp.array(3.0)
    state = tx.init(params)
    for g, want in zip(grads, expected):
        updates, state = tx.update(jnp.array(g), state, params)
        params = optax.apply_updates(params, updates)
        assert float(params) == pytest.approx(want, abs=1e-6)


def reference_learning_rate(
    step, peak, steps_per_epoch, warmup_epochs=5, decay_factor=0.97, decay_epochs=2.4
):
    """efficientnet utils.build_learning_rate, transcribed as arithmetic."""
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        return peak * step / warmup_steps
    return peak * decay_factor ** math.floor(step / (steps_per_epoch * decay_epochs))


@pytest.mark.parametrize(
    "step",
    [0, 1, 100, 1250, 1251, 1252, 2999, 3000, 3001, 6000, 100_000, 437_500],
    ids=lambda s: f"step{s}",
)
def test_learning_rate_schedule_matches_reference(step):
    steps_per_epoch = 1250  # ImageNet at batch 1024
    peak = optim.scaled_learning_rate(0.016, 1024)
    assert peak == pytest.approx(0.064)
    schedule = optim.learning_rate_schedule(peak, steps_per_epoch, 5.0, 0.97, 2.4)
    want = reference_learning_rate(step, peak, steps_per_epoch)
    assert float(schedule(step)) == pytest.approx(want, rel=1e-5)


def test_learning_rate_warms_up_then_decays_in_stairs_counted_from_zero():
    schedule = optim.learning_rate_schedule(1.0, 100, 5.0, 0.97, 2.4)
    assert float(schedule(250)) == pytest.approx(0.5)  # half-way through warm-up
    # At the end of warm-up (step 500) the staircase has already decayed twice (at 240 and 480).
    assert float(schedule(500)) == pytest.approx(0.97**2)
    assert float(schedule(719)) == pytest.approx(0.97**2)
    assert float(schedule(720)) == pytest.approx(0.97**3)


def test_weight_decay_covers_every_variable_but_batch_norm():
    model = ej.create_model("b0")
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))["params"]
    mask = optim.weight_decay_mask(params)
    decayed = sum(math.prod(p.shape) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m)
    flat = jax.tree_util.tree_leaves_with_path(params)
    batch_norm = sum(math.prod(p.shape) for path, p in flat if any(str(k.key).endswith("_bn") for k in path))
    assert batch_norm == 5_330_564 - 5_288_548  # scale+offset per BN channel, as many as mean+variance
    assert decayed == 5_288_548 - batch_norm
    assert optim.is_batch_norm_parameter((jax.tree_util.DictKey("stem_bn"), jax.tree_util.DictKey("scale")))
    assert not optim.is_batch_norm_parameter(
        (jax.tree_util.DictKey("classifier"), jax.tree_util.DictKey("bias"))
    )


def test_l2_penalty_is_half_the_sum_of_squares_of_decayed_variables():
    params = {
        "conv": {"kernel": jnp.full((2, 2), 2.0)},
        "se": {"bias": jnp.array([1.0, -3.0])},
        "stem_bn": {"scale": jnp.full((4,), 100.0)},
    }
    assert float(optim.l2_penalty(params)) == pytest.approx(0.5 * (4 * 4.0 + 1.0 + 9.0))
    np.testing.assert_equal(
        jax.tree.leaves(optim.weight_decay_mask(params)), [True, True, False]
    )
