"""timm's `tf_efficientnet_b*` (PyTorch) timed the way `benchmarks/throughput.py` times this project.

    python benchmarks/peers/timm_throughput.py --model=efficientnet-b0 --batch=32 --resolution=224 \
        --mode=train --dtype=float32 --steps=10

For users who have torch and timm installed; neither is a dependency of this project. Same flags and,
where they mean something for eager PyTorch, the same JSON keys. Train is forward, backward and an
optimizer step with timm's TF-style RMSProp (`RMSpropTF`: decay 0.9, momentum 0.9, eps 1e-3, the
reference's learning rate 0.016 per 256 examples) on cross-entropy with label smoothing 0.1, with
`model.train()` (batch-norm statistics updated, dropout and stochastic depth on); eval is
`model.eval()` under `torch.inference_mode()`. Random weights (`pretrained=False`): speed does not
depend on them. Threads: one per core unless `--threads` says otherwise. The first step is timed
separately (`first_step_seconds`; PyTorch eager has no compilation), then `--steps` steps one by one.
The last line printed is a JSON record of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import timm
import timm.optim
import torch

# Run from a checkout: the repository root holds `benchmarks/machine.py` (standard library only).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmarks import machine  # noqa: E402

RESOLUTIONS = {f"b{i}": r for i, r in enumerate((224, 240, 260, 300, 380, 456, 528, 600))}


def timm_name(model: str) -> str:
    """'efficientnet-b3' or 'b3' -> 'tf_efficientnet_b3' (the port of the official weights)."""
    short = model.lower().removeprefix("efficientnet-")
    if short not in RESOLUTIONS:
        raise ValueError(
            f"Unknown variant {model!r}; expected efficientnet-b0 .. efficientnet-b7 (or b0 .. b7)."
        )
    return f"tf_efficientnet_{short}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet-b0")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=None, help="default: the variant's")
    parser.add_argument("--mode", choices=("train", "eval"), default="train")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: torch.autocast, float32 weights",
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--channels_last", action="store_true", help="NHWC memory format (timm's default: NCHW)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    args.model_name = timm_name(args.model)
    args.resolution = args.resolution or RESOLUTIONS[args.model_name.rsplit("_", 1)[1]]
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}.")
    return args


def make_step(args: argparse.Namespace):
    """A closure running one step on a fixed random batch on the device."""
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = timm.create_model(args.model_name, pretrained=False, num_classes=args.num_classes)
    model = model.to(device, memory_format=memory_format)
    images = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, args.num_classes, (args.batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    if args.mode == "eval":
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                return model(images)

        return step, device

    model.train()
    optimizer = timm.optim.RMSpropTF(
        model.parameters(), lr=0.016 * args.batch / 256, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-5
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    return step, device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device) -> float:
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "device_peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_max_rss"


def device_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return machine.cpu_model()


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    step, device = make_step(args)
    first_step_seconds = timed(step, device)
    step_seconds = [timed(step, device) for _ in range(args.steps)]
    median = statistics.median(step_seconds)
    peak_bytes, peak_source = peak_memory(device)
    print(
        json.dumps(
            {
                "images_per_second": round(args.batch / median, 2),
                "step_seconds_median": round(median, 4),
                "step_seconds_min": round(min(step_seconds), 4),
                "step_seconds_max": round(max(step_seconds), 4),
                "compile_seconds": None,
                "first_step_seconds": round(first_step_seconds, 2),
                "peak_memory_bytes": peak_bytes,
                "peak_memory_source": peak_source,
                "model": args.model_name,
                "mode": args.mode,
                "dtype": args.dtype,
                "resolution": args.resolution,
                "per_device_batch": args.batch,
                "global_batch": args.batch,
                "steps": args.steps,
                "channels_last": args.channels_last,
                "threads": args.threads,
                "backend": device.type,
                "device_kind": device_kind(device),
                "num_devices": 1,
                "cpu_count": os.cpu_count(),
                "torch_version": torch.__version__,
                "timm_version": timm.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
