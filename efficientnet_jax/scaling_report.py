"""The report of a sweep: one row per run (its scaling settings, the model's parameters and
multiply-adds from `accounting`, final top-1, status, whether it is on the accuracy/FLOPs Pareto
front) as CSV and Markdown, and PNG plots: accuracy vs FLOPs per scaling method (the paper's
Figures 3 and 4) and, for a grid search, the accuracy of each (alpha, beta, gamma) with the chosen
one marked.
"""

from __future__ import annotations

import csv
import functools
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import efficientnet_jax.datasets  # noqa: E402,F401  (registers sklearn_digits)
from efficientnet_jax import accounting, experiments, sweep_runner  # noqa: E402
from efficientnet_jax.configuration import model_spec_from_config  # noqa: E402

RUN_SETTINGS = ("name", "phi", "alpha", "beta", "gamma", "depth_multiplier", "width_multiplier",
                "resolution_multiplier")  # fmt: skip
COLUMNS = (*RUN_SETTINGS, "methods", "width", "depth", "resolution", "params", "multiply_adds",
           *experiments.METRICS, "step", "status", "pareto", "error")  # fmt: skip
CSV_FILE, MARKDOWN_FILE = "report.csv", "report.md"
ACCURACY_PLOT, GRID_PLOT = "accuracy_vs_flops.png", "grid_search.png"


@functools.cache
def num_classes(dataset: str, data_dir: str | None) -> int:
    """From the dataset's metadata: nothing is downloaded or prepared."""
    return tfds.builder(dataset, data_dir=data_dir).info.features["label"].num_classes


def model_accounting(config: dict) -> tuple[int, int]:
    """(trainable parameters, forward multiply-adds per image) of the model a run's config trains."""
    train = ml_collections.ConfigDict(config)
    spec = model_spec_from_config(train, num_classes(train.dataset, train.data_dir))
    return accounting.count_parameters(spec)["trainable"], accounting.count_multiply_adds(spec)


def collect_rows(workdir: str) -> tuple[dict, list[dict[str, Any]]]:
    """(the sweep's settings, one row per run) from the sweep's manifest and its run directories."""
    manifest = sweep_runner.read_manifest(workdir)
    metric = manifest["sweep"]["metric"]
    rows = []
    for run in manifest["runs"]:
        run_dir = os.path.join(workdir, run["name"])
        status = sweep_runner.run_status(run_dir)
        metrics = sweep_runner.final_metrics(run_dir) if status["status"] == "finished" else None
        params, multiply_adds = model_accounting(run["config"])
        rows.append(
            {
                **{key: run[key] for key in RUN_SETTINGS},
                "methods": ";".join(run["methods"]),
                "width": run["overrides"]["model.width"],
                "depth": run["overrides"]["model.depth"],
                "resolution": run["overrides"]["image_size"],
                "params": params,
                "multiply_adds": multiply_adds,
                **{key: metrics[key] if metrics else None for key in experiments.METRICS},
                "step": metrics["step"] if metrics else None,
                "status": status["status"],
                "error": status.get("error") if status["status"] == "failed" else None,
            }
        )
    scored = [row for row in rows if row[metric] is not None]
    front = experiments.pareto_front([(row["multiply_adds"], row[metric]) for row in scored])
    on_front = {row["name"]: flag for row, flag in zip(scored, front)}
    for row in rows:
        row["pareto"] = on_front.get(row["name"], False)
    return manifest["sweep"], rows


def chosen_grid_point(rows: list[dict], metric: str) -> dict | None:
    """The paper's choice after step 1: the best grid point (ties: fewer FLOPs)."""
    scored = [row for row in rows if row[metric] is not None and "grid_search" in row["methods"].split(";")]
    return max(scored, key=lambda row: (row[metric], -row["multiply_adds"])) if scored else None


def write_csv(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if row[k] is None else row[k]) for k in COLUMNS} for row in rows)


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def markdown(sweep: dict, rows: list[dict], plots: list[str]) -> str:
    metric = sweep["metric"]
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [
        f"# Scaling sweep: {sweep['method']}",
        "",
        f"{len(rows)} runs ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); "
        f"ranked by `{metric}`. "
        "FLOPs are forward multiply-adds per image; parameters are trainable ones. "
        "Pareto: no other run has fewer FLOPs and a higher score.",
        "",
    ]
    chosen = chosen_grid_point(rows, metric)
    if chosen:
        alpha, beta, gamma = chosen["alpha"], chosen["beta"], chosen["gamma"]
        lines += [
            f"**Chosen: alpha = {alpha:g}, beta = {beta:g}, gamma = {gamma:g}** "
            f"(alpha * beta^2 * gamma^2 = {experiments.flops_multiplier(alpha, beta, gamma):.3f}; "
            f"{_percent(chosen[metric])}% top-1, run `{chosen['name']}`).",
            "",
        ]
    lines += [
        "| run | methods | phi | alpha | beta | gamma | depth x | width x | resolution x | model.depth "
        "| model.width | image size | params | MFLOPs | raw top-1 % | EMA top-1 % | status | Pareto |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"`{row['name']}`",
            row["methods"].replace(";", ", "),
            *(
                _cell(row[k])
                for k in (
                    "phi",
                    "alpha",
                    "beta",
                    "gamma",
                    "depth_multiplier",
                    "width_multiplier",
                    "resolution_multiplier",
                    "depth",
                    "width",
                    "resolution",
                )
            ),
            f"{row['params']:,}",
            f"{row['multiply_adds'] / 1e6:.2f}",
            _percent(row["eval_raw_top1"]),
            _percent(row["eval_ema_top1"]),
            row["status"],
            _cell(row["pareto"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        lines += ["", "Failed runs:", ""] + [f"- `{row['name']}`: {row['error']}" for row in failed]
    lines += [""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_flops(rows: list[dict], metric: str, path: str) -> None:
    """One curve per scaling method, runs in order of FLOPs, grid points labelled with their alpha,
    beta, gamma and compound runs with their phi; the Pareto front circled."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    methods = list(dict.fromkeys(m for row in rows for m in row["methods"].split(";")))
    for method in methods:
        points = sorted(
            (row["multiply_adds"] / 1e6, 100 * row[metric])
            for row in rows
            if row[metric] is not None and method in row["methods"].split(";")
        )
        if points:
            style = "o" if method == "grid_search" else "o-"
            axes.plot(*zip(*points), style, label=method.replace("_", " "))
    for row in rows:
        if row[metric] is None or row["alpha"] is None:
            continue
        label = (
            f"phi={row['phi']:g}"
            if "compound" in row["methods"]
            else f"{row['alpha']:g}, {row['beta']:g}, {row['gamma']:g}"
        )
        axes.annotate(label, (row["multiply_adds"] / 1e6, 100 * row[metric]), textcoords="offset points",
                      xytext=(4, 4), fontsize=7)  # fmt: skip
    front = sorted((row["multiply_adds"] / 1e6, 100 * row[metric]) for row in rows if row["pareto"])
    if front:
        axes.plot(
            *zip(*front),
            "o",
            markersize=13,
            markerfacecolor="none",
            markeredgecolor="black",
            label="Pareto front",
        )
    axes.margins(x=0.12, y=0.08)  # room for the labels
    axes.set_xlabel("FLOPs (M multiply-adds per image)")
    axes.set_ylabel(f"{metric} (%)")
    axes.set_title("Accuracy vs FLOPs per scaling method")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_grid_search(rows: list[dict], metric: str, path: str) -> None:
    """The score of each grid point (alpha, beta, gamma), the chosen one highlighted."""
    grid = [row for row in rows if "grid_search" in row["methods"].split(";")]
    chosen = chosen_grid_point(rows, metric)
    figure, axes = plt.subplots(figsize=(max(6, 0.6 * len(grid) + 2), 4.5))
    labels = [f"{row['alpha']:g}, {row['beta']:g}, {row['gamma']:g}" for row in grid]
    scores = [100 * row[metric] if row[metric] is not None else 0.0 for row in grid]
    colors = [
        "tab:orange" if chosen is not None and row["name"] == chosen["name"] else "tab:blue" for row in grid
    ]
    axes.bar(range(len(grid)), scores, color=colors)
    axes.set_xticks(range(len(grid)), labels, rotation=60, ha="right", fontsize=8)
    axes.set_xlabel("alpha (depth), beta (width), gamma (resolution)")
    axes.set_ylabel(f"{metric} (%)")
    finite = [s for s in scores if s > 0]
    if finite:
        axes.set_ylim(max(0.0, min(finite) - 5), min(100.0, max(finite) + 2))
    if chosen is not None:
        axes.set_title(
            f"Grid search at phi = 1\nchosen alpha, beta, gamma = "
            f"{chosen['alpha']:g}, {chosen['beta']:g}, {chosen['gamma']:g}",
            fontsize=10,
        )
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(workdir: str, output_dir: str | None = None) -> dict[str, str]:
    """Writes the CSV, the Markdown table and the plots; returns {kind: path}."""
    output_dir = output_dir or os.path.join(workdir, "report")
    os.makedirs(output_dir, exist_ok=True)
    sweep, rows = collect_rows(workdir)
    metric = sweep["metric"]
    paths = {
        "csv": os.path.join(output_dir, CSV_FILE),
        "markdown": os.path.join(output_dir, MARKDOWN_FILE),
        "accuracy_plot": os.path.join(output_dir, ACCURACY_PLOT),
    }
    write_csv(rows, paths["csv"])
    plot_accuracy_vs_flops(rows, metric, paths["accuracy_plot"])
    plots = [ACCURACY_PLOT]
    if any("grid_search" in row["methods"].split(";") for row in rows):
        paths["grid_plot"] = os.path.join(output_dir, GRID_PLOT)
        plot_grid_search(rows, metric, paths["grid_plot"])
        plots.append(GRID_PLOT)
    with open(paths["markdown"], "w") as f:
        f.write(markdown(sweep, rows, plots))
    return paths
