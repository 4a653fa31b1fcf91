"""predict.py and its job, efficientnet_jax/prediction.py: image files classified with any checkpoint,
everything (network, normalisation, eval crop, class names) taken from the checkpoint, no config.

The trained checkpoint is tests/test_eval.py's tiny job (the same config, so the persistent
compilation cache of conftest.py shares its compiled steps); the converter output holds Lite0 with
all-zero weights, whose logits are exactly zero, so its top classes are known without real weights.
"""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from efficientnet_jax import checkpointing, input_pipeline, prediction, trainer
from efficientnet_jax.configuration import Preprocessing
from efficientnet_jax.model import model_spec
from efficientnet_jax.normalizations import EDGE_NORMALIZATION, IMAGENET_NORMALIZATION
from efficientnet_jax.pretrained import write_checkpoint
from tests import xla_flags
from tests.test_eval import trained_job_config
from tests.workers.tiny_config import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_READABLE = "cannot be read (No such file or directory)"
NOT_AN_IMAGE = "is not an image file TensorFlow decodes (JPEG, PNG, GIF or BMP)"


@pytest.fixture(scope="module")
def workdir(data_dir, tmp_path_factory):
    """A tiny job trained for 3 steps (checkpoints at steps 2 and 3)."""
    path = str(tmp_path_factory.mktemp("run"))
    trainer.train_and_evaluate(trained_job_config(data_dir), path)
    return path


@pytest.fixture(scope="module")
def images(data_dir, tmp_path_factory):
    """{name: path}: the first test-split digit as stored by TFDS (PNG) and re-encoded as JPEG, a path
    that does not exist, and a text file named like a photograph."""
    root = tmp_path_factory.mktemp("images")
    builder = input_pipeline.get_builder(tiny_config(data_dir))
    first = builder.as_dataset(split="test", decoders={"image": tfds.decode.SkipDecoding()}).take(1)
    png = next(iter(first))["image"].numpy()
    paths = {name: str(root / name) for name in ("digit.png", "digit.jpg", "missing.jpg", "notes.jpg")}
    with open(paths["digit.png"], "wb") as f:
        f.write(png)
    with open(paths["digit.jpg"], "wb") as f:
        f.write(tf.io.encode_jpeg(tf.io.decode_png(png, channels=3)).numpy())
    with open(paths["notes.jpg"], "w") as f:
        f.write("not an image\n")
    return paths


def assert_top_k(entry, k, labels):
    """k distinct classes, most probable first, each with its label and name."""
    guesses = entry["top_k"]
    assert len(guesses) == k and len({guess["index"] for guess in guesses}) == k
    probabilities = [guess["probability"] for guess in guesses]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-9
    for guess in guesses:
        assert set(guess) == {"index", "label", "name", "probability"}
        assert (guess["label"], guess["name"]) == labels[guess["index"]]


def test_a_trained_checkpoint_classifies_as_its_evaluation_sees_and_bad_files_are_reported(
    workdir, images, data_dir
):
    """The input of an image file is exactly the evaluation pipeline's for the same image (crop
    padding 0, ImageNet statistics: what the tiny job recorded), the probabilities are the network's
    softmax, the classes are the dataset's digits, and a missing file and a text file are reported
    by name while the images around them are classified."""
    classifier = prediction.load_classifier(workdir)
    config = tiny_config(data_dir)
    hosts = {"process_index": 0, "process_count": 1, "local_device_count": 1}
    batches, _ = input_pipeline.create_eval_iterator(config, **hosts)
    digit = classifier.input_of(images["digit.png"])
    np.testing.assert_array_equal(digit, next(batches)["image"][0, 0])

    order = ["digit.png", "missing.jpg", "notes.jpg", "digit.jpg"]
    results = prediction.predict(workdir, [images[name] for name in order], top_k=3)
    assert {key: results[key] for key in ("step", "weights", "model", "input_normalization")} == {
        "step": 3,
        "weights": "ema",
        "model": "efficientnet-b0",
        "input_normalization": "imagenet",
    }
    assert results["checkpoint"] == checkpointing.locate_checkpoint(workdir).step_directory
    assert [entry["image"] for entry in results["predictions"]] == [images[name] for name in order]
    png, missing, notes, jpg = results["predictions"]
    assert (missing["error"], notes["error"]) == (NOT_READABLE, NOT_AN_IMAGE)
    assert "top_k" not in missing and "top_k" not in notes
    digits = [(str(index), str(index)) for index in range(10)]
    for entry in (png, jpg):
        assert_top_k(entry, 3, digits)
    logits = classifier.logits(digit[None])[0].astype(np.float64)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    for guess in png["top_k"]:
        np.testing.assert_allclose(guess["probability"], softmax[guess["index"]], rtol=1e-6)
    assert png["top_k"][0]["index"] == int(np.argmax(logits))


def test_a_converter_output_is_classified_as_imagenet_on_its_own_normalisation(images, tmp_path):
    """Converted Lite0 weights (all zero: every logit is 0, so the top classes are the first indices,
    ties going to the lower one) predict ImageNet's WordNet ids with their names, on 127/128 inputs."""
    spec = model_spec("lite0")
    variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), checkpointing.abstract_variables(spec))
    out_dir = str(tmp_path / "lite0")
    write_checkpoint(variables, "lite0", out_dir)
    results = prediction.predict(out_dir, [images["digit.jpg"]], top_k=5)
    assert (results["model"], results["step"], results["input_normalization"]) == (
        "efficientnet-lite0",
        0,
        "edge",
    )
    (entry,) = results["predictions"]
    assert [(guess["index"], guess["label"]) for guess in entry["top_k"]] == [
        (0, "n01440764"),
        (1, "n01443537"),
        (2, "n01484850"),
        (3, "n01491361"),
        (4, "n01494475"),
    ]
    assert [guess["name"] for guess in entry["top_k"][:2]] == [
        "tench, Tinca tinca",
        "goldfish, Carassius auratus",
    ]
    for guess in entry["top_k"]:
        assert guess["probability"] == pytest.approx(1 / 1000, rel=1e-6)
    classifier = prediction.load_classifier(out_dir, weights="raw")
    assert classifier.record.input_normalization == EDGE_NORMALIZATION
    # The converter records the official eval: EfficientNet's crop, padding 32, TF1's bicubic resize.
    assert classifier.record.preprocessing() == Preprocessing("efficientnet", 32, "tf1_bicubic")
    pixels = input_pipeline.eval_image(
        tf.io.read_file(images["digit.jpg"]), image_size=224, preprocessing=classifier.record.preprocessing()
    )
    np.testing.assert_array_equal(classifier.input_of(images["digit.jpg"]), pixels.numpy())


def run_predict(*flags):
    env = dict(os.environ, XLA_FLAGS=xla_flags.for_devices(1), PYTHONUNBUFFERED="1")
    command = [sys.executable, "predict.py", *flags]
    return subprocess.run(
        command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_needs_no_config_and_reports_each_bad_file_on_one_line(workdir, images, tmp_path):
    """All images classified: exit 0, the top classes printed and written. A missing file and a
    text file among them: the good image is still classified and written, the run ends with one
    line naming both, exit status 1, no traceback."""
    output = str(tmp_path / "all.json")
    result = run_predict(f"--checkpoint={workdir}", "--top_k=2", f"--output={output}", images["digit.png"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert images["digit.png"] in result.stdout and "  1. " in result.stdout and "  2. " in result.stdout
    with open(output) as f:
        written = json.load(f)
    in_process = prediction.predict(workdir, [images["digit.png"]], top_k=2)
    assert [g["index"] for g in written["predictions"][0]["top_k"]] == [
        g["index"] for g in in_process["predictions"][0]["top_k"]
    ]

    output = str(tmp_path / "some.json")
    paths = [images[name] for name in ("missing.jpg", "digit.png", "notes.jpg")]
    result = run_predict(f"--checkpoint={workdir}", f"--output={output}", *paths)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    last_line = result.stderr.rstrip().splitlines()[-1]
    assert last_line == (
        f"predict.py: 2 of 3 images not classified: {paths[0]} {NOT_READABLE}; {paths[2]} {NOT_AN_IMAGE}."
    )
    assert f"{images['digit.png']}\n  1. " in result.stdout
    with open(output) as f:
        written = json.load(f)
    assert [len(entry.get("top_k", [])) for entry in written["predictions"]] == [0, 5, 0]


def test_the_imagenet_class_names_follow_tfds_label_order():
    """The shipped names file: 1,000 classes, the WordNet ids in the order of TFDS's imagenet2012
    labels (the class indices of ImageNet checkpoints), each with a name; and packaged with the code."""
    with open(tfds.core.tfds_path("datasets/imagenet2012/labels.txt")) as f:
        tfds_wnids = f.read().split()
    names = prediction.imagenet_class_names()
    assert len(tfds_wnids) == 1000 and list(names) == tfds_wnids
    assert all(name.strip() for name in names.values())
    record = checkpointing.ModelRecord.of(model_spec("b0"), IMAGENET_NORMALIZATION)  # no class names
    assert prediction.class_labels(record, 1000)[0] == ("n01440764", "tench, Tinca tinca")
    assert prediction.class_labels(record, 10)[9] == ("9", "9")
    data_file = os.path.relpath(prediction.IMAGENET_CLASS_NAMES_FILE, os.path.join(REPO, "efficientnet_jax"))
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        assert f'efficientnet_jax = ["{os.path.dirname(data_file)}/*.txt"]' in f.read()


@pytest.mark.peer_timm
def test_the_imagenet_class_names_are_timms_wordnet_lemmas():
    """The names are timm's synset-to-lemma table, the file's stated source (found, not imported:
    importing timm imports torch, which need not share a process with TensorFlow well)."""
    timm = importlib.util.find_spec("timm")
    if timm is None:
        pytest.skip("timm is not installed")
    path = os.path.join(timm.submodule_search_locations[0], "data", "_info", "imagenet_synset_to_lemma.txt")
    with open(path) as f:
        lemmas = dict(line.rstrip("\n").split("\t", 1) for line in f)
    names = prediction.imagenet_class_names()
    assert names == {wnid: lemmas[wnid] for wnid in names}
