"""`python -m efficientnet_jax.summary`: parameters and forward GFLOPs (multiply-adds) of the released
B0-B7, Lite, EdgeTPU and EfficientNetV2 variants, at the size each trains at and the size it is
evaluated at, next to the reference's parameter counts and the published FLOPs."""

from __future__ import annotations

import argparse

from efficientnet_jax import accounting, scaling

# Trainable parameters of the official models (measured on timm's tf_efficientnet_b*, _lite*,
# _es/_em/_el and tf_efficientnetv2_* ports, 1,000 classes) and the published FLOPs (multiply-adds,
# billions, at the evaluation size): the EfficientNet paper's Table 2 for B0-B7, the Lite README's
# MAdds for Lite, none for EdgeTPU; the EfficientNetV2 paper's Table 7 for V2-S/M/L/XL and, as the
# paper gives none for them, google/automl's efficientnetv2 README for V2-B0..B3.
PUBLISHED = {
    "efficientnet-b0": (5_288_548, 0.39),
    "efficientnet-b1": (7_794_184, 0.70),
    "efficientnet-b2": (9_109_994, 1.0),
    "efficientnet-b3": (12_233_232, 1.8),
    "efficientnet-b4": (19_341_616, 4.2),
    "efficientnet-b5": (30_389_784, 9.9),
    "efficientnet-b6": (43_040_704, 19.0),
    "efficientnet-b7": (66_347_960, 37.0),
    "efficientnet-lite0": (4_652_008, 0.407),
    "efficientnet-lite1": (5_416_680, 0.631),
    "efficientnet-lite2": (6_092_072, 0.899),
    "efficientnet-lite3": (8_197_096, 1.44),
    "efficientnet-lite4": (13_006_568, 2.64),
    "efficientnet-edgetpu-s": (5_438_392, None),
    "efficientnet-edgetpu-m": (6_899_496, None),
    "efficientnet-edgetpu-l": (10_589_712, None),
    "efficientnetv2-b0": (7_139_704, 0.72),
    "efficientnetv2-b1": (8_141_052, 1.2),
    "efficientnetv2-b2": (10_096_086, 1.7),
    "efficientnetv2-b3": (14_358_406, 3.0),
    "efficientnetv2-s": (21_458_488, 8.8),
    "efficientnetv2-m": (54_139_356, 24.0),
    "efficientnetv2-l": (118_515_272, 53.0),
    "efficientnetv2-xl": (208_119_808, 94.0),
}


def summary_rows(variants=tuple(PUBLISHED)) -> list[dict]:
    """One row per variant: its train and eval sizes, our counts, and the reference figures."""
    rows = []
    for name in variants:
        spec = scaling.variant_spec(name)
        train_resolution = scaling.variant_coefficients(name).train_resolution or spec.resolution
        gflops = accounting.count_multiply_adds(spec) / 1e9
        train_gflops = (
            gflops
            if train_resolution == spec.resolution
            else accounting.count_multiply_adds(spec, train_resolution) / 1e9
        )
        reference_params, published_gflops = PUBLISHED.get(spec.name, (None, None))
        rows.append(
            dict(
                variant=spec.name,
                train_resolution=train_resolution,
                resolution=spec.resolution,
                params=accounting.count_parameters(spec)["trainable"],
                reference_params=reference_params,
                train_gflops=train_gflops,
                gflops=gflops,
                published_gflops=published_gflops,
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| variant | train size | eval size | params | reference params | GFLOPs at train size "
        "| GFLOPs at eval size | published GFLOPs | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reference = f"{row['reference_params']:,}" if row["reference_params"] else "-"
        published = f"{row['published_gflops']:g}" if row["published_gflops"] else "-"
        ratio = f"{row['gflops'] / row['published_gflops']:.3f}" if row["published_gflops"] else "-"
        lines.append(
            f"| {row['variant']} | {row['train_resolution']} | {row['resolution']} | {row['params']:,} | "
            f"{reference} | {row['train_gflops']:.3f} | {row['gflops']:.3f} | {published} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "variants", nargs="*", default=list(PUBLISHED), help="e.g. b0 efficientnet-b3 lite0 v2-s"
    )
    args = parser.parse_args()
    print(format_table(summary_rows(args.variants)))


if __name__ == "__main__":
    main()
