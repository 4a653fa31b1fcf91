"""EfficientNetV2's published weights through the converter: what each was trained on (ImageNet,
ImageNet-21k, ImageNet-21k fine-tuned on ImageNet) from its name or its 21,843 classes, the input
normalisation and the eval crop the official code gave each, the classifier's number of classes in
the checkpoint, and the eval preprocessing of google/automl's efficientnetv2/preprocessing.py.

Without peers (CI's default run): the rules, the crop against the official formula on a decoded
image, and the converter end to end on state dicts in timm's naming built from our own shapes (one of
them from a Hugging Face cache laid out here, offline). Under `peer_timm`: timm's
`tf_efficientnetv2_b0` with random weights (1,000 and 21,843 classes) and Keras's `EfficientNetV2B0`,
converted by the command with `--source=auto`, classify as the peers do within 1e-4 (the tolerance of
tests/weight_helpers.py's calibration), inputs normalised as the checkpoint
says; and the normalisation of every timm V2 tag against timm's own configs.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from configs import default, imagenet
from efficientnet_jax import (
    checkpointing,
    configuration,
    input_pipeline,
    normalizations,
    prediction,
    pretrained,
    scaling,
)
from efficientnet_jax.checkpointing import CheckpointError
from efficientnet_jax.model import model_spec
from tests.weight_helpers import (
    HUB_REVISION,
    TOLERANCE,
    assert_same_variables,
    calibrate_torch_model,
    hub_cache,
    max_difference,
    save_safetensors,
    torch_layout_of,
)

IMAGENET, EDGE = normalizations.IMAGENET_NORMALIZATION, normalizations.EDGE_NORMALIZATION
V2, SIGNED_UNIT = normalizations.EFFICIENTNETV2_NORMALIZATION, normalizations.SIGNED_UNIT_NORMALIZATION
IN1K, IN21K, FT = pretrained.IN1K, pretrained.IN21K, pretrained.IN21K_FT_IN1K


def timm_state_dict(spec: scaling.ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors named and laid out as timm stores `spec`'s weights (any number of classes),
    shaped from our parameters: a timm state dict without timm."""
    rng = np.random.default_rng(seed)
    shapes = pretrained.target_shapes(spec)
    return {
        key: torch_layout_of(
            layer.kind, leaf, rng.normal(size=shapes[(collection, *layer.path, leaf)][0]).astype(np.float32)
        )
        for key, (layer, collection, leaf) in pretrained.timm_keys(pretrained.network_layers(spec)).items()
    }


# --- What the weights were trained on, and what that asks of their inputs ----------------------------


@pytest.mark.parametrize(
    "weights, num_classes, training",
    [
        ("hf-hub:timm/tf_efficientnetv2_s.in1k", 1000, IN1K),
        ("hf-hub:timm/tf_efficientnetv2_m.in21k_ft_in1k", 1000, FT),
        ("hf-hub:timm/tf_efficientnetv2_xl.in21k", 21843, IN21K),
        ("hf-hub:timm/tf_efficientnetv2_b3.in21k", None, IN21K),
        ("tf_efficientnetv2_s-eb54923e.pth", 1000, IN1K),
        ("/weights/tf_efficientnetv2_s_21ft1k-d7dafa41.pth", 1000, FT),
        ("tf_efficientnetv2_xl_in21ft1k-06c35c48.pth", 1000, FT),
        ("tf_efficientnetv2_l_21k-91a19ec9.pth", 21843, IN21K),
        ("tf_efficientnetv2_xl_in21k-fd7e8abf.pth", None, IN21K),
        ("model.safetensors", 21843, IN21K),  # a renamed file: the classifier says ImageNet-21k
        ("model.safetensors", 1000, IN1K),
        ("efficientnetv2-b0.h5", 1000, IN1K),  # Keras's `weights="imagenet"` files
        ("hf-hub:timm/tf_efficientnet_b0.ap_in1k", 1000, IN1K),  # V1 tags: AdvProp is `is_advprop`'s
    ],
)
def test_what_the_weights_were_trained_on_comes_from_their_name_or_their_classes(
    weights, num_classes, training
):
    assert pretrained.weights_training(weights, num_classes) == training


@pytest.mark.parametrize(
    "variant, training, normalization, eval_preprocessing",
    [
        # ImageNet: V2-B0..B3 with EfficientNet's preprocessing ('effnetv1_autoaug'), S..XL with V2's own.
        ("v2-b0", IN1K, IMAGENET, "efficientnet"),
        ("v2-b3", IN1K, IMAGENET, "efficientnet"),
        ("v2-s", IN1K, V2, "efficientnetv2"),
        ("v2-l", IN1K, V2, "efficientnetv2"),
        # ImageNet-21k (datasets.py `ImageNet21k`: no augmentation, so preprocessing.py's own), B3 too.
        ("v2-b3", IN21K, V2, "efficientnetv2"),
        ("v2-xl", IN21K, V2, "efficientnetv2"),
        # Fine-tuned on ImageNet (`ImagenetFt`: `preprocess_for_finetune`, (x / 255 - 0.5) / 0.5, no crop).
        ("v2-b3", FT, SIGNED_UNIT, "efficientnetv2_finetune"),
        ("v2-s", FT, SIGNED_UNIT, "efficientnetv2_finetune"),
        ("v2-xl", FT, SIGNED_UNIT, "efficientnetv2_finetune"),
        # The V1 family has no such variants: what it trained with whatever a name says.
        ("b0", FT, IMAGENET, "efficientnet"),
        ("lite0", IN21K, EDGE, "efficientnet"),
    ],
)
def test_each_v2_training_has_the_official_normalisation_and_eval_preprocessing(
    variant, training, normalization, eval_preprocessing
):
    assert pretrained.weights_normalization(variant, training=training) == normalization
    assert pretrained.official_eval_preprocessing(variant, training) == eval_preprocessing
    assert pretrained.weights_normalization(variant, advprop=True, training=training) == SIGNED_UNIT


@pytest.mark.parametrize(
    "variant, eval_preprocessing",
    [
        ("b0", "efficientnet"),
        ("b7", "efficientnet"),
        ("lite0", "efficientnet"),
        ("v2-b0", "efficientnet"),
        ("v2-b3", "efficientnet"),
        ("v2-s", "efficientnetv2"),
        ("v2-m", "efficientnetv2"),
        ("v2-xl", "efficientnetv2"),
    ],
)
def test_imagenet_configs_evaluate_as_the_official_code(variant, eval_preprocessing):
    """Unset in the config, so that a checkpoint's own is followed; a job from scratch resolves the
    official crop, padding and resize of its variant."""
    config = imagenet.get_config(variant)
    assert (config.eval_preprocessing, config.eval_crop_padding, config.resize_method) == (None, None, None)
    assert configuration.resolve_preprocessing(config) == configuration.Preprocessing(
        eval_preprocessing, 32, configuration.OFFICIAL_RESIZE_METHODS[eval_preprocessing]
    )


def test_the_preprocessing_is_the_configs_else_the_weights_else_the_baselines(caplog):
    """configs/default.py leaves the crop, padding and resize unset: a job from scratch takes its
    baseline's official ones (B0: EfficientNet's crop, padding 32, TF1 bicubic), an evaluation the
    checkpoint's, without a word. A key the config sets wins, with a warning naming both; a crop set
    without a resize brings that crop's official resize."""
    config = default.get_config()
    v2_weights = configuration.Preprocessing("efficientnetv2", 32, "bilinear")
    official_b0 = configuration.Preprocessing("efficientnet", 32, "tf1_bicubic")
    assert configuration.resolve_preprocessing(config) == official_b0
    caplog.clear()
    assert configuration.resolve_preprocessing(config, v2_weights, "/runs/v2s") == v2_weights
    assert not caplog.records
    config.eval_preprocessing = "efficientnet"
    assert configuration.resolve_preprocessing(config, v2_weights, "/runs/v2s") == official_b0
    (warning,) = [record.getMessage() for record in caplog.records]
    assert warning.startswith(
        "config.eval_preprocessing=efficientnet differs from efficientnetv2 crop (padding 32), bilinear "
        "resize, the preprocessing the weights of /runs/v2s were evaluated with; using efficientnet crop "
        "(padding 32), tf1_bicubic resize as set."
    )
    config.resize_method = "bicubic"
    assert configuration.resolve_preprocessing(config, v2_weights).resize_method == "bicubic"
    config.resize_method = "area"
    with pytest.raises(configuration.ConfigError, match="resize_method='area' is not one of tf1_bicubic"):
        configuration.validate(config)


def test_the_image_size_is_the_configs_else_the_weights_else_the_variants(caplog):
    """configs/default.py leaves config.image_size unset: a job from scratch takes its variant's size
    (B0 224, V2-S 384), an evaluation the checkpoint's record's, without a word. A size the config sets
    wins, with a warning naming both."""
    config = default.get_config()
    configuration.validate(config)
    assert configuration.resolve_image_size(config) == configuration.train_image_size(config) == 224
    config.model.variant = "efficientnetv2-s"
    assert configuration.resolve_image_size(config) == 384
    caplog.clear()
    assert configuration.resolve_image_size(config, 300, "/runs/v2s") == 300
    assert not caplog.records
    config.image_size = 224
    assert configuration.resolve_image_size(config, 384, "/runs/v2s") == 224
    (warning,) = [record.getMessage() for record in caplog.records]
    assert warning == (
        "config.image_size=224 differs from 384, the size the weights of /runs/v2s were evaluated at; using "
        "224 as set. Unset config.image_size to follow the weights."
    )
    config.image_size = 0
    with pytest.raises(configuration.ConfigError, match="config.image_size must be positive, got 0"):
        configuration.validate(config)


# --- The eval crop of google/automl efficientnetv2/preprocessing.py ----------------------------------

HEIGHT, WIDTH = 375, 500  # odd margins on both axes at 224: 375 - 328 = 47, 500 - 328 = 172 (even)


@pytest.fixture(scope="module")
def png_and_pixels() -> tuple[tf.Tensor, np.ndarray]:
    pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return tf.constant(buffer.getvalue()), pixels


def official_crop(pixels: np.ndarray, image_size: int, round_offsets_up: bool) -> np.ndarray:
    """The official centre crop: side int(float32(size / (size + 32)) * float32(min(h, w))); offsets
    (h - side) // 2 in efficientnetv2/preprocessing.py, (h - side + 1) // 2 in EfficientNet's."""
    height, width = pixels.shape[:2]
    side = int(np.float32(image_size / (image_size + 32)) * np.float32(min(height, width)))
    rounding = 1 if round_offsets_up else 0
    top, left = (height - side + rounding) // 2, (width - side + rounding) // 2
    return pixels[top : top + side, left : left + side]


def resized(pixels: np.ndarray, image_size: int, method: str) -> np.ndarray:
    if method == "tf1_bicubic":  # tensorflow/tpu efficientnet/preprocessing.py `_resize_image`
        image = tf.compat.v1.image.resize_bicubic([pixels], [image_size, image_size])[0]
    else:
        image = tf.image.resize(pixels, [image_size, image_size], method=method)
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8).numpy()


@pytest.mark.parametrize(
    "preprocessing, image_size, crop, method",
    [
        ("efficientnet", 224, "up", "tf1_bicubic"),
        ("efficientnetv2", 224, "down", "bilinear"),  # below 320: the crop, its odd pixel below
        ("efficientnetv2", 319, "down", "bilinear"),
        ("efficientnetv2", 320, None, "bilinear"),  # from 320 up: the whole image, squashed
        ("efficientnetv2_finetune", 224, None, "bilinear"),  # at every size
    ],
)
def test_eval_image_crops_and_resizes_as_the_official_code(
    png_and_pixels, preprocessing, image_size, crop, method
):
    image_bytes, pixels = png_and_pixels
    expected = pixels if crop is None else official_crop(pixels, image_size, round_offsets_up=crop == "up")
    actual = input_pipeline.eval_image(
        image_bytes,
        image_size=image_size,
        preprocessing=configuration.Preprocessing(
            preprocessing, 32, configuration.OFFICIAL_RESIZE_METHODS[preprocessing]
        ),
    ).numpy()
    np.testing.assert_array_equal(actual, resized(expected, image_size, method))


def test_an_unknown_eval_preprocessing_is_refused_naming_the_known_ones(png_and_pixels):
    with pytest.raises(
        input_pipeline.DatasetConfigError, match="efficientnet, efficientnetv2, efficientnetv2_finetune"
    ):
        input_pipeline.eval_image(
            png_and_pixels[0],
            image_size=32,
            preprocessing=configuration.Preprocessing("timm", 32, "bilinear"),
        )


# --- The checkpoint: classes, normalisation and eval preprocessing in its record ----------------------


def test_the_record_keeps_the_eval_preprocessing_and_writes_it_only_when_not_efficientnets():
    """The crop is written only when it is not EfficientNet's, the resize always (by default the
    crop's official one). A record written before the resize was (no `resize_method`) reads as TF2's
    resize, which its job trained and evaluated with: bicubic for EfficientNet's crop, bilinear for V2's."""
    spec = model_spec("v2-s", num_classes=21843)
    record = checkpointing.ModelRecord.of(spec, V2, eval_preprocessing="efficientnetv2")
    assert checkpointing.ModelRecord.from_json(record.to_json()) == record
    assert record.model_spec().num_classes == 21843
    assert record.preprocessing() == configuration.Preprocessing("efficientnetv2", 32, "bilinear")
    reference = checkpointing.ModelRecord.of(model_spec("b0"), IMAGENET)
    assert "eval_preprocessing" not in reference.to_json()
    assert reference.to_json()["resize_method"] == "tf1_bicubic"
    assert checkpointing.ModelRecord.from_json(reference.to_json()).eval_preprocessing == "efficientnet"
    for written, unrecorded_resize in ((reference, "bicubic"), (record, "bilinear")):
        old = {key: value for key, value in written.to_json().items() if key != "resize_method"}
        assert checkpointing.ModelRecord.from_json(old).resize_method == unrecorded_resize


def test_a_21k_checkpoint_evaluated_on_a_1000_class_dataset_is_one_line_naming_both_and_the_ways_out():
    saved = checkpointing.spec_to_json(model_spec("v2-s", num_classes=21843))
    with pytest.raises(CheckpointError) as error:
        checkpointing.check_same_model(saved, model_spec("v2-s"), "/runs/v2s_21k/checkpoints/0")
    message = str(error.value)
    assert "\n" not in message
    assert "a classifier of 21843 classes" in message and "this dataset has 1000" in message
    assert "predict.py" in message and "config.init_checkpoint" in message


def test_the_converter_takes_the_classes_from_the_classifier_and_the_training_from_the_option(
    tmp_path, capsys, png_and_pixels
):
    """A V2-B0 fine-tuned to 10 classes (`--source=auto` recognises timm's naming): the checkpoint is
    the 10-class network with its weights, which the command points to prediction and fine-tuning;
    `--training=in21k_ft_in1k` (a renamed file of weights fine-tuned from ImageNet-21k) records [-1, 1]
    inputs and the whole-image eval, which prediction then applies."""
    spec = model_spec("v2-b0", num_classes=10)
    path = save_safetensors(timm_state_dict(spec), tmp_path / "model.safetensors")
    out_dir = tmp_path / "v2b0"
    pretrained.main([path, "v2-b0", str(out_dir), "--source=auto", "--training=in21k_ft_in1k"])
    printed = capsys.readouterr().out
    assert "from timm weights" in printed and "inputs normalised as signed_unit. 10 classes" in printed
    assert f"not ImageNet's: classify images with python predict.py --checkpoint={out_dir}" in printed

    location = checkpointing.locate_checkpoint(str(out_dir))
    record = checkpointing.read_model_record(location.step_directory)
    assert record.model_spec() == spec
    assert (record.input_normalization, record.eval_preprocessing) == (SIGNED_UNIT, "efficientnetv2_finetune")
    assert_same_variables(
        checkpointing.read_variables(location, spec, "ema"), pretrained.from_timm(path, spec)
    )
    classifier = prediction.load_classifier(str(out_dir))
    png = tmp_path / "image.png"
    png.write_bytes(png_and_pixels[0].numpy())
    whole_image = resized(png_and_pixels[1], 224, "bilinear")
    np.testing.assert_array_equal(classifier.input_of(str(png)), whole_image)
    assert prediction.class_labels(record, 10)[9] == ("9", "9")


EVALUATE = "Evaluate it with: python eval.py --config=configs/imagenet.py:"


@pytest.mark.parametrize(
    "variant, training, num_classes, expected",
    [
        ("v2-b0", IN1K, 1000, EVALUATE + "efficientnetv2-b0 --checkpoint=/runs/x"),
        ("v2-s", IN1K, 1000, EVALUATE + "efficientnetv2-s --checkpoint=/runs/x"),
        (
            "v2-b3",
            FT,
            1000,
            EVALUATE
            + "efficientnetv2-b3 --checkpoint=/runs/x --config.eval_preprocessing=efficientnetv2_finetune",
        ),
        (
            "v2-s",
            FT,
            1000,
            EVALUATE
            + "efficientnetv2-s --checkpoint=/runs/x --config.eval_preprocessing=efficientnetv2_finetune",
        ),
        ("b0", IN1K, 1000, EVALUATE + "b0 --checkpoint=/runs/x"),
        (
            "v2-s",
            IN21K,
            21843,
            "Its classifier has 21843 classes, not ImageNet's: classify images with python predict.py "
            + "--checkpoint=/runs/x, or fine-tune from it (config.init_checkpoint).",
        ),
    ],
)
def test_the_command_prints_the_eval_that_follows_the_official_code(variant, training, num_classes, expected):
    """The eval.py command sets what `configs/imagenet.py` does not: the fine-tuned weights' whole-image
    eval at every size (V2-B3's config crops at 300 pixels; V2-S's takes the whole image at 384 too, but
    would crop below 320)."""
    spec = model_spec(variant, num_classes=num_classes)
    imported = pretrained.ImportedWeights(
        variables={},
        source="timm",
        normalization=pretrained.weights_normalization(spec, training=training),
        file="model.safetensors",
        spec=spec,
        training=training,
        eval_preprocessing=pretrained.official_eval_preprocessing(spec, training),
    )
    assert pretrained.next_step(imported, "/runs/x") == expected


def test_hub_v2_weights_convert_offline_with_their_normalisation(tmp_path, monkeypatch, capsys):
    """`hf-hub:timm/tf_efficientnetv2_b0.in1k` from a Hugging Face cache laid out here, offline: the
    checkpoint records ImageNet's statistics and EfficientNet's eval, as the official V2-B0."""
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    repo_id = "timm/tf_efficientnetv2_b0.in1k"
    cached_file = hub_cache(cache, repo_id, timm_state_dict(model_spec("v2-b0")))
    assert HUB_REVISION in cached_file
    out_dir = tmp_path / "v2b0"
    pretrained.main([f"hf-hub:{repo_id}", "v2-b0", str(out_dir)])
    printed = capsys.readouterr().out
    assert f"from timm weights ({cached_file}), inputs normalised as imagenet. 1000 classes" in printed
    assert printed.rstrip().endswith(f"--checkpoint={out_dir}")
    record = checkpointing.read_model_record(checkpointing.locate_checkpoint(str(out_dir)).step_directory)
    assert (record.input_normalization, record.eval_preprocessing) == (IMAGENET, "efficientnet")
    assert record.model_spec() == model_spec("v2-b0")


# --- Peers: timm and Keras with random weights, through the command ---------------------------------


def uint8_pixels(seed: int, count: int, size: int) -> np.ndarray:
    """Whole-valued pixels: what a checkpoint's classifier takes (prediction.Classifier.logits)."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def normalised(pixels: np.ndarray, normalization: normalizations.InputNormalization) -> np.ndarray:
    mean, std = np.asarray(normalization.mean), np.asarray(normalization.std)
    return ((pixels.astype(np.float64) - mean) / std).astype(np.float32)


def timm_v2_b0(num_classes: int, pixels: np.ndarray, normalization: normalizations.InputNormalization):
    """timm's `tf_efficientnetv2_b0` with random weights and batch-norm statistics calibrated on
    `pixels` normalised as `normalization`."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnetv2_b0", pretrained=False, num_classes=num_classes)
    return calibrate_torch_model(
        model, torch.from_numpy(normalised(pixels, normalization).transpose(0, 3, 1, 2))
    )


def timm_logits(model, pixels: np.ndarray, normalization: normalizations.InputNormalization) -> np.ndarray:
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        return model(torch.from_numpy(normalised(pixels, normalization).transpose(0, 3, 1, 2))).numpy()


def timm_normalization(tag: str) -> normalizations.InputNormalization:
    """timm's own normalisation of a pretrained tag, from its config (no download), of [0, 255] pixels."""
    timm = pytest.importorskip("timm")
    config = timm.models.get_pretrained_cfg(tag)
    return normalizations.InputNormalization(
        tuple(255 * value for value in config.mean), tuple(255 * value for value in config.std)
    )


def convert(weights: str, variant: str, out_dir) -> prediction.Classifier:
    pretrained.main([weights, variant, str(out_dir), "--source=auto"])
    return prediction.load_classifier(str(out_dir))


@pytest.mark.peer_timm
def test_timm_v2_b0_converted_by_the_command_classifies_as_timm(tmp_path):
    """`tf_efficientnetv2_b0.in1k`'s layout from a `.safetensors` file, at 100 pixels (odd feature
    maps 25, 13, 7): the checkpoint's classifier, normalising as its record says, and timm, normalising
    as its config for that tag says, agree within 1e-4 on the same pixels."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    pixels = uint8_pixels(0, 8, 100)
    normalization = timm_normalization("tf_efficientnetv2_b0.in1k")
    model = timm_v2_b0(1000, pixels, normalization)
    path = tmp_path / "tf_efficientnetv2_b0.in1k.safetensors"
    safetensors_torch.save_file(model.state_dict(), path)
    classifier = convert(str(path), "v2-b0", tmp_path / "v2b0")
    assert classifier.record.input_normalization == normalization == IMAGENET
    reference = timm_logits(model, pixels[:2], normalization)
    assert max_difference(classifier.logits(pixels[:2]), reference) < TOLERANCE
    assert max_difference(reference[0], reference[1]) > 100 * TOLERANCE


@pytest.mark.peer_timm
def test_timm_21843_class_weights_convert_into_a_21843_class_checkpoint(tmp_path, capsys):
    """timm's V2 `.in21k` head (21,843 classes) on V2-B0 (the cheapest body): the converter takes the
    number of classes from the classifier, records ImageNet-21k's normalisation, (pixels - 128) / 128,
    and points to prediction and fine-tuning; the network computes timm's logits within 1e-4."""
    torch = pytest.importorskip("torch")
    pixels = uint8_pixels(1, 8, 100)
    model = timm_v2_b0(pretrained.IMAGENET_21K_CLASSES, pixels, V2)
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    classifier = convert(str(path), "v2-b0", tmp_path / "v2b0_21k")
    assert "classes, not ImageNet's: classify images with python predict.py" in capsys.readouterr().out
    assert classifier.spec.num_classes == 21843
    assert (classifier.record.input_normalization, classifier.record.eval_preprocessing) == (
        V2,
        "efficientnetv2",
    )
    reference = timm_logits(model, pixels[:2], V2)
    logits = classifier.logits(pixels[:2])
    assert logits.shape == (2, 21843)
    assert max_difference(logits, reference) < TOLERANCE
    assert max_difference(reference[0], reference[1]) > 100 * TOLERANCE


@pytest.mark.peer_timm
def test_keras_v2_b0_converted_by_the_command_classifies_raw_pixels_as_keras(tmp_path):
    """Keras's `EfficientNetV2B0` normalises inside the model (ImageNet's mean and variance for B0..B3);
    its `.weights.h5` file through the command gives a checkpoint whose recorded normalisation makes
    the same logits from the same raw pixels, within 1e-4."""
    from tests.test_v2 import calibrated_keras_model

    pixels = uint8_pixels(2, 8, 100)
    model = calibrated_keras_model("v2-b0", pixels.astype(np.float32))
    path = tmp_path / "efficientnetv2-b0.weights.h5"
    model.save_weights(path)
    classifier = convert(str(path), "v2-b0", tmp_path / "v2b0_keras")
    assert classifier.record.input_normalization == IMAGENET
    reference = model.predict(pixels[:2].astype(np.float32), verbose=0)
    assert max_difference(classifier.logits(pixels[:2]), reference) < TOLERANCE
    assert max_difference(reference[0], reference[1]) > 100 * TOLERANCE


@pytest.mark.peer_timm
def test_our_normalisation_of_every_timm_v2_tag_is_timms_or_the_official_128():
    """timm normalises the V2 ports with mean and std 0.5 (127.5 of [0, 255] pixels) except
    V2-B0..B2 and B3 `.in1k` (ImageNet's statistics). Ours is the same wherever the official code
    agrees, and (pixels - 128) / 128 where it trained on that (S..XL on ImageNet, every ImageNet-21k
    training): within half a grey level of timm's."""
    timm = pytest.importorskip("timm")
    tags = timm.list_pretrained("tf_efficientnetv2_*")
    assert len(tags) == 17, tags  # B0..B3 .in1k, B3 .in21k(_ft_in1k), S, M, L all three, XL both 21k
    for tag in tags:
        model_name = tag.split(".")[0]
        variant = "v2-" + model_name.removeprefix("tf_efficientnetv2_")
        ours = pretrained.weights_normalization(
            variant, training=pretrained.weights_training(f"hf-hub:timm/{tag}")
        )
        theirs = timm_normalization(tag)
        if ours == V2:
            assert theirs == SIGNED_UNIT, tag
        else:
            assert ours == theirs, tag
    assert V2.mean[0] - SIGNED_UNIT.mean[0] == V2.std[0] - SIGNED_UNIT.std[0] == 0.5
