"""`python -m efficientnet_jax.summary`: parameters and forward GFLOPs (multiply-adds) of every
released variant at its own resolution, next to the paper's and the reference's figures."""

from __future__ import annotations

import argparse

from efficientnet_jax import accounting, scaling

# Trainable parameters of the official models (measured on timm's tf_efficientnet_b* ports) and the
# paper's Table 2 FLOPs (multiply-adds, billions).
PUBLISHED = {
    "efficientnet-b0": (5_288_548, 0.39),
    "efficientnet-b1": (7_794_184, 0.70),
    "efficientnet-b2": (9_109_994, 1.0),
    "efficientnet-b3": (12_233_232, 1.8),
    "efficientnet-b4": (19_341_616, 4.2),
    "efficientnet-b5": (30_389_784, 9.9),
    "efficientnet-b6": (43_040_704, 19.0),
    "efficientnet-b7": (66_347_960, 37.0),
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
        "| variant | resolution | params | reference params | GFLOPs (mult-adds) | paper GFLOPs | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["gflops"] / row["paper_gflops"] if row["paper_gflops"] else float("nan")
        reference = f"{row['reference_params']:,}" if row["reference_params"] else "-"
        paper = f"{row['paper_gflops']:g}" if row["paper_gflops"] else "-"
        lines.append(
            f"| {row['variant']} | {row['resolution']} | {row['params']:,} | {reference} | "
            f"{row['gflops']:.3f} | {paper} | {ratio:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variants", nargs="*", default=list(PUBLISHED), help="e.g. b0 efficientnet-b3")
    args = parser.parse_args()
    names = [scaling.variant_spec(v).name for v in args.variants]
    print(format_table(summary_rows(names)))


if __name__ == "__main__":
    main()
