"""EfficientNetV2 (Tan & Le, ICML 2021) in the same model code: exact parameter counts and FLOPs
against the official models, the official stage tables and rules (Fused-MBConv without expansion,
round_filters without EfficientNet's 10% floor, stem from the first stage, batch-norm momentum 0.9),
features, configs and scaling baselines, and weight import against random-weight peers: Keras's
`EfficientNetV2B0` in CI (`-m slow`: the names and shapes of B1..L), timm's `tf_efficientnetv2_b0`
and `_s` on logits and every other variant on names and shapes under `peer_timm`.

The peers are calibrated as in tests/weight_helpers.py: random BN scales, offsets and biases, then
one training-mode pass with momentum 0 (Keras) or 1 (torch) sets every moving mean and variance to
the statistics of its actual input, so 1e-4 on the logits bounds a well-conditioned network in which
a mis-mapped statistic shows.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import efficientnet_jax as ej
from configs import default, imagenet
from configs.scaling import compound
from efficientnet_jax import (
    accounting,
    configuration,
    experiments,
    layers,
    normalizations,
    pretrained,
    scaling,
    summary,
)
from efficientnet_jax.pretrained import WeightImportError
from tests.weight_helpers import (
    TOLERANCE,
    calibrate_torch_model,
    import_keras,
    max_difference,
    normalise,
    our_logits,
    random_pixels,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Trainable parameters of timm's ports of the official models (`tf_efficientnetv2_*`, 1,000 classes).
REFERENCE_TRAINABLE_PARAMS = {
    "v2-b0": 7_139_704,
    "v2-b1": 8_141_052,
    "v2-b2": 10_096_086,
    "v2-b3": 14_358_406,
    "v2-s": 21_458_488,
    "v2-m": 54_139_356,
    "v2-l": 118_515_272,
    "v2-xl": 208_119_808,
}
# FLOPs (multiply-adds) at the evaluation size as google/automl's efficientnetv2 README lists them
# for its released checkpoints. The paper's Table 7 rounds differently (V2-S 8.8B, M 24B, L 53B).
README_MULTIPLY_ADDS = {
    "v2-b0": 0.72e9,
    "v2-b1": 1.2e9,
    "v2-b2": 1.7e9,
    "v2-b3": 3.0e9,
    "v2-s": 8.4e9,
    "v2-m": 24.7e9,
    "v2-l": 56.3e9,
}
PAPER_V2_S_MULTIPLY_ADDS = 8.8e9  # at 384 pixels


@pytest.mark.parametrize("variant", sorted(REFERENCE_TRAINABLE_PARAMS))
def test_trainable_parameter_count_matches_the_official_models_exactly(variant):
    assert accounting.count_parameters(variant)["trainable"] == REFERENCE_TRAINABLE_PARAMS[variant]


def test_summary_prints_every_v2_variant_at_both_sizes_beside_the_published_figures():
    """V2-S at 384 pixels within 5% of the paper's 8.8B; every variant the README lists within 1% of
    its figure (counting conventions differ: we count convolutions and the classifier only)."""
    names = [f"efficientnetv2-{name.removeprefix('v2-')}" for name in REFERENCE_TRAINABLE_PARAMS]
    rows = {row["variant"]: row for row in summary.summary_rows(names)}
    assert rows["efficientnetv2-s"]["resolution"] == 384
    assert abs(rows["efficientnetv2-s"]["gflops"] * 1e9 / PAPER_V2_S_MULTIPLY_ADDS - 1) < 0.05
    for short_name, published in README_MULTIPLY_ADDS.items():
        row = rows[scaling.variant_spec(short_name).name]
        assert abs(row["gflops"] * 1e9 / published - 1) < 0.01, short_name
    table_rows = summary.format_table(list(rows.values())).splitlines()[2:]
    printed = {
        cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table_rows)
    }
    for short_name, params in REFERENCE_TRAINABLE_PARAMS.items():
        name = scaling.variant_spec(short_name).name
        row, coefficients = rows[name], scaling.variant_coefficients(short_name)
        assert row["params"] == row["reference_params"] == params
        assert (row["train_resolution"], row["resolution"]) == (
            coefficients.train_resolution,
            coefficients.resolution,
        )
        # Multiply-adds grow as the pixels (all layers but the classifier are convolutions), within the
        # rounding up of feature-map sizes at each stride.
        pixel_ratio = (row["train_resolution"] / row["resolution"]) ** 2
        assert abs(row["train_gflops"] / row["gflops"] / pixel_ratio - 1) < 0.05, short_name
        assert printed[name][:5] == [
            name,
            str(row["train_resolution"]),
            str(row["resolution"]),
            f"{params:,}",
            f"{params:,}",
        ]
        assert printed[name][7] == f"{row['published_gflops']:g}"


@pytest.mark.parametrize(
    "variant,train_size,eval_size,dropout",
    [
        ("v2-b0", 192, 224, 0.2),
        ("v2-b1", 192, 240, 0.2),
        ("v2-b2", 208, 260, 0.3),
        ("v2-b3", 240, 300, 0.3),
        ("v2-s", 300, 384, 0.2),
        ("v2-m", 384, 480, 0.3),
        ("v2-l", 384, 480, 0.4),
        ("v2-xl", 384, 512, 0.4),
    ],
)
def test_variants_train_evaluate_and_drop_out_as_the_official_table(variant, train_size, eval_size, dropout):
    spec = scaling.variant_spec(variant)
    assert scaling.variant_coefficients(variant).train_resolution == train_size
    assert (spec.resolution, spec.dropout_rate, spec.drop_connect_rate) == (eval_size, dropout, 0.2)
    assert (spec.activation, spec.batch_norm_momentum, spec.batch_norm_epsilon) == ("swish", 0.9, 1e-3)
    assert not spec.fix_head_stem and spec.min_filters_fraction == 0.0


def test_names_are_accepted_in_both_forms():
    assert ej.create_model("v2-s").spec == ej.create_model("efficientnetv2-s").spec
    assert ej.create_model("V2-B3", num_classes=10).spec.name == "efficientnetv2-b3"
    with pytest.raises(ValueError, match="v2-b0..v2-b3, v2-s, v2-m, v2-l, v2-xl"):
        ej.create_model("v2-xs")


def test_round_filters_has_no_10_percent_floor_in_efficientnetv2():
    """V2-B3 (width 1.2): the first stage's 16 filters scale to 19.2, which rounds to 16. EfficientNet
    adds 8 when the rounding loses more than 10% (24); the official V2 code does not, and 16 is what
    makes V2-B3's parameter count exact."""
    assert scaling.round_filters(16, 1.2) == 24
    assert scaling.round_filters(16, 1.2, min_fraction=0.0) == 16
    assert scaling.variant_spec("v2-b3").scaled_stages()[0].output_filters == 16


def _params(variant: str):
    model = ej.create_model(variant)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]


@pytest.mark.parametrize(
    "variant,stem,head,stage_widths,stage_repeats",
    [
        ("v2-b0", 32, 1280, [16, 32, 48, 96, 112, 192], [1, 2, 2, 3, 5, 8]),
        ("v2-b3", 40, 1536, [16, 40, 56, 112, 136, 232], [2, 3, 3, 5, 7, 12]),
        ("v2-s", 24, 1280, [24, 48, 64, 128, 160, 256], [2, 4, 4, 6, 9, 15]),
        ("v2-xl", 32, 1280, [32, 64, 96, 192, 256, 512, 640], [4, 8, 8, 16, 24, 32, 8]),
    ],
)
def test_stem_head_and_stages_as_the_official_builder(variant, stem, head, stage_widths, stage_repeats):
    """The stem takes the first stage's input width and, as the 1280-filter head, scales with width."""
    spec = scaling.variant_spec(variant)
    assert (spec.scaled_stem_filters, spec.scaled_head_filters) == (stem, head)
    stages = spec.scaled_stages()
    assert [stage.output_filters for stage in stages] == stage_widths
    assert [stage.repeats for stage in stages] == stage_repeats
    params = _params(variant)
    assert params["stem_conv"]["kernel"].shape == (3, 3, 3, stem)
    assert params["head_conv"]["kernel"].shape == (1, 1, stage_widths[-1], head)
    assert f"block_{sum(stage_repeats) - 1}" in params and f"block_{sum(stage_repeats)}" not in params


def test_v2_s_blocks_fused_without_expansion_then_fused_then_mbconv_with_se():
    """The first stage's blocks are one 3x3 convolution with BN and SiLU (and the residual where the
    width is kept); Fused-MBConv with expansion 4 and no SE follow; then MBConv, whose SE reduces to
    a quarter of the block's input filters, not of the expanded width."""
    params = _params("v2-s")
    for index in (0, 1):  # 24 -> 24 from the 24-filter stem
        assert {
            name: leaves["kernel"].shape
            for name, leaves in params[f"block_{index}"].items()
            if "conv" in name
        } == {"project_conv": (3, 3, 24, 24)}
    assert params["block_2"]["expand_conv"]["kernel"].shape == (3, 3, 24, 96)
    assert params["block_2"]["project_conv"]["kernel"].shape == (1, 1, 96, 48)
    assert "se" not in params["block_2"]
    first_mbconv = params["block_10"]  # after 2 + 4 + 4 Fused-MBConv blocks: 64 -> 128, expand 4
    assert first_mbconv["expand_conv"]["kernel"].shape == (1, 1, 64, 256)
    assert first_mbconv["depthwise_conv"]["kernel"].shape == (3, 3, 1, 256)
    assert first_mbconv["se"]["reduce"]["kernel"].shape == (1, 1, 256, 16)  # int(64 * 0.25)

    blocks = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.Block) and context.method_name == "__call__":
            blocks.append(context.module)
        return next_fun(*args, **kwargs)

    model = ej.create_model("v2-s")
    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert [type(m).__name__ for m in blocks] == ["FusedMBConv"] * 10 + ["MBConv"] * 30
    assert [m.expand_ratio for m in blocks[:3]] == [1, 1, 4]
    np.testing.assert_allclose([m.drop_path_rate for m in blocks], [0.2 * i / 40 for i in range(40)])


@pytest.mark.parametrize(
    "variant,size,expected",
    [
        ("v2-s", 384, [(192, 24), (96, 48), (48, 64), (24, 160), (12, 256)]),
        ("v2-b0", 224, [(112, 16), (56, 32), (28, 48), (14, 112), (7, 192)]),
    ],
)
def test_feature_maps_at_strides_2_to_32(variant, size, expected):
    model = ej.create_model(variant)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    maps = jax.eval_shape(lambda x: model.apply(model.init(jax.random.key(0), x), x, features=True), images)
    assert [m.shape for m in maps] == [(1, side, side, width) for side, width in expected]


@pytest.mark.parametrize(
    "variant,normalization",
    [
        ("v2-b0", normalizations.IMAGENET_NORMALIZATION),
        ("v2-b3", normalizations.IMAGENET_NORMALIZATION),
        ("v2-s", normalizations.EFFICIENTNETV2_NORMALIZATION),
        ("v2-xl", normalizations.EFFICIENTNETV2_NORMALIZATION),
    ],
)
def test_each_variant_records_the_input_normalization_of_the_official_weights(variant, normalization):
    """V2-B0..B3: EfficientNet's preprocessing, ImageNet mean/std; V2-S..XL: (pixels - 128) / 128."""
    baseline = scaling.get_baseline(scaling.variant_coefficients(variant).baseline)
    assert baseline.normalization == normalization
    assert normalizations.EFFICIENTNETV2_NORMALIZATION == normalizations.InputNormalization(
        (128.0,) * 3, (128.0,) * 3
    )


# --- Configs and scaling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant,augment,magnitude",
    [("v2-s", "randaugment", 10.0), ("v2-l", "randaugment", 20.0), ("v2-b0", "autoaugment", 10.0)],
)
def test_imagenet_config_of_a_v2_variant_builds_that_variant(variant, augment, magnitude):
    config = imagenet.get_config(variant)
    spec = configuration.model_spec_from_config(config, 1000)
    released = scaling.variant_spec(variant)
    assert config.image_size == released.resolution  # the evaluation size
    assert (config.augment, config.randaugment_magnitude) == (augment, magnitude)
    assert config.model.batch_norm_momentum == spec.batch_norm_momentum == 0.9
    for field in ("name", "stages", "stem_filters", "head_filters", "width", "depth", "dropout_rate"):
        assert getattr(spec, field) == getattr(released, field), field
    assert spec.min_filters_fraction == 0.0
    assert accounting.count_parameters(spec)["trainable"] == REFERENCE_TRAINABLE_PARAMS[variant]


def test_v1_configs_keep_their_recipe():
    config = imagenet.get_config("b3")
    assert (config.augment, config.model.batch_norm_momentum, config.image_size) == (None, 0.99, 300)


def test_a_config_scales_the_v2_base_table_by_a_v1_variant():
    """`config.model.baseline="efficientnetv2-base"` with B0's coefficients (1.0, 1.0) is V2-B0, and
    B3's (1.2, 1.4) are V2-B3's: the same networks to the last parameter."""
    config = default.get_config()
    config.model.baseline = "efficientnetv2-base"
    spec = configuration.model_spec_from_config(config, 1000)
    assert (spec.name, spec.stages) == ("efficientnetv2-base", scaling.variant_spec("v2-b0").stages)
    assert accounting.count_parameters(spec)["trainable"] == REFERENCE_TRAINABLE_PARAMS["v2-b0"]
    config.model.variant = "efficientnet-b3"
    spec = configuration.model_spec_from_config(config, 1000)
    assert accounting.count_parameters(spec)["trainable"] == REFERENCE_TRAINABLE_PARAMS["v2-b3"]


@pytest.mark.parametrize(
    "arg,base_config,flags",
    [
        ("base=imagenet_v2,phi=1", "configs/imagenet.py:v2-b0", []),
        (
            "base=imagenet,baseline=efficientnetv2-base,phi=1",
            "configs/imagenet.py:b0",
            ["--config.model.baseline=efficientnetv2-base", "--config.model.batch_norm_momentum=0.9"],
        ),
    ],
)
def test_compound_scaling_of_the_v2_base_table(arg, base_config, flags):
    """A scaled V2 in configs/scaling/: the V2 base table scaled by the paper's alpha, beta, gamma at
    phi = 1, trained with V2's batch-norm momentum, whichever base config the runs start from."""
    config = compound.get_config(arg)
    experiments.validate_sweep(config)
    (run,) = experiments.expand_sweep(config)
    trained = experiments.run_config(config.train, run)
    spec = configuration.model_spec_from_config(trained, 1000)
    assert spec.stages == scaling.get_baseline("efficientnetv2-base").stages
    assert (spec.width, spec.depth, spec.resolution, spec.batch_norm_momentum) == (1.1, 1.2, 256, 0.9)
    assert spec.min_filters_fraction == 0.0 and spec.stem_filters == 32
    base = experiments.load_config_file(config.sweep.base_config, REPO)
    command = experiments.train_command(trained, base, config.sweep.base_config, "/runs/x")
    assert config.sweep.base_config == base_config
    assert set(flags) <= set(command)
    assert "--config.model.width=1.1" in command and "--config.image_size=256" in command


# --- Keras -----------------------------------------------------------------------------------------


def keras_class_name(variant: str) -> str:
    """'v2-b0' -> 'EfficientNetV2B0', 'v2-s' -> 'EfficientNetV2S'."""
    return "EfficientNetV2" + variant.removeprefix("v2-").upper()


def calibrated_keras_model(variant: str, pixels: np.ndarray):
    """Keras's model of `variant`, random weights, with its own input front-end (V2-B0..B3: ImageNet
    mean and variance; V2-S..L: (x - 128) / 128), calibrated statistics."""
    keras = import_keras()
    keras.utils.set_random_seed(0)
    size = pixels.shape[1]
    model = getattr(keras.applications, keras_class_name(variant))(
        weights=None, classifier_activation=None, input_shape=(size, size, 3)
    )
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            _, _, mean, variance = layer.get_weights()
            layer.set_weights(
                [rng.uniform(0.5, 1.5, mean.shape), rng.normal(0, 0.2, mean.shape), mean, variance]
            )
            layer.momentum = 0.0
        elif isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
        elif layer.name.endswith(("se_reduce", "se_expand", "predictions")):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
    model(pixels, training=True)
    return model


def test_keras_v2_b0_logits_match_on_raw_pixels(tmp_path):
    """At 100 pixels: odd feature maps (25, 13, 7) where stride-2 blocks pad asymmetrically. Keras
    takes raw pixels through its front-end, ours the ImageNet-normalised ones; every Keras tensor is
    used and every parameter filled, from the model and from its positional `.weights.h5`."""
    pixels = random_pixels(0, 8, 100)
    model = calibrated_keras_model("v2-b0", pixels)
    keras_logits = model.predict(pixels[:2], verbose=0)
    variables = pretrained.from_keras(model, "v2-b0")
    assert max_difference(our_logits(variables, "v2-b0", pixels[:2]), keras_logits) < TOLERANCE
    assert max_difference(keras_logits[0], keras_logits[1]) > 100 * TOLERANCE
    path = tmp_path / "v2-b0.weights.h5"
    model.save_weights(path)
    for a, b in zip(
        jax.tree.leaves(pretrained.from_keras(path, "v2-b0")), jax.tree.leaves(variables), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(
        WeightImportError,
        match=r"missing source tensors:\s+block1b_project_conv/kernel(.|\n)*look like efficientnetv2-b0\.",
    ):
        pretrained.from_keras(model, "v2-b1")  # V2-B1 has two blocks in stage 1, V2-B0 one


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["v2-b1", "v2-b2", "v2-b3", "v2-s", "v2-m", "v2-l"])
def test_keras_models_fit_every_variant(variant):
    """Names and shapes only; V2-B0 is compared on logits above. Keras has no V2-XL."""
    keras = import_keras()
    model = getattr(keras.applications, keras_class_name(variant))(weights=None, input_shape=(64, 64, 3))
    assert set(pretrained.from_keras(model, variant)) == {"params", "batch_stats"}


# --- timm ------------------------------------------------------------------------------------------


def timm_name(variant: str) -> str:
    return "tf_efficientnetv2_" + variant.removeprefix("v2-")


def calibrated_timm_model(variant: str, pixels: np.ndarray):
    """timm's port of `variant`, random weights, calibrated statistics (momentum 1: running = batch)."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(timm_name(variant), pretrained=False)
    return calibrate_torch_model(model, torch.from_numpy(normalise(pixels, variant).transpose(0, 3, 1, 2)))


@pytest.mark.peer_timm
@pytest.mark.parametrize(
    "variant,other_variant,first_missing",
    [("v2-b0", "v2-b1", "blocks.0.1.conv.weight"), ("v2-s", "v2-m", "blocks.0.2.conv.weight")],
)
def test_timm_logits_match(variant, other_variant, first_missing):
    """At 100 pixels, as above. timm builds V2's unexpanded Fused-MBConv as ConvBnAct (`conv`, `bn1`),
    the others as EdgeResidual and the MBConv blocks as InvertedResidual."""
    torch = pytest.importorskip("torch")
    pixels = random_pixels(0, 8, 100)
    model = calibrated_timm_model(variant, pixels)
    with torch.no_grad():
        timm_logits = model(torch.from_numpy(normalise(pixels[:2], variant).transpose(0, 3, 1, 2))).numpy()
    variables = pretrained.from_timm(model.state_dict(), variant)
    assert max_difference(our_logits(variables, variant, pixels[:2]), timm_logits) < TOLERANCE
    assert max_difference(timm_logits[0], timm_logits[1]) > 100 * TOLERANCE
    expected = (
        rf"missing source tensors:\s+{first_missing}(.|\n)*look like {scaling.variant_spec(variant).name}\."
    )
    with pytest.raises(WeightImportError, match=expected):
        pretrained.from_timm(model.state_dict(), other_variant)


@pytest.mark.peer_timm
@pytest.mark.parametrize("variant", ["v2-b1", "v2-b2", "v2-b3", "v2-m", "v2-l", "v2-xl"])
def test_timm_state_dicts_fit_every_variant(variant):
    """Names and shapes only (no forward pass)."""
    pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    state_dict = timm.create_model(timm_name(variant), pretrained=False).state_dict()
    assert set(pretrained.from_timm(state_dict, variant)) == {"params", "batch_stats"}


@pytest.mark.peer_timm
def test_timm_imagenet_21k_weights_import_into_a_21843_class_model():
    """timm's `.in21k` weights have 21,843 classes: they fit the variant's spec with that many, and
    the 1,000-class variant names the classifier's shapes."""
    pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    state_dict = timm.create_model(timm_name("v2-s"), pretrained=False, num_classes=21_843).state_dict()
    variables = pretrained.from_timm(state_dict, scaling.variant_spec("v2-s", num_classes=21_843))
    assert variables["params"]["classifier"]["kernel"].shape == (1280, 21_843)
    with pytest.raises(WeightImportError, match=r"classifier\.weight: \(21843, 1280\)"):
        pretrained.from_timm(state_dict, "v2-s")
