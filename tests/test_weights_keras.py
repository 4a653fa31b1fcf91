"""Keras's weights (`pretrained/keras_files.py`) against Keras applications itself (in CI; B2 and the
larger variants under `slow`): logits of a calibrated random-weight B0, its `.h5` and `.weights.h5`
files, the front-end check, and the matching's refusals (unused, missing, mis-shaped tensors, another
variant), named from Keras's tensors. The calibration is tests/weight_helpers.py's.
"""


import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficientnet_jax import pretrained
from efficientnet_jax.normalizations import IMAGENET_STD
from efficientnet_jax.pretrained import WeightImportError
from tests.weight_helpers import (
    TOLERANCE,
    assert_same_variables,
    calibrated_keras_model,
    import_keras,
    keras_network_tensors,
    max_difference,
    our_logits,
    random_pixels,
)


@pytest.fixture(scope="module")
def keras_b0():
    """(model, pixels, Keras logits on raw pixels, our variables converted from the model)."""
    pixels = random_pixels(0, 8, 224)
    model = calibrated_keras_model("b0", pixels)
    logits = model.predict(pixels[:2], verbose=0)
    return model, pixels[:2], logits, pretrained.from_keras(model, "b0")


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


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["b1", "b3", "b4", "b5", "b6", "b7"])
def test_keras_models_fit_every_variant(variant):
    """Names and shapes only; B0 and B2 are compared on logits above."""
    keras = import_keras()
    model = getattr(keras.applications, f"EfficientNet{variant.upper()}")(
        weights=None, input_shape=(64, 64, 3)
    )
    assert set(pretrained.from_keras(model, variant, check_front_end=False)) == {"params", "batch_stats"}
