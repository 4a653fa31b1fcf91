"""`python -m efficientnet_jax.summary`: parameters and forward GFLOPs (multiply-adds) of the released
B0-B7, Lite and EdgeTPU variants at their own resolution, next to the published and the reference's
figures."""

from __future__ import annotations

import argparse

from efficientnet_jax import accounting, scaling

# Trainable parameters of the official models (measured on timm's tf_efficientnet_b*, _lite* and
# _es/_em/_el ports, 1,000 classes) and the published FLOPs (multiply-adds, billions): the paper's
# Table 2 for B0-B7, the Lite README's MAdds for Lite; none are published for EdgeTPU.
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
}


def summary_rows(variants=tuple(PUBLISHED)) -> list[dict]:
    rows = []
    for name in variants:
        spec = scaling.variant_spec(name)
        params = accounting.count_parameters(spec)["trainable"]
        gflops = accounting.count_multiply_adds(spec) / 1e9
        paper_params, paper_gflops = PUBLISHED.get(name, (None, None))
        rows.append(
            dict(
                variant=name,
                resolution=spec.resolution,
                params=params,
                reference_params=paper_params,
                gflops=gflops,
                paper_gflops=paper_gflops,
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| variant | resolution | params | reference params | GFLOPs (mult-adds) | published GFLOPs "
        "| ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reference = f"{row['reference_params']:,}" if row["reference_params"] else "-"
        paper = f"{row['paper_gflops']:g}" if row["paper_gflops"] else "-"
        ratio = f"{row['gflops'] / row['paper_gflops']:.3f}" if row["paper_gflops"] else "-"
        lines.append(
            f"| {row['variant']} | {row['resolution']} | {row['params']:,} | {reference} | "
            f"{row['gflops']:.3f} | {paper} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variants", nargs="*", default=list(PUBLISHED), help="e.g. b0 efficientnet-b3 lite0")
    args = parser.parse_args()
    names = [scaling.variant_spec(v).name for v in args.variants]
    print(format_table(summary_rows(names)))


if __name__ == "__main__":
    main()
