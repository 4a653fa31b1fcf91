"""Exporting a checkpoint's network to LiteRT, ONNX or a TF SavedModel: the library behind export.py.

The checkpoint is read as predict.py reads it (prediction.load_classifier: a workdir, a step
directory or a converter output; EMA weights by default). What is exported is its deploy form, the
same function computed from the variables the way a runtime wants it (`deploy_function`):

- the `xla` depthwise convolution, one op per layer, whatever `auto` picks for training on this
  machine (the `shift` form becomes hundreds of slices in the exported graph);
- 1x1 convolutions of 1x1 maps (squeeze-and-excitation's) as convolution ops: the model's flattened
  matrix product becomes there a rank-4 BATCH_MATMUL the converter rejects;
- batch norm folded into the convolution before it (kernel times gamma / sqrt(var + eps), the rest a
  bias), so the converter sees convolution, bias, activation, fuses them, and full-integer
  quantisation calibrates the folded weights per channel: unfolded, the int8 Lite0 lost top-1 on a
  photograph, folded it keeps it (BENCHMARKS.md);
- with `input='uint8'`, the checkpoint's normalisation inside the graph: uint8 eval-crop pixels in.

LiteRT comes from TensorFlow's converter on the function jax2tf makes (float32, float16 weights,
dynamic-range int8, or full-integer int8 calibrated on real images: uint8 in and out with
`input='uint8'`, the form the Edge TPU compiler takes), ONNX from jax2onnx, the SavedModel from
jax2tf. Every file gets a JSON sidecar (deployed.py) and, where the format has one, the same text in
its own metadata. `check` runs what was written in its runtime against the JAX classifier.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from efficientnet_jax import deployed, layers, prediction
from efficientnet_jax.deployed import Description
from efficientnet_jax.model import EfficientNet

QUANTIZATIONS = {
    "litert": ("none", "float16", "dynamic_int8", "int8"),
    "onnx": ("none",),
    "saved_model": ("none",),
}
FORMATS = tuple(QUANTIZATIONS)
INPUTS = ("float", "uint8")
# A float32 export is the JAX function up to float rounding: the largest logit difference allowed,
# relative to the largest |logit| (at least 1).
FLOAT_TOLERANCE = 1e-4
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
METADATA_NAME = "efficientnet_jax"  # the metadata entry's name in a .tflite, key in an .onnx


class ExportError(ValueError):
    """Bad export options or data, or an export that does not match its checkpoint."""


def check_options(format: str, quantization: str, batch: str, input: str) -> None:
    """The option combinations export supports; anything else is one line naming the fix."""
    if format not in QUANTIZATIONS:
        raise ExportError(f"Unknown --format={format}; choose one of {', '.join(FORMATS)}.")
    if quantization not in QUANTIZATIONS[format]:
        raise ExportError(
            f"--format={format} has no --quantize={quantization}; it has {', '.join(QUANTIZATIONS[format])}."
        )
    if input not in INPUTS:
        raise ExportError(f"Unknown --input={input}; choose float or uint8.")
    if batch != "dynamic" and not (batch.isdigit() and int(batch) > 0):
        raise ExportError(f"--batch={batch} is neither a positive batch size nor 'dynamic'.")
    if format == "litert" and batch == "dynamic":
        raise ExportError(
            "LiteRT exports a fixed batch (--batch=N): its converter turns a dynamic batch into hundreds "
            "of shape ops that run about 20x slower."
        )


def fold_batch_norm(variables: dict[str, Any], epsilon: float) -> dict[str, Any]:
    """The parameters with every batch norm `<x>_bn` folded into the convolution `<x>_conv` it follows:
    the kernel's output channels times gamma / sqrt(var + eps), and the batch norm's bias becomes
    beta - mean * gamma / sqrt(var + eps). Only `deploy_function` computes with these."""

    def fold(params: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
        folded = dict(params)
        for name, value in stats.items():
            if not name.endswith("_bn"):
                folded[name] = fold(params[name], value)
                continue
            conv = name[: -len("_bn")] + "_conv"
            scale = params[name]["scale"] / np.sqrt(value["var"] + epsilon)
            folded[conv] = {**params[conv], "kernel": params[conv]["kernel"] * scale}
            folded[name] = {"bias": params[name]["bias"] - value["mean"] * scale}
        return folded

    as_numpy = jax.tree.map(np.asarray, variables)
    return {"params": fold(as_numpy["params"], as_numpy["batch_stats"])}


def _deploy_form(next_fun, args, kwargs, context):
    """Flax method interceptor: a batch norm adds its (folded) bias and does nothing else; a 1x1
    convolution of a 1x1 map (squeeze-and-excitation's, a small image's last) is a convolution op:
    LiteRT's converter turns the flattened matrix product there into a rank-4 BATCH_MATMUL it rejects."""
    if context.method_name == "__call__" and isinstance(context.module, nn.BatchNorm):
        return args[0] + context.module.get_variable("params", "bias")
    if (
        context.method_name == "__call__"
        and isinstance(context.module, layers.PointwiseConv)
        and args[0].shape[1:3] == (1, 1)
    ):
        kernel = context.module.get_variable("params", "kernel")
        bias = context.module.get_variable("params", "bias")
        outputs = jax.lax.conv_general_dilated(
            args[0], kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return outputs if bias is None else outputs + bias
    return next_fun(*args, **kwargs)


def deploy_function(classifier: prediction.Classifier, input: str) -> Callable[[jax.Array], jax.Array]:
    """The checkpoint's inference as exported (see the module's text): images -> float32 logits, the
    images normalised floats, or (`input='uint8'`) pixels in [0, 255] of any dtype."""
    spec = dataclasses.replace(classifier.spec, depthwise_implementation="xla")
    model = EfficientNet(spec)
    variables = fold_batch_norm(classifier.variables, spec.batch_norm_epsilon)
    normalization = classifier.record.input_normalization
    mean, std = (np.asarray(values, np.float32) for values in (normalization.mean, normalization.std))

    def logits(images: jax.Array) -> jax.Array:
        if input == "uint8":
            images = (images.astype(jnp.float32) - mean) / std
        with nn.intercept_methods(_deploy_form):
            return model.apply(variables, images, train=False)

    return logits


# ----------------------------------------------------------------------------------------------------
# Real images: calibration and the check.


def folder_images(classifier: prediction.Classifier, directory: str, count: int) -> np.ndarray:
    """uint8 eval crops of the first `count` image files of `directory` (sorted by name)."""
    try:
        names = sorted(name for name in os.listdir(directory) if name.lower().endswith(IMAGE_EXTENSIONS))
    except OSError as error:
        raise ExportError(
            f"Cannot read --calibration_data={directory} ({error.strerror or error})."
        ) from error
    if not names:
        raise ExportError(
            f"--calibration_data={directory} holds no image files ({', '.join(IMAGE_EXTENSIONS)})."
        )
    images = []
    for name in names[:count]:
        try:
            images.append(classifier.input_of(os.path.join(directory, name)))
        except Exception as error:  # OSError, or TensorFlow's InvalidArgumentError for a non-image
            raise ExportError(
                f"Cannot use {os.path.join(directory, name)} as a calibration image "
                f"({type(error).__name__}): remove it from --calibration_data."
            ) from error
    return np.stack(images)


def dataset_images(classifier: prediction.Classifier, count: int) -> np.ndarray:
    """uint8 eval crops of the first `count` examples of the checkpoint's eval split (all of them where
    it has fewer), read through the config.json its training workdir holds."""
    import ml_collections
    import tensorflow_datasets as tfds

    from efficientnet_jax import input_pipeline

    config_path = os.path.join(classifier.location.results_directory, "config.json")
    try:
        with open(config_path) as f:
            config = ml_collections.ConfigDict(json.load(f))
    except OSError:
        raise ExportError(
            f"{classifier.location.step_directory} is not in a training workdir with a config.json, so its "
            f"dataset is unknown: give a folder of images with --calibration_data=DIR."
        ) from None
    builder = input_pipeline.get_builder(config)
    examples = builder.as_dataset(
        split=config.eval_split, decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=False
    ).take(count)
    preprocessing = classifier.record.preprocessing()
    return np.stack(
        [
            input_pipeline.eval_image(
                example["image"], image_size=classifier.spec.resolution, preprocessing=preprocessing
            ).numpy()
            for example in examples
        ]
    )


# ----------------------------------------------------------------------------------------------------
# Converters.


def _tensorflow_function(function: Callable, input_shape: tuple, dtype: Any, batch: str):
    """The concrete TF function jax2tf makes of `function`, for one input of `input_shape`."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    polymorphic = ["(b, _, _, _)"] if batch == "dynamic" else None
    converted = tf.function(
        jax2tf.convert(function, polymorphic_shapes=polymorphic, with_gradient=False), autograph=False
    )
    shape = (None if batch == "dynamic" else int(batch), *input_shape)
    return converted, converted.get_concrete_function(tf.TensorSpec(shape, dtype, name="images"))


def to_litert(
    function: Callable, input_shape: tuple, batch: str, input: str, quantization: str, calibration: np.ndarray
) -> bytes:
    """The .tflite flatbuffer. Full-integer int8 calibrates on `calibration` (float32 samples of what
    the graph takes, one image a sample) with per-channel weights, and with `input='uint8'` takes and
    gives uint8."""
    import tensorflow as tf

    full_integer = quantization == "int8"
    # The converter quantises a float input itself: a full-integer graph is traced on float pixels.
    dtype = tf.uint8 if input == "uint8" and not full_integer else tf.float32
    traced, concrete = _tensorflow_function(function, input_shape, dtype, batch)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], traced)
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if full_integer:
        size = int(batch)
        converter.representative_dataset = lambda: (
            [calibration[start : start + size]] for start in range(0, len(calibration) - size + 1, size)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if input == "uint8":
            converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter.convert()


def with_litert_metadata(flatbuffer: bytes, text: str) -> bytes:
    """The .tflite with `text` as its metadata entry METADATA_NAME (the format's own key-value store)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def to_onnx(function: Callable, input_shape: tuple, batch: str, input: str, text: str) -> bytes:
    import jax2onnx

    batch_dimension = jax.export.symbolic_shape("B")[0] if batch == "dynamic" else int(batch)
    dtype = jnp.uint8 if input == "uint8" else jnp.float32
    # jax2onnx 0.12.5's flax Conv plugin print()s three DEBUG lines for every convolution it converts:
    # they go to the log file, not the console.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        model = jax2onnx.to_onnx(
            function,
            [jax.ShapeDtypeStruct((batch_dimension, *input_shape), dtype)],
            model_name="efficientnet",
            input_names=["images"],
            output_names=["logits"],
        )
    if printed.getvalue():
        logging.info("jax2onnx printed:\n%s", printed.getvalue().rstrip())
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_NAME, text
    return model.SerializeToString()


def write_saved_model(
    function: Callable, input_shape: tuple, batch: str, input: str, text: str, path: str
) -> None:
    """A SavedModel whose `logits` function is the export, and `metadata` the sidecar's text."""
    import tensorflow as tf

    module = tf.Module()
    _, module.logits = _tensorflow_function(
        function, input_shape, tf.uint8 if input == "uint8" else tf.float32, batch
    )
    module.metadata = tf.Variable(text, trainable=False)
    tf.saved_model.save(module, path)


# ----------------------------------------------------------------------------------------------------
# The whole export.


@dataclasses.dataclass(frozen=True)
class Check:
    """The exported model against the JAX classifier on the same real images."""

    images: int
    max_logit_difference: float
    logit_scale: float  # the largest |logit| of the JAX classifier (at least 1)
    top1_agreement: float
    min_correlation: float  # of each image's logits, the lowest

    def summary(self) -> str:
        return (
            f"{self.images} images: max logit difference {self.max_logit_difference:.3g} "
            f"(largest |logit| {self.logit_scale:.3g}), top-1 agreement {self.top1_agreement:.0%}, "
            f"lowest logit correlation {self.min_correlation:.4f}"
        )


def compare(expected: np.ndarray, actual: np.ndarray) -> Check:
    correlations = [np.corrcoef(e, a)[0, 1] for e, a in zip(expected, actual)]
    return Check(
        images=len(expected),
        max_logit_difference=float(np.abs(expected - actual).max()),
        logit_scale=float(max(1.0, np.abs(expected).max())),
        top1_agreement=float(np.mean(expected.argmax(-1) == actual.argmax(-1))),
        min_correlation=float(min(correlations)),
    )


def _writable(output: str) -> None:
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ExportError(f"Cannot write --output={output}: {directory} is not a writable directory.")


def export(
    checkpoint: str,
    format: str,
    output: str,
    *,
    quantization: str = "none",
    batch: str = "1",
    input: str = "float",
    weights: str = "ema",
    step: int | None = None,
    calibration_images: int = 100,
    calibration_data: str | None = None,
    check_images: int = 8,
) -> tuple[Description, Check]:
    """`export_classifier` for a checkpoint (as predict.py takes it), on images of its dataset or of
    `calibration_data`: the first `check_images` for the check, `calibration_images` for int8."""
    check_options(format, quantization, batch, input)
    _writable(output)
    classifier = prediction.load_classifier(checkpoint, weights, step)
    needed = max(check_images, calibration_images if quantization == "int8" else 0)
    images = (
        folder_images(classifier, calibration_data, needed)
        if calibration_data
        else dataset_images(classifier, needed)
    )
    return export_classifier(
        classifier,
        format,
        output,
        images,
        quantization=quantization,
        batch=batch,
        input=input,
        check_images=check_images,
    )


def export_classifier(
    classifier: prediction.Classifier,
    format: str,
    output: str,
    images: np.ndarray,
    *,
    quantization: str = "none",
    batch: str = "1",
    input: str = "float",
    check_images: int = 8,
) -> tuple[Description, Check]:
    """Writes the classifier's deploy form to `output` (a file; a directory for a SavedModel) and its
    sidecar, loads it back in its runtime and compares it with the classifier on the first
    `check_images` of `images` (uint8 eval crops; all of them calibrate int8). Raises ExportError when
    a float32 export differs by more than FLOAT_TOLERANCE."""
    check_options(format, quantization, batch, input)
    description = Description(
        format=format,
        quantization=quantization,
        batch=batch,
        input=input,
        record=classifier.record.to_json(),
        checkpoint=classifier.location.step_directory,
        step=classifier.location.step,
        weights=classifier.weights,
    )
    function = deploy_function(classifier, input)
    input_shape = (classifier.spec.resolution, classifier.spec.resolution, 3)
    if format == "litert":
        calibration = images.astype(np.float32)
        if input == "float":
            calibration = deployed.normalize(calibration, classifier.record.input_normalization)
        flatbuffer = to_litert(function, input_shape, batch, input, quantization, calibration)
        description = _with_quantization(description, flatbuffer)
        _write(output, with_litert_metadata(flatbuffer, json.dumps(description.to_json())))
    elif format == "onnx":
        _write(output, to_onnx(function, input_shape, batch, input, json.dumps(description.to_json())))
    else:
        write_saved_model(function, input_shape, batch, input, json.dumps(description.to_json()), output)
    _write(deployed.sidecar_path(output), json.dumps(description.to_json(), indent=2).encode())

    check_set = images[:check_images]
    result = compare(classifier.logits(check_set), deployed.load(output).logits(check_set))
    if quantization == "none" and result.max_logit_difference > FLOAT_TOLERANCE * result.logit_scale:
        raise ExportError(
            f"{output} differs from the JAX model by {result.max_logit_difference:.3g} in the logits on "
            f"{result.images} images, over the tolerance {FLOAT_TOLERANCE:g} x {result.logit_scale:.3g}."
        )
    return description, result


def _with_quantization(description: Description, flatbuffer: bytes) -> Description:
    """The input's and output's (scale, zero point), read from the converted model, for integer ones."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    (input_detail,), (output_detail,) = interpreter.get_input_details(), interpreter.get_output_details()
    return dataclasses.replace(
        description,
        input_quantization=deployed.quantization_of(input_detail),
        output_quantization=deployed.quantization_of(output_detail),
    )


def _write(path: str, content: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(content)
    except OSError as error:
        raise ExportError(f"Cannot write {path} ({error.strerror or error}).") from error
