"""Weight import against the frameworks that produced the weights: Keras applications (in CI; B2 under
`slow`) and timm (under `peer_timm`, where torch and timm import: B0, Lite0 and EdgeTPU-S on logits,
the other variants on names and shapes).

Each peer gets random weights whose BatchNorm statistics are calibrated: gamma, beta and biases are
drawn first, then one training-mode pass with momentum 0 sets every moving mean and variance to the
statistics of its actual input. The statistics are thus far from (0, 1), so mis-mapping them shows,
and the network stays well conditioned, so 1e-4 on the logits is a real bound (uncalibrated random
statistics make the logits either nearly input-independent or explode layer after layer). The
comparison runs on the calibration images, where eval mode reproduces the calibrated activations.

Keras runs on raw [0, 255] pixels through its own front-end, set to the ImageNet mean and the std
*squared* (a `weights=None` model lacks the compensating layer of the released ones); our model runs
on the same pixels normalised as our input pipeline does. timm's models and ours both run on the
pixels normalised as the variant's family expects (`scaling.BASELINES`: ImageNet's statistics for B0,
`(x - 127) / 128` for Lite and EdgeTPU).
"""

import functools
import os
import re

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficientnet_jax import create_model, pretrained, scaling
from efficientnet_jax.pretrained import IMAGENET_MEAN, IMAGENET_STD, WeightImportError

TOLERANCE = 1e-4
# timm's names of the EdgeTPU ports; the other variants are tf_efficientnet_<short name>.
TIMM_EDGETPU_NAMES = {
    "edgetpu-s": "tf_efficientnet_es",
    "edgetpu-m": "tf_efficientnet_em",
    "edgetpu-l": "tf_efficientnet_el",
}


def timm_name(variant: str) -> str:
    return TIMM_EDGETPU_NAMES.get(variant, f"tf_efficientnet_{variant}")


def normalise(pixels: np.ndarray, variant: str = "b0") -> np.ndarray:
    """Our model's input: [0, 255] RGB pixels normalised as the variant's weights expect (ImageNet
    mean/std for B0-B7, as our input pipeline does)."""
    normalization = scaling.get_baseline(scaling.variant_coefficients(variant).baseline).normalization
    return ((pixels - np.asarray(normalization.mean)) / np.asarray(normalization.std)).astype(np.float32)


def random_pixels(seed: int, count: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


@functools.cache
def inference(variant: str):
    """Jitted once per variant: tests that run a model twice compile it once."""
    model = create_model(variant)
    return jax.jit(lambda variables, images: model.apply(variables, images, train=False))


def our_logits(variables, variant: str, pixels: np.ndarray) -> np.ndarray:
    return np.asarray(inference(variant)(variables, normalise(pixels, variant)))


def max_difference(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def assert_same_variables(actual, expected) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)


# --- Keras ----------------------------------------------------------------------------------------


def import_keras():
    """Keras on TensorFlow: the calibration relies on eager training-mode calls updating statistics."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"Keras runs on {keras.backend.backend()}; these tests need its TensorFlow backend.")
    return keras


def calibrated_keras_model(variant: str, pixels: np.ndarray):
    """Keras `EfficientNet{B0..}` with random weights, an ImageNet front-end, calibrated statistics."""
    keras = import_keras()
    keras.utils.set_random_seed(0)
    size = pixels.shape[1]
    model = getattr(keras.applications, f"EfficientNet{variant.upper()}")(
        weights=None, classifier_activation=None, input_shape=(size, size, 3)
    )
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            count = layer.get_weights()[2]
            layer.set_weights([np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD) ** 2, count])
            layer.finalize_state()  # set_weights alone leaves the layer computing with its old statistics
        elif isinstance(layer, keras.layers.BatchNormalization):
            _, _, mean, variance = layer.get_weights()
            gamma, beta = rng.uniform(0.5, 1.5, mean.shape), rng.normal(0, 0.2, mean.shape)
            layer.set_weights([gamma, beta, mean, variance])
            layer.momentum = 0.0
        elif isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
        elif layer.name.endswith(("se_reduce", "se_expand", "predictions")):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
    model(pixels, training=True)
    return model


@pytest.fixture(scope="module")
def keras_b0():
    """(model, pixels, Keras logits on raw pixels, our variables converted from the model)."""
    pixels = random_pixels(0, 8, 224)
    model = calibrated_keras_model("b0", pixels)
    logits = model.predict(pixels[:2], verbose=0)
    return model, pixels[:2], logits, pretrained.from_keras(model, "b0")


def keras_network_tensors(model) -> dict:
    """The model's tensors as `from_keras` names them, without the input front-end."""
    tensors, _ = pretrained.read_keras(model)
    return {key: value for key, value in tensors.items() if not key.startswith("normalization")}


def test_keras_b0_logits_match_on_raw_pixels(keras_b0):
    _, pixels, keras_logits, variables = keras_b0
    ours = our_logits(variables, "b0", pixels)
    assert max_difference(ours, keras_logits) < TOLERANCE
    # The bound means something: the logits depend on the image, and on the BN statistics.
    assert max_difference(keras_logits[0], keras_logits[1]) > 100 * TOLERANCE
    default_stats = {
        "params": variables["params"],
        "batch_stats": jax.tree_util.tree_map_with_path(
            lambda path, x: jnp.ones_like(x) if path[-1].key == "var" else jnp.zeros_like(x),
            variables["batch_stats"],
        ),
    }
    assert max_difference(our_logits(default_stats, "b0", pixels), keras_logits) > 100 * TOLERANCE


@pytest.mark.parametrize("file_name", ["b0.weights.h5", "b0.h5"])
def test_keras_files_convert_like_the_model(keras_b0, tmp_path, file_name):
    """Keras 3 `.weights.h5` (positional) and legacy `.h5` (named, as the released files)."""
    model, _, _, variables = keras_b0
    path = tmp_path / file_name
    if file_name.endswith(".weights.h5"):
        model.save_weights(path)
    else:
        model.save(path)
    from_file = pretrained.from_keras(path, "b0")
    assert_same_variables(from_file, variables)


def test_keras_front_end_statistics_are_checked(keras_b0, tmp_path):
    model, _, _, variables = keras_b0
    path = tmp_path / "b0.weights.h5"
    model.save_weights(path)
    variance_key = "layers/normalization/vars/1"

    with h5py.File(path, "r+") as file:  # the released files store the std as the variance
        file[variance_key][...] = np.asarray(IMAGENET_STD)
    released_style = pretrained.from_keras(path, "b0")
    assert_same_variables(released_style, variables)

    with h5py.File(path, "r+") as file:  # an un-adapted Normalization: inputs would be pixels / 255
        file[variance_key][...] = np.ones(3)
    with pytest.raises(WeightImportError, match=variance_key):
        pretrained.from_keras(path, "b0")
    assert jax.tree.structure(pretrained.from_keras(path, "b0", check_front_end=False)) == jax.tree.structure(
        variables
    )


def test_unused_source_tensor_is_named(keras_b0):
    tensors = keras_network_tensors(keras_b0[0])
    tensors["block1a_extra/kernel"] = np.zeros((1, 1, 32, 32), np.float32)
    with pytest.raises(WeightImportError, match=r"1 unused source tensors:\s+block1a_extra/kernel"):
        pretrained.import_tensors(tensors, "b0", pretrained.KERAS_NAMED)


def test_missing_source_tensor_is_named_with_our_parameter(keras_b0):
    tensors = keras_network_tensors(keras_b0[0])
    del tensors["block3b_project_bn/moving_variance"]
    expected = (
        r"1 missing source tensors:\s+"
        r"block3b_project_bn/moving_variance \(for batch_stats/block_4/project_bn/var\)"
    )
    with pytest.raises(WeightImportError, match=expected):
        pretrained.import_tensors(tensors, "b0", pretrained.KERAS_NAMED)


def test_shape_mismatch_is_named(keras_b0):
    tensors = keras_network_tensors(keras_b0[0])
    tensors["block2a_se_reduce/bias"] = np.zeros(5, np.float32)
    with pytest.raises(
        WeightImportError, match=r"block2a_se_reduce/bias: \(5,\).*params/block_1/se/reduce/bias is \(4,\)"
    ):
        pretrained.import_tensors(tensors, "b0", pretrained.KERAS_NAMED)


def test_weights_of_another_variant_are_recognised():
    keras = import_keras()
    b1 = keras.applications.EfficientNetB1(weights=None, input_shape=(64, 64, 3))
    with pytest.raises(WeightImportError) as error:
        pretrained.from_keras(b1, "b0")  # its un-adapted front-end would fail too, but later
    message = str(error.value)
    assert "block1b_dwconv/kernel" in message  # B1 has two blocks in stage 1, B0 one
    assert "look like efficientnet-b1." in message


@pytest.mark.slow
def test_keras_b2_logits_match_at_reduced_resolution(tmp_path):
    """B2 is fully convolutional: 64x64 keeps the test fast. Converted from its `.weights.h5`, whose
    block layout is also B1's, so `b1` must be refused by shape and the file recognised as B2."""
    pixels = random_pixels(2, 8, 64)
    model = calibrated_keras_model("b2", pixels)
    path = tmp_path / "b2.weights.h5"
    model.save_weights(path)
    variables = pretrained.from_keras(path, "b2")
    assert (
        max_difference(our_logits(variables, "b2", pixels[:2]), model.predict(pixels[:2], verbose=0))
        < TOLERANCE
    )
    with pytest.raises(WeightImportError, match=r"shape mismatches(.|\n)*look like efficientnet-b2\."):
        pretrained.from_keras(path, "b1")


# --- timm -----------------------------------------------------------------------------------------


def calibrate_torch_model(model, images):
    """Random batch-norm gammas and betas and conv/linear biases, then one training-mode pass over
    `images` with momentum 1 (running = batch statistics); the model in eval mode."""
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.momentum = 1.0
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.bias is not None:
                module.bias.normal_(0, 0.2)
        model.train()
        model(images)
    return model.eval()


def calibrated_timm_model(variant: str, pixels: np.ndarray):
    """timm's model of `variant` with random weights and calibrated statistics, on the pixels
    normalised as the variant expects."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(timm_name(variant), pretrained=False)
    return calibrate_torch_model(model, torch_images(pixels, variant))


def torch_images(pixels: np.ndarray, variant: str):
    """The pixels normalised for `variant`, NCHW, as a torch tensor."""
    torch = pytest.importorskip("torch")
    return torch.from_numpy(normalise(pixels, variant).transpose(0, 3, 1, 2))


@pytest.mark.peer_timm
def test_timm_b0_logits_match(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    pixels = random_pixels(0, 8, 224)
    model = calibrated_timm_model("b0", pixels)
    with torch.no_grad():
        timm_logits = model(torch_images(pixels[:2], "b0")).numpy()
    state_dict = model.state_dict()
    safetensors_path, torch_path = tmp_path / "b0.safetensors", tmp_path / "b0.pth"
    safetensors_torch.save_file(state_dict, safetensors_path)
    torch.save(state_dict, torch_path)

    variables = pretrained.from_timm(state_dict, "b0")
    assert max_difference(our_logits(variables, "b0", pixels[:2]), timm_logits) < TOLERANCE
    assert max_difference(timm_logits[0], timm_logits[1]) > 100 * TOLERANCE
    for path in (safetensors_path, torch_path):
        assert_same_variables(pretrained.from_timm(path, "b0"), variables)

    with pytest.raises(
        WeightImportError,
        match=r"missing source tensors:\s+blocks\.0\.1\.conv_dw\.weight(.|\n)*look like efficientnet-b0\.",
    ):
        pretrained.from_timm(state_dict, "b1")


@pytest.mark.peer_timm
@pytest.mark.parametrize(
    "variant,other_variant,first_missing",
    [
        ("lite0", "lite1", "blocks.1.2.conv_pw.weight"),
        ("edgetpu-s", "edgetpu-m", "blocks.0.1.conv_exp.weight"),
    ],
)
def test_timm_lite_and_edgetpu_logits_match(variant, other_variant, first_missing):
    """At 100 pixels, small and with odd feature maps (25, 13, 7) where stride-2 blocks, fused ones
    included, pad asymmetrically. Every tensor of timm's state dict is used and every parameter filled
    (`from_timm` raises otherwise); the next variant's import names what is missing."""
    torch = pytest.importorskip("torch")
    pixels = random_pixels(0, 8, 100)
    model = calibrated_timm_model(variant, pixels)
    with torch.no_grad():
        timm_logits = model(torch_images(pixels[:2], variant)).numpy()
    variables = pretrained.from_timm(model.state_dict(), variant)
    assert max_difference(our_logits(variables, variant, pixels[:2]), timm_logits) < TOLERANCE
    assert max_difference(timm_logits[0], timm_logits[1]) > 100 * TOLERANCE
    missing = rf"missing source tensors:\s+{re.escape(first_missing)}"
    expected = rf"{missing}(.|\n)*look like efficientnet-{variant}\."
    with pytest.raises(WeightImportError, match=expected):
        pretrained.from_timm(model.state_dict(), other_variant)


@pytest.mark.peer_timm
@pytest.mark.parametrize(
    "variant",
    "b1 b2 b3 b4 b5 b6 b7 b8 lite1 lite2 lite3 lite4 edgetpu-m edgetpu-l".split(),
)
def test_timm_state_dicts_fit_every_variant(variant):
    """Names and shapes only (no forward pass): stage depths and widths of the larger variants."""
    pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    state_dict = timm.create_model(timm_name(variant), pretrained=False).state_dict()
    assert set(pretrained.from_timm(state_dict, variant)) == {"params", "batch_stats"}


@pytest.mark.peer_timm
@pytest.mark.slow
def test_timm_l2_state_dict_fits():
    """L2 as B8 above, apart: 480 million parameters take about 2 GB in each of torch, numpy and JAX."""
    pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    state_dict = timm.create_model("tf_efficientnet_l2", pretrained=False).state_dict()
    assert set(pretrained.from_timm(state_dict, "l2")) == {"params", "batch_stats"}


def test_timm_names_fused_blocks_as_edge_residuals():
    """EdgeTPU's Fused-MBConv blocks are timm's EdgeResidual (conv_exp, bn1, conv_pwl, bn2); its
    MBConv blocks InvertedResidual, as B0's."""
    expected = pretrained.timm_keys(pretrained.network_layers("edgetpu-s"))
    first_block = {
        key.removeprefix("blocks.0.0."): "/".join(layer.path[1:])
        for key, (layer, _, _) in expected.items()
        if key.startswith("blocks.0.0.")
    }
    bn_leaves = ("weight", "bias", "running_mean", "running_var")
    assert first_block == {
        "conv_exp.weight": "expand_conv",
        **{f"bn1.{leaf}": "expand_bn" for leaf in bn_leaves},
        "conv_pwl.weight": "project_conv",
        **{f"bn2.{leaf}": "project_bn" for leaf in bn_leaves},
    }
    assert expected["blocks.3.0.conv_dw.weight"][0].path == ("block_7", "depthwise_conv")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["b1", "b3", "b4", "b5", "b6", "b7"])
def test_keras_models_fit_every_variant(variant):
    """Names and shapes only; B0 and B2 are compared on logits above."""
    keras = import_keras()
    model = getattr(keras.applications, f"EfficientNet{variant.upper()}")(
        weights=None, input_shape=(64, 64, 3)
    )
    assert set(pretrained.from_keras(model, variant, check_front_end=False)) == {"params", "batch_stats"}
