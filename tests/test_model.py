"""The model family against the reference: parameter counts, FLOPs, shapes, padding, initialisers,
stochastic depth, RNG streams, cross-replica batch norm, the Fused-MBConv block, the Lite and EdgeTPU
families, and clear errors for bad input. EfficientNetV2 has its own module, tests/test_v2.py."""

import dataclasses
import math
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import efficientnet_jax as ej
from configs import imagenet
from efficientnet_jax import accounting, configuration, layers, scaling
from efficientnet_jax import model as model_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Trainable parameters of the official models as ported by timm (1,000 classes).
REFERENCE_TRAINABLE_PARAMS = {
    "b0": 5_288_548,
    "b1": 7_794_184,
    "b2": 9_109_994,
    "b3": 12_233_232,
    "b4": 19_341_616,
    "b5": 30_389_784,
    "b6": 43_040_704,
    "b7": 66_347_960,
    "b8": 87_413_142,
    "l2": 480_309_308,
    "lite0": 4_652_008,
    "lite1": 5_416_680,
    "lite2": 6_092_072,
    "lite3": 8_197_096,
    "lite4": 13_006_568,
    "edgetpu-s": 5_438_392,
    "edgetpu-m": 6_899_496,
    "edgetpu-l": 10_589_712,
}
PAPER_MULTIPLY_ADDS = {"b0": 0.39e9, "b1": 0.70e9, "b2": 1.0e9, "b3": 1.8e9, "b4": 4.2e9, "b5": 9.9e9}

# A width/depth-reduced network for tests that run the model.
TINY = ej.ModelSpec(width=0.25, depth=0.3, resolution=32, num_classes=10, name="tiny")
# The same with EfficientNetV2's base table: Fused-MBConv stages without and with expansion, then
# MBConv ones with SE.
TINY_V2 = scaling.variant_spec("v2-b0", width=0.25, depth=0.3, resolution=32, num_classes=10, name="tiny")


@pytest.mark.parametrize("variant", sorted(REFERENCE_TRAINABLE_PARAMS))
def test_trainable_parameter_count_matches_reference_exactly(variant):
    counts = accounting.count_parameters(variant)
    assert counts["trainable"] == REFERENCE_TRAINABLE_PARAMS[variant]


def test_b0_parameters_with_batch_norm_statistics():
    counts = accounting.count_parameters("b0")
    assert counts["trainable"] + counts["batch_norm_statistics"] == 5_330_564


@pytest.mark.parametrize("variant", sorted(PAPER_MULTIPLY_ADDS))
def test_forward_multiply_adds_within_5_percent_of_paper(variant):
    multiply_adds = accounting.count_multiply_adds(variant)
    assert abs(multiply_adds / PAPER_MULTIPLY_ADDS[variant] - 1) < 0.05


def test_multiply_add_count_of_a_single_conv_is_analytic():
    spec = ej.ModelSpec(
        width=1.0,
        depth=1.0,
        resolution=16,
        num_classes=7,
        stages=(ej.StageSpec(1, 3, 1, 1, 32, 32, None),),
        stem_filters=32,
        head_filters=64,
    )
    # stem 3x3x3x32 at 8x8; depthwise 3x3x32 at 8x8; project 32x32 at 8x8; head 32x64 at 8x8; dense 64x7.
    expected = 64 * 27 * 32 + 64 * 9 * 32 + 64 * 32 * 32 + 64 * 32 * 64 + 64 * 7
    assert accounting.count_multiply_adds(spec) == expected


def _block_outputs(spec, resolution):
    """Shapes of every block's output (MBConv or Fused-MBConv), in order, via eval_shape (no memory)."""
    model = ej.EfficientNet(spec)
    images = jax.ShapeDtypeStruct((2, resolution, resolution, 3), jnp.float32)

    def run(x):
        variables = model.init(jax.random.key(0), x)
        _, state = model.apply(
            variables, x, capture_intermediates=lambda module, _: isinstance(module, layers.Block)
        )
        return state["intermediates"]

    intermediates = jax.eval_shape(run, images)
    names = sorted(intermediates, key=lambda name: int(name.split("_")[1]))
    return [intermediates[name]["__call__"][0].shape for name in names]


@pytest.mark.parametrize(
    "variant,stage_widths,stage_repeats,stage_sizes",
    [
        ("b0", [16, 24, 40, 80, 112, 192, 320], [1, 2, 2, 3, 3, 4, 1], [112, 56, 28, 14, 14, 7, 7]),
        ("b4", [24, 32, 56, 112, 160, 272, 448], [2, 4, 4, 6, 6, 8, 2], [190, 95, 48, 24, 24, 12, 12]),
        # fix_head_stem: the first and last stages keep their single block at depth 1.8.
        ("lite4", [24, 32, 56, 112, 160, 272, 448], [1, 4, 4, 6, 6, 8, 1], [150, 75, 38, 19, 19, 10, 10]),
        ("edgetpu-s", [24, 32, 48, 96, 144, 192], [1, 2, 4, 5, 4, 2], [112, 56, 28, 14, 14, 7]),
        ("edgetpu-l", [32, 40, 56, 112, 176, 232], [2, 3, 6, 7, 6, 3], [150, 75, 38, 19, 19, 10]),
    ],
)
def test_per_stage_output_shapes(variant, stage_widths, stage_repeats, stage_sizes):
    spec = scaling.variant_spec(variant)
    shapes = _block_outputs(spec, spec.resolution)
    expected = []
    for width, repeats, size in zip(stage_widths, stage_repeats, stage_sizes):
        expected += [(2, size, size, width)] * repeats
    assert shapes == expected


def test_feature_maps_at_strides_2_to_32():
    model = ej.create_model("b0")
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    maps = jax.eval_shape(
        lambda x: model.apply(model.init(jax.random.key(0), x), x, features=True), images
    )
    assert [m.shape for m in maps] == [
        (1, 112, 112, 16),
        (1, 56, 56, 24),
        (1, 28, 28, 40),
        (1, 14, 14, 112),
        (1, 7, 7, 320),
    ]


def _tf_same_reference_conv(x, kernel, stride, groups=1):
    pads = [layers.tf_same_padding(size, k, stride) for size, k in zip(x.shape[1:3], kernel.shape[:2])]
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


@pytest.mark.parametrize("size", [7, 8, 15, 16])
@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (3, 2), (5, 2)])
def test_same_padding_matches_explicit_tensorflow_padding(size, kernel_size, stride):
    x = jax.random.normal(jax.random.key(1), (2, size, size + 1, 6))
    conv = nn.Conv(4, (kernel_size, kernel_size), strides=(stride, stride), padding="SAME", use_bias=False)
    variables = conv.init(jax.random.key(2), x)
    expected = _tf_same_reference_conv(x, variables["params"]["kernel"], stride)
    np.testing.assert_allclose(conv.apply(variables, x), expected, atol=1e-5)
    for implementation in ("xla", "shift"):
        depthwise = layers.DepthwiseConv(kernel_size, stride, implementation)
        dw_variables = depthwise.init(jax.random.key(3), x)
        expected = _tf_same_reference_conv(x, dw_variables["params"]["kernel"], stride, groups=6)
        np.testing.assert_allclose(depthwise.apply(dw_variables, x), expected, atol=1e-5)


def test_tf_same_padding_puts_the_odd_pixel_at_the_end():
    assert layers.tf_same_padding(224, 3, 2) == (0, 1)
    assert layers.tf_same_padding(225, 3, 2) == (1, 1)
    assert layers.tf_same_padding(14, 5, 1) == (2, 2)


# The shift implementation has its own kernel gradient (layers.depthwise_kernel_gradient): every
# kernel size and stride of the stage table, on odd and even sizes (TF SAME pads them differently).
@pytest.mark.parametrize(
    "kernel_size,stride,height,width", [(5, 2, 13, 13), (3, 1, 8, 7), (3, 2, 8, 9), (5, 1, 6, 7)]
)
def test_depthwise_implementations_agree_in_value_and_gradient(kernel_size, stride, height, width):
    x = jax.random.normal(jax.random.key(0), (2, height, width, 8))
    module = layers.DepthwiseConv(kernel_size, stride, "xla")
    variables = module.init(jax.random.key(1), x)

    def loss(variables, x, implementation):
        out = layers.DepthwiseConv(kernel_size, stride, implementation).apply(variables, x)
        return jnp.sum(jnp.sin(out))

    gradients = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    grad_xla, grad_shift = gradients(variables, x, "xla"), gradients(variables, x, "shift")
    for a, b in zip(jax.tree.leaves(grad_xla), jax.tree.leaves(grad_shift)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_whole_model_identical_under_both_depthwise_implementations():
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = jax.jit(ej.create_model(TINY).init)(jax.random.key(1), images)
    logits = [
        jax.jit(ej.create_model(TINY, depthwise_implementation=impl).apply)(variables, images)
        for impl in ("xla", "shift")
    ]
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-4, atol=1e-5)


def test_initialisers_follow_the_reference():
    spec = scaling.variant_spec("b0")
    shapes = jax.eval_shape(
        lambda: ej.create_model(spec).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    )
    assert shapes["params"]["block_2"]["depthwise_conv"]["kernel"].shape == (3, 3, 1, 144)
    variables = jax.jit(ej.create_model(spec).init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    params = variables["params"]
    depthwise = params["block_2"]["depthwise_conv"]["kernel"]
    assert abs(float(jnp.std(depthwise)) / math.sqrt(2 / 9) - 1) < 0.05
    expand = params["block_2"]["expand_conv"]["kernel"]  # (1, 1, 24, 144): fan_out = 144
    assert abs(float(jnp.std(expand)) / math.sqrt(2 / 144) - 1) < 0.05
    classifier = params["classifier"]["kernel"]
    limit = 1 / math.sqrt(1000)
    assert float(jnp.max(jnp.abs(classifier))) <= limit
    assert float(jnp.max(jnp.abs(classifier))) > 0.99 * limit
    assert float(jnp.abs(params["classifier"]["bias"]).max()) == 0.0
    se_bias = params["block_2"]["se"]["reduce"]["bias"]
    assert se_bias.shape == (6,)  # int(24 * 0.25): from the block's input filters, not the expanded 144
    bn = params["block_2"]["project_bn"]
    assert float(jnp.min(bn["scale"])) == 1.0 and float(jnp.max(jnp.abs(bn["bias"]))) == 0.0


def test_batch_norm_momentum_and_epsilon():
    model = ej.create_model(TINY)
    images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3)) * 3 + 1
    variables = jax.jit(model.init)(jax.random.key(1), images)
    _, updates = jax.jit(
        lambda v, x: model.apply(
            v, x, train=True, mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(2), "drop_path": jax.random.key(3)},
        )
    )(variables, images)
    # The stem's BN sees the stem conv output; its moving mean moves 1% of the way to the batch mean.
    stem_out = nn.Conv(
        scaling.round_filters(32, TINY.width), (3, 3), strides=(2, 2), use_bias=False
    ).apply({"params": variables["params"]["stem_conv"]}, images)
    batch_mean = jnp.mean(stem_out, axis=(0, 1, 2))
    np.testing.assert_allclose(
        updates["batch_stats"]["stem_bn"]["mean"], 0.01 * batch_mean, rtol=1e-4, atol=1e-6
    )
    bn_modules = []
    jax.eval_shape(
        lambda v, x: model.apply(
            v,
            x,
            capture_intermediates=lambda m, _: (
                isinstance(m, nn.BatchNorm) and bn_modules.append(m) is not None
            ),
        ),
        variables,
        images,
    )
    assert bn_modules and all(m.momentum == 0.99 and m.epsilon == 1e-3 for m in bn_modules)


def test_stochastic_depth_rates_grow_linearly_over_all_blocks():
    spec = scaling.variant_spec("b0")
    rates = []
    model = ej.create_model(spec)

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.MBConv) and context.method_name == "__call__":
            rates.append((context.module.drop_path_rate, context.module.stride, context.module.input_filters,
                          context.module.output_filters))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert len(rates) == 16
    np.testing.assert_allclose([r[0] for r in rates], [0.2 * i / 16 for i in range(16)])


def test_stochastic_depth_keeps_expected_fraction_and_is_identity_at_eval():
    module = layers.StochasticDepth(rate=0.3)
    x = jnp.ones((20_000, 2, 2, 3))
    out = module.apply({}, x, deterministic=False, rngs={"drop_path": jax.random.key(0)})
    per_example = np.asarray(out[:, 0, 0, 0])
    kept = per_example != 0
    assert abs(kept.mean() - 0.7) < 0.01  # 6 standard deviations at n=20,000
    np.testing.assert_allclose(per_example[kept], 1 / 0.7, rtol=1e-6)
    assert np.all(np.asarray(out) == per_example[:, None, None, None])  # whole example dropped or kept
    np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)


def test_dropout_and_drop_path_draw_from_named_rng_streams():
    model = ej.create_model(TINY, dropout_rate=0.5, drop_connect_rate=0.5)
    images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    variables = jax.jit(model.init)(jax.random.key(1), images)

    @jax.jit
    def apply_train(dropout_key, drop_path_key):
        logits, _ = model.apply(
            variables, images, train=True, mutable=["batch_stats"],
            rngs={"dropout": dropout_key, "drop_path": drop_path_key},
        )
        return logits

    def train_logits(dropout_seed, drop_path_seed):
        return np.asarray(apply_train(jax.random.key(dropout_seed), jax.random.key(drop_path_seed)))

    base = train_logits(0, 0)
    np.testing.assert_array_equal(base, train_logits(0, 0))
    assert not np.allclose(base, train_logits(1, 0))
    assert not np.allclose(base, train_logits(0, 1))
    with pytest.raises(Exception, match="drop_path"):
        jax.eval_shape(
            lambda: model.apply(
                variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
            )
        )
    eval_logits = [np.asarray(jax.jit(model.apply)(variables, images)) for _ in range(2)]
    np.testing.assert_array_equal(eval_logits[0], eval_logits[1])


def test_cross_replica_batch_norm_equals_one_device_on_the_whole_batch():
    assert jax.local_device_count() == 8
    images = jax.random.normal(jax.random.key(0), (16, 32, 32, 3)) * 2 + 0.5
    single = ej.create_model(TINY, drop_connect_rate=0.0, dropout_rate=0.0)
    variables = jax.jit(single.init)(jax.random.key(1), images)
    logits, single_state = jax.jit(lambda v, x: single.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, images
    )

    replicated = ej.create_model(TINY, drop_connect_rate=0.0, dropout_rate=0.0, batch_norm_axis_name="batch")
    sharded_logits, sharded_state = jax.pmap(
        lambda v, x: replicated.apply(v, x, train=True, mutable=["batch_stats"]),
        axis_name="batch",
        in_axes=(None, 0),
    )(variables, images.reshape(8, 2, 32, 32, 3))
    np.testing.assert_allclose(sharded_logits.reshape(16, -1), logits, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(jax.tree.leaves(sharded_state), jax.tree.leaves(single_state)):
        np.testing.assert_allclose(ours[0], theirs, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ours[7], theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "variant,replicas,expected",
    [("b0", 1, 1), ("b0", 8, 1), ("b0", 16, 8), ("b0", 32, 8), ("b0", 64, 8), ("b0", 128, 16),
     ("b0", 1024, 128), ("lite0", 32, 8), ("v2-s", 1, 1), ("v2-s", 4, 4), ("v2-s", 8, 8), ("v2-s", 32, 8),
     ("v2-b0", 1024, 8)],
)
def test_reference_batch_norm_groups_follow_the_official_rule_of_each_family(variant, replicas, expected):
    """tensorflow/tpu's rule for EfficientNet (alone up to 8 cores, then max(8, n // 8)); google/automl's
    for EfficientNetV2 (min(8, n)): the group size configs/imagenet.py gets on `replicas` devices."""
    assert configuration.batch_norm_group_size(imagenet.get_config(variant), replicas) == expected


def test_batch_norm_group_sizes_all_a_number_and_bad_values():
    config = imagenet.get_config("b0")
    config.batch_norm_group_size = "all"
    assert configuration.batch_norm_group_size(config, 16) == 16
    config.batch_norm_group_size = "4"
    assert configuration.batch_norm_group_size(config, 16) == 4
    assert model_lib.batch_norm_groups(16, 8) == (tuple(range(8)), tuple(range(8, 16)))
    assert model_lib.batch_norm_groups(8, 8) is None  # one group: the plain cross-replica reduction
    for bad in ("3", "0", "everything", "-2"):
        config.batch_norm_group_size = bad
        with pytest.raises(configuration.ConfigError, match=rf"config.batch_norm_group_size='{bad}' is not "
                           r"'reference', 'all' or a number of replicas that divides the 16 replicas"):
            configuration.batch_norm_group_size(config, 16)


def _per_device_forward(model, variables, images):
    return jax.pmap(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), axis_name="batch",
                    in_axes=(None, 0))(variables, images.reshape(8, -1, *images.shape[1:]))


def test_reference_batch_norm_on_8_devices_normalises_each_device_with_its_own_shard():
    """B0's official rule on 8 replicas is one group per replica: each device's logits (its normalised
    activations carried through the network) and updated batch statistics equal one device's on that
    device's shard alone. 4 examples of 64 pixels per device: statistics of 2 examples at 1x1 pixels
    are too ill-conditioned to compare two compilations."""
    group_size = configuration.batch_norm_group_size(imagenet.get_config("b0"), jax.local_device_count())
    assert group_size == 1
    spec = dataclasses.replace(TINY, resolution=64, drop_connect_rate=0.0, dropout_rate=0.0)
    images = jax.device_get(jax.random.normal(jax.random.key(0), (32, 64, 64, 3)) * 2 + 0.5)
    single = ej.EfficientNet(spec)
    variables = jax.jit(single.init)(jax.random.key(1), images[:1])
    grouped = ej.EfficientNet(spec, batch_norm_axis_name="batch",
                              batch_norm_axis_index_groups=model_lib.batch_norm_groups(8, group_size))
    logits, state = jax.device_get(_per_device_forward(grouped, variables, images))
    one_device = jax.jit(lambda v, x: single.apply(v, x, train=True, mutable=["batch_stats"]))
    for device in range(8):
        shard_logits, shard_state = jax.device_get(one_device(variables, images[4 * device:4 * device + 4]))
        np.testing.assert_allclose(logits[device], shard_logits, rtol=1e-4, atol=1e-4)
        for ours, theirs in zip(jax.tree.leaves(state), jax.tree.leaves(shard_state)):
            np.testing.assert_allclose(ours[device], theirs, rtol=1e-4, atol=1e-6)
    means = [leaf for leaf in jax.tree.leaves(state) if leaf.ndim == 2]
    assert not np.allclose(means[0][0], means[0][1])  # the devices' statistics are their own


def test_batch_norm_groups_of_8_on_16_devices_equal_8_devices_on_each_half(tmp_path):
    """A 16-device process (tests/workers/batch_norm_groups_worker.py): with groups of 8, each half of
    the replicas computes what 8 devices reducing over all replicas compute on that half of the batch."""
    out = tmp_path / "groups.npz"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the worker sets its own
    worker = os.path.join(REPO, "tests", "workers", "batch_norm_groups_worker.py")
    result = subprocess.run([sys.executable, worker, str(out)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = dict(np.load(out))
    names = [key.removeprefix("grouped/") for key in results if key.startswith("grouped/")]
    assert "logits" in names and len(names) > 10
    for half in range(2):
        for name in names:
            np.testing.assert_allclose(results[f"grouped/{name}"][8 * half:8 * half + 8],
                                       results[f"half{half}/{name}"], rtol=1e-4, atol=1e-6, err_msg=name)
    assert not np.allclose(results["grouped/logits"][:8], results["half1/logits"])


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    model32 = ej.create_model(TINY)
    variables = jax.jit(model32.init)(jax.random.key(1), images)
    model16 = ej.create_model(TINY, dtype="bfloat16")
    init16 = jax.eval_shape(model16.init, jax.random.key(1), images)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(init16))
    logits16 = jax.jit(model16.apply)(variables, images)
    assert logits16.dtype == jnp.float32
    np.testing.assert_allclose(logits16, jax.jit(model32.apply)(variables, images), atol=0.1)


@pytest.mark.parametrize("spec", [TINY, TINY_V2], ids=["mbconv", "fused_and_mbconv"])
def test_remat_computes_the_same_gradients(spec):
    images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    variables = jax.jit(ej.create_model(spec).init)(jax.random.key(1), images)

    def loss(params, remat):
        model = ej.create_model(spec, remat=remat, drop_connect_rate=0.0, dropout_rate=0.0)
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True,
            mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)},
        )
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    plain, remat = grad(variables["params"], False), grad(variables["params"], True)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
        # Recomputation reorders float32 sums: compare to the scale of each gradient.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(a).max()) + 1e-6)


def test_round_filters_and_repeats():
    assert [scaling.round_filters(f, 1.1) for f in (32, 16, 24, 40, 80, 112, 192, 320, 1280)] == [
        32, 16, 24, 48, 88, 120, 208, 352, 1408
    ]
    assert scaling.round_filters(32, 1.4) == 48  # 44.8 -> int(48.8) // 8 * 8 = 48
    assert scaling.round_filters(16, 0.25) == 8  # never below the divisor
    assert scaling.round_filters(100, 1.0) == 104  # 100 + 4 -> 104
    assert [scaling.round_repeats(r, 3.1) for r in (1, 2, 2, 3, 3, 4, 1)] == [4, 7, 7, 10, 10, 13, 4]


def test_compound_coefficients():
    width, depth, resolution = ej.compound_coefficients(1.0)
    assert (width, depth, resolution) == pytest.approx((1.1, 1.2, 256))
    width, depth, resolution = ej.compound_coefficients(2.0, alpha=1.2, beta=1.1, gamma=1.15)
    assert width == pytest.approx(1.21) and depth == pytest.approx(1.44)
    assert resolution == round(224 * 1.15**2 / 8) * 8
    with pytest.raises(ValueError, match="alpha"):
        ej.compound_coefficients(1.0, alpha=0.0)


def test_block_strings_round_trip_the_reference_table():
    assert ej.EFFICIENTNET_B0_STAGES[1] == ej.StageSpec(2, 3, 2, 6, 16, 24, 0.25)
    with pytest.raises(ValueError, match="lacks fields"):
        scaling.decode_block_string("r1_k3_s11")


def test_custom_stage_table_builds():
    stages = scaling.stages_from_block_strings(["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24"])
    model = ej.create_model(ej.ModelSpec(stages=stages, activation="relu6", num_classes=5))
    logits = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))[0])
    assert logits.shape == (1, 5)


def test_unknown_variant_lists_the_valid_names():
    with pytest.raises(ValueError, match="efficientnet-b0.*efficientnet-b7"):
        ej.create_model("efficientnet-b9")


@pytest.mark.parametrize("field", ["width", "depth", "resolution", "num_classes"])
def test_non_positive_coefficient_is_an_error(field):
    with pytest.raises(ValueError, match=field):
        ej.create_model("b0", **{field: 0})


@pytest.mark.parametrize("shape", [(32, 32, 3), (1, 32, 32, 1), (1, 3, 32, 32)])
def test_wrong_image_rank_or_channels_is_an_error(shape):
    model = ej.create_model(TINY)
    with pytest.raises(ValueError, match=r"\[batch, height, width, 3\]"):
        model.init(jax.random.key(0), jnp.zeros(shape))


def test_names_are_accepted_in_both_forms():
    assert ej.create_model("b3").spec == ej.create_model("efficientnet-b3").spec
    assert ej.create_model("B3", num_classes=10).spec.num_classes == 10
    assert ej.create_model("lite2").spec == ej.create_model("efficientnet-lite2").spec
    assert ej.create_model("EdgeTPU-M").spec == ej.create_model("efficientnet-edgetpu-m").spec
    assert ej.create_model("edgetpu-m").spec.name == "efficientnet-edgetpu-m"


# --- Lite and EdgeTPU ------------------------------------------------------------------------------


def _init_shapes(variant):
    model = ej.create_model(variant)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))


@pytest.mark.parametrize(
    "variant,stem,head", [("lite4", 32, 1280), ("b4", 48, 1792), ("edgetpu-l", 40, 1536)]
)
def test_lite_keeps_stem_and_head_unscaled_where_b_and_edgetpu_scale_them(variant, stem, head):
    params = _init_shapes(variant)["params"]
    assert params["stem_conv"]["kernel"].shape == (3, 3, 3, stem)
    assert params["head_conv"]["kernel"].shape[-1] == head


def test_lite_and_edgetpu_blocks():
    lite, edgetpu = scaling.variant_spec("lite2"), scaling.variant_spec("edgetpu-m")
    assert (lite.activation, edgetpu.activation) == ("relu6", "relu")
    assert lite.stages == tuple(
        dataclasses.replace(stage, se_ratio=None) for stage in ej.EFFICIENTNET_B0_STAGES
    )
    assert not any(stage.se_ratio for stage in edgetpu.stages)
    assert [stage.fused for stage in edgetpu.stages] == [True, True, True, False, False, False]
    assert [stage.identity_skip for stage in edgetpu.stages] == [False, True, True, True, True, True]
    assert (edgetpu.batch_norm_momentum, edgetpu.batch_norm_epsilon) == (0.99, 1e-3)


def test_edgetpu_blocks_fused_then_mbconv_the_first_expanding_the_stems_32_channels_to_24_times_4():
    params = _init_shapes("edgetpu-s")["params"]["block_0"]
    assert {name: leaves["kernel"].shape for name, leaves in params.items() if name.endswith("_conv")} == {
        "expand_conv": (3, 3, 32, 96),
        "project_conv": (1, 1, 96, 24),
    }
    blocks = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.Block) and context.method_name == "__call__":
            blocks.append(context.module)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        _init_shapes("edgetpu-s")
    assert [type(m).__name__ for m in blocks] == ["FusedMBConv"] * 7 + ["MBConv"] * 11
    np.testing.assert_allclose([m.drop_path_rate for m in blocks], [0.2 * i / 18 for i in range(18)])
    assert not blocks[0].identity_skip and all(m.identity_skip for m in blocks[1:])


def _randomised(variables, seed):
    """Batch-norm statistics, scales and biases far from their initial values, so that the
    reference comparison below sees each of them; kernels as initialised."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))

    def draw(key, path, leaf):
        name = path[-1].key
        if name in ("var", "scale"):
            return jax.random.uniform(key, leaf.shape, minval=0.5, maxval=1.5)
        if name in ("mean", "bias"):
            return 0.3 * jax.random.normal(key, leaf.shape)
        return leaf

    return jax.tree_util.tree_unflatten(treedef, [draw(key, *leaf) for key, leaf in zip(keys, leaves)])


@pytest.mark.parametrize(
    "expand_ratio,stride,output_filters,identity_skip,se_ratio",
    [
        (4, 2, 8, True, None),  # stride 2: no residual
        (4, 1, 6, True, None),  # residual
        (4, 1, 6, False, None),  # 'noskip'
        (4, 1, 6, True, 0.25),  # with squeeze-and-excitation
        (1, 1, 6, True, None),  # no expansion: one kxk convolution with its activation, residual
        (1, 2, 8, True, None),
    ],
)
def test_fused_mbconv_computes_the_reference(expand_ratio, stride, output_filters, identity_skip, se_ratio):
    """Against a direct computation: [kxk conv with the stride (TF SAME), BN, act] -> [SE] -> 1x1
    project, BN (kxk project, BN, act without expansion) -> + input where the shapes allow and
    `identity_skip`. Odd sizes exercise the asymmetric padding."""
    x = jax.random.normal(jax.random.key(0), (2, 7, 9, 6))
    block = layers.FusedMBConv(
        input_filters=6,
        output_filters=output_filters,
        kernel_size=3,
        stride=stride,
        expand_ratio=expand_ratio,
        se_ratio=se_ratio,
        drop_path_rate=0.5,
        identity_skip=identity_skip,
        activation="relu6",
    )
    variables = _randomised(block.init(jax.random.key(1), x, False), seed=2)
    params, stats = variables["params"], variables["batch_stats"]

    def bn(name, h):
        normalised = (h - stats[name]["mean"]) / jnp.sqrt(stats[name]["var"] + 1e-3)
        return normalised * params[name]["scale"] + params[name]["bias"]

    h = x
    if expand_ratio != 1:
        assert params["expand_conv"]["kernel"].shape == (3, 3, 6, 6 * expand_ratio)
        h = jax.nn.relu6(bn("expand_bn", _tf_same_reference_conv(x, params["expand_conv"]["kernel"], stride)))
    if se_ratio:
        se = params["se"]
        assert se["reduce"]["kernel"].shape == (1, 1, 6 * expand_ratio, 1)  # max(1, int(6 * 0.25)) filters
        gate = jnp.mean(h, axis=(1, 2), keepdims=True) @ se["reduce"]["kernel"][0, 0] + se["reduce"]["bias"]
        gate = jax.nn.relu6(gate) @ se["expand"]["kernel"][0, 0] + se["expand"]["bias"]
        h = h * jax.nn.sigmoid(gate)
    if expand_ratio != 1:
        expected = bn("project_bn", h @ params["project_conv"]["kernel"][0, 0])
    else:
        assert set(params) == {"project_conv", "project_bn"}
        projected = _tf_same_reference_conv(h, params["project_conv"]["kernel"], stride)
        expected = jax.nn.relu6(bn("project_bn", projected))
    if identity_skip and stride == 1 and output_filters == 6:
        expected = expected + x
    np.testing.assert_allclose(block.apply(variables, x, False), expected, rtol=1e-5, atol=1e-5)



def test_block_strings_decode_fused_and_noskip():
    assert scaling.decode_block_string("r1_k3_s11_e4_i24_o24_c1_noskip") == ej.StageSpec(
        1, 3, 1, 4, 24, 24, None, fused=True, identity_skip=False
    )
    assert scaling.decode_block_string("r2_k3_s22_e6_i16_o24_c0_se0.25") == ej.EFFICIENTNET_B0_STAGES[1]
    with pytest.raises(ValueError, match="c2"):
        scaling.decode_block_string("r1_k3_s11_e4_i24_o24_c2")


@pytest.mark.parametrize(
    "variant,mean,std",
    [
        ("lite3", (127.0,) * 3, (128.0,) * 3),
        ("edgetpu-l", (127.0,) * 3, (128.0,) * 3),
        ("b3", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    ],
)
def test_each_family_records_the_input_normalization_of_its_weights(variant, mean, std):
    baseline = scaling.get_baseline(scaling.variant_coefficients(variant).baseline)
    np.testing.assert_allclose(baseline.normalization.mean, mean)
    np.testing.assert_allclose(baseline.normalization.std, std)


@pytest.mark.parametrize("variant", ["lite0", "lite3", "edgetpu-l"])
def test_imagenet_config_of_a_lite_or_edgetpu_variant_builds_that_variant(variant):
    config = imagenet.get_config(variant)
    spec = configuration.model_spec_from_config(config, 1000)
    released = scaling.variant_spec(variant)
    assert (config.image_size, spec.width, spec.depth) == (
        released.resolution,
        released.width,
        released.depth,
    )
    for field in ("name", "stages", "stem_filters", "head_filters", "activation", "fix_head_stem"):
        assert getattr(spec, field) == getattr(released, field), field
    assert accounting.count_parameters(spec)["trainable"] == REFERENCE_TRAINABLE_PARAMS[variant]


def test_a_config_can_scale_another_baseline_by_a_lite_variant():
    config = imagenet.get_config("lite2")
    config.model.baseline = "efficientnet-b0"
    spec = configuration.model_spec_from_config(config, 10)
    assert (spec.name, spec.stages, spec.activation, spec.fix_head_stem) == (
        "efficientnet-b0", ej.EFFICIENTNET_B0_STAGES, "swish", False
    )
    assert (spec.width, spec.depth) == (1.1, 1.2)
