"""Running an exported network (LiteRT `.tflite`, ONNX `.onnx`, TF SavedModel directory) in its own
runtime, with the JSON sidecar export.py writes beside it (`<file>.json`): what export.py checks its
output with, and predict.py --model= classifies with.

The sidecar holds the checkpoint's model record (network, normalisation, eval crop and preprocessing,
class names), so an exported file classifies images exactly as its checkpoint does (prediction.py),
and how the graph takes its input: normalised float32 images, or uint8 pixels with the normalisation
inside the graph; for a full-integer model, the input's and output's quantisation. Each runtime is
imported only when a file of its format is opened: the package needs none of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from efficientnet_jax.checkpointing import ModelRecord
from efficientnet_jax.normalizations import InputNormalization

SIDECAR_SUFFIX = ".json"
FORMAT_OF_EXTENSION = {".tflite": "litert", ".onnx": "onnx"}


class DeployedModelError(ValueError):
    """An exported file that cannot be used: no sidecar, an unknown format, a runtime missing."""


def sidecar_path(model_path: str) -> str:
    return os.path.abspath(model_path).rstrip(os.sep) + SIDECAR_SUFFIX


@dataclasses.dataclass(frozen=True)
class Description:
    """The sidecar: what the exported graph computes and how to feed it."""

    format: str  # litert, onnx or saved_model
    quantization: str  # none, float16, dynamic_int8 or int8
    batch: str  # a fixed batch size, or 'dynamic'
    input: str  # 'uint8': eval-crop pixels in, normalised in the graph; 'float': normalised images in
    record: dict[str, Any]  # checkpointing.ModelRecord.to_json()
    checkpoint: str
    step: int
    weights: str
    # Full-integer models: (scale, zero point) of the uint8/int8 input and output, else None.
    input_quantization: tuple[float, int] | None = None
    output_quantization: tuple[float, int] | None = None

    def model_record(self) -> ModelRecord:
        return ModelRecord.from_json(self.record)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def read_description(model_path: str) -> Description:
    path = sidecar_path(model_path)
    if not os.path.exists(model_path):
        raise DeployedModelError(f"--model={model_path} does not exist.")
    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError as error:
        raise DeployedModelError(
            f"{model_path} has no readable sidecar {path} ({error.strerror or error}): export.py writes it "
            f"beside the model; keep the two together."
        ) from error
    for key in ("input_quantization", "output_quantization"):
        if saved.get(key) is not None:
            saved[key] = tuple(saved[key])
    return Description(**saved)


def _quantize(values: np.ndarray, quantization: tuple[float, int] | None, dtype: np.dtype) -> np.ndarray:
    if quantization is None:
        return values.astype(dtype)
    scale, zero_point = quantization
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), limits.min, limits.max).astype(dtype)


def _dequantize(values: np.ndarray, quantization: tuple[float, int] | None) -> np.ndarray:
    if quantization is None:
        return values.astype(np.float32)
    scale, zero_point = quantization
    return (values.astype(np.float32) - zero_point) * scale


def litert_runner(path: str, num_threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Batch -> float32 logits with the LiteRT interpreter. A fixed-batch model runs any batch in pieces
    of its size, the last one padded. `num_threads=None` is every core, as for the other runtimes: the
    interpreter's own default is one thread (ai-edge-litert 2.3.0 passes `num_threads or 1`)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=num_threads or os.cpu_count() or 1)
    interpreter.allocate_tensors()
    (input_detail,), (output_detail,) = interpreter.get_input_details(), interpreter.get_output_details()
    batch = int(input_detail["shape"][0])
    input_quantization = quantization_of(input_detail)
    output_quantization = quantization_of(output_detail)

    def run(inputs: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(inputs), batch):
            piece = inputs[start : start + batch]
            padded = np.concatenate([piece, np.zeros((batch - len(piece), *piece.shape[1:]), piece.dtype)])
            interpreter.set_tensor(
                input_detail["index"], _quantize(padded, input_quantization, input_detail["dtype"])
            )
            interpreter.invoke()
            logits = interpreter.get_tensor(output_detail["index"])[: len(piece)]
            outputs.append(_dequantize(logits, output_quantization))
        return np.concatenate(outputs)

    return run


def quantization_of(detail: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of a quantised tensor; None for a float one or plain integers (scale 0: the
    uint8 pixels a float graph with `input='uint8'` casts itself)."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.floating) or scale == 0:
        return None
    return float(scale), int(zero_point)


def onnx_runner(path: str, num_threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # jax2onnx's value_info disagrees on layouts: warnings, not errors
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    (input_info,) = session.get_inputs()
    batch = input_info.shape[0]
    dtype = np.uint8 if input_info.type == "tensor(uint8)" else np.float32

    def run(inputs: np.ndarray) -> np.ndarray:
        step = batch if isinstance(batch, int) else len(inputs)
        return np.concatenate(
            [
                session.run(None, {input_info.name: inputs[start : start + step].astype(dtype)})[0]
                for start in range(0, len(inputs), step)
            ]
        )

    return run


def saved_model_runner(path: str, num_threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    if num_threads:
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
    loaded = tf.saved_model.load(path)

    def run(inputs: np.ndarray) -> np.ndarray:
        return loaded.logits(tf.constant(inputs)).numpy()

    return run


RUNNERS = {"litert": litert_runner, "onnx": onnx_runner, "saved_model": saved_model_runner}


@dataclasses.dataclass(frozen=True)
class DeployedModel:
    """An exported file, its description, and its runtime: `logits` takes what the checkpoint's
    classifier takes (uint8 eval-crop pixels [N, S, S, 3]) and normalises them first where the
    graph expects normalised images."""

    path: str
    description: Description
    run: Callable[[np.ndarray], np.ndarray]

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        if self.description.input == "uint8":
            return self.run(pixels)
        return self.run(normalize(pixels, self.description.model_record().input_normalization))


def normalize(pixels: np.ndarray, normalization: InputNormalization) -> np.ndarray:
    """float32 (pixels - mean) / std: what a graph exported with `input='float'` takes."""
    mean, std = (np.asarray(values, np.float32) for values in (normalization.mean, normalization.std))
    return (pixels.astype(np.float32) - mean) / std


def load(model_path: str, num_threads: int | None = None) -> DeployedModel:
    """The exported file and its sidecar, in the runtime of its format (`num_threads`: the runtime's;
    None: every core)."""
    description = read_description(model_path)
    try:
        runner = RUNNERS[description.format]
    except KeyError:
        raise DeployedModelError(
            f"{sidecar_path(model_path)} names format {description.format!r}; known: {sorted(RUNNERS)}."
        ) from None
    try:
        run = runner(model_path, num_threads)
    except ImportError as error:
        raise DeployedModelError(
            f"Running a {description.format} model needs {error.name}: pip install -r requirements-export.txt"
        ) from error
    return DeployedModel(model_path, description, run)


def predict(model_path: str, image_paths: Sequence[str], top_k: int = 5) -> dict[str, Any]:
    """prediction.predict with an exported file: the same preprocessing (its checkpoint's, from the
    sidecar), the same keys, and "exported" and "format" beside them."""
    from efficientnet_jax import normalizations, prediction

    model = load(model_path)
    record = model.description.model_record()
    spec = record.model_spec()

    def input_of(path: str) -> np.ndarray:
        return prediction.image_file_input(
            path, image_size=spec.resolution, preprocessing=record.preprocessing()
        )

    labels = prediction.class_labels(record, spec.num_classes)
    return {
        "exported": model_path,
        "format": f"{model.description.format} ({model.description.quantization})",
        "checkpoint": model.description.checkpoint,
        "step": model.description.step,
        "weights": model.description.weights,
        "model": spec.name,
        "input_normalization": normalizations.describe_normalization(record.input_normalization),
        "predictions": prediction.classify_files(input_of, model.logits, labels, image_paths, top_k),
    }
