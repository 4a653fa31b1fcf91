"""How far bfloat16 evaluation moves B0's logits from float32: the same random weights and one fixed
batch, evaluated by the float32 model and by the bfloat16 one (`config.half_precision`: bfloat16
activations, float32 parameters, float32 logits).

    python benchmarks/precision.py --model=efficientnet-b0 --batch=64

Reports the largest and the mean absolute difference of the logits, the mean absolute float32
logit for scale, and how often both pick the same class. Random weights: the figure says what
bfloat16 arithmetic does to this network, not to a trained one's accuracy. The last line printed is
a JSON record of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp

from efficientnet_jax.model import EfficientNet, create_model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet-b0")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=None, help="default: the variant's")
    parser.add_argument("--width", type=float, default=None, help="override the variant's width")
    parser.add_argument("--depth", type=float, default=None, help="override the variant's depth")
    parser.add_argument("--num_classes", type=int, default=1000)
    return parser.parse_args(argv)


def make_model(args: argparse.Namespace, dtype: str) -> EfficientNet:
    overrides = {key: value for key in ("width", "depth") if (value := getattr(args, key)) is not None}
    return create_model(args.model, num_classes=args.num_classes, dtype=dtype, **overrides)


def eval_logits(model: EfficientNet, variables, images: jax.Array) -> jax.Array:
    return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)


def main(argv=None) -> None:
    args = parse_args(argv)
    reference = make_model(args, "float32")
    resolution = args.resolution or reference.spec.resolution
    image_key, init_key = jax.random.split(jax.random.key(0))
    images = jax.random.normal(image_key, (args.batch, resolution, resolution, 3), jnp.float32)
    variables = jax.jit(reference.init)(init_key, images[:1])
    full = eval_logits(reference, variables, images)
    half = eval_logits(make_model(args, "bfloat16"), variables, images)
    difference = jnp.abs(full - half)
    record = {
        "model": reference.spec.name,
        "resolution": resolution,
        "batch": args.batch,
        "max_abs_diff": float(jnp.max(difference)),
        "mean_abs_diff": float(jnp.mean(difference)),
        "mean_abs_float32_logit": float(jnp.mean(jnp.abs(full))),
        "top1_agreement": float(jnp.mean(jnp.argmax(full, -1) == jnp.argmax(half, -1))),
        "backend": jax.default_backend(),
        "device_kind": jax.local_devices()[0].device_kind,
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
