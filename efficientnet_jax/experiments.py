"""Scaling experiments as data: a sweep config (`configs/scaling/`) expands into runs, each a name,
its scaling settings and the training-config values it changes; plus the grid-search constraint
and the accuracy/FLOPs Pareto front.

The paper's method (Tan & Le 2019, Section 3.3): step 1 fixes phi = 1 and grid-searches depth
alpha, width beta and resolution gamma under alpha * beta^2 * gamma^2 ~ 2 (FLOPs grow about as
d * w^2 * r^2); step 2 fixes them and scales the baseline by alpha^phi, beta^phi, gamma^phi. Its
Figures 3 and 4 compare with scaling a single dimension. Every multiplier here multiplies the base
training config's width, depth and image size, and lands in the model through the official rounding
(`scaling.round_filters`, `round_repeats`, `round_resolution`).

Everything here is a function of the sweep config (and of the base config file it names) with no
side effect; `sweep_runner.py` runs the runs and `scaling_report.py` summarises them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from efficientnet_jax import errors, scaling

METHODS = ("grid_search", "compound", "single_dimension")
METRICS = ("eval_ema_top1", "eval_raw_top1")  # what a sweep can be ranked by (train.py's final metrics)
# Floating-point slack on the constraint, so a product exactly at the tolerance counts as inside.
_CONSTRAINT_SLACK = 1e-9
# Scaled widths and depths are rounded to this many decimals: 1.21, not 1.2100000000000002 (1.1**2).
_COEFFICIENT_DECIMALS = 10


class SweepError(errors.UserError, ValueError):
    """A sweep that cannot run; raised before any run starts, naming the field and the fix."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep. `methods` are the curves it belongs to ('grid_search',
    'compound', 'width', 'depth', 'resolution', 'width (d=2, r=1.3)'): a run shared by several
    single-dimension curves (the unscaled baseline) is trained once."""

    name: str
    methods: tuple[str, ...]
    depth_multiplier: float
    width_multiplier: float
    resolution_multiplier: float
    overrides: dict[str, Any]  # dotted training-config keys -> values, e.g. {"model.width": 0.55}
    phi: float | None = None
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None


def flops_multiplier(alpha: float, beta: float, gamma: float) -> float:
    """The paper's FLOPs factor per unit of phi: alpha * beta^2 * gamma^2."""
    return alpha * beta**2 * gamma**2


def satisfies_constraint(alpha: float, beta: float, gamma: float, target: float, tolerance: float) -> bool:
    """alpha * beta^2 * gamma^2 within `tolerance` (relative) of `target`."""
    return abs(flops_multiplier(alpha, beta, gamma) / target - 1.0) <= tolerance + _CONSTRAINT_SLACK


def grid_points(
    alphas: Sequence[float], betas: Sequence[float], gammas: Sequence[float], target: float, tolerance: float
) -> list[tuple[float, float, float]]:
    """The (alpha, beta, gamma) of the full grid that satisfy the constraint, in grid order."""
    return [
        (alpha, beta, gamma)
        for alpha, beta, gamma in itertools.product(alphas, betas, gammas)
        if satisfies_constraint(alpha, beta, gamma, target, tolerance)
    ]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (cost, value) points: True where no other point costs at most as much and scores at least
    as high, one of the two strictly (fewer FLOPs is better, higher accuracy is better)."""

    def dominated(cost, value):
        return any(
            other_cost <= cost and other_value >= value and (other_cost < cost or other_value > value)
            for other_cost, other_value in points
        )

    return [not dominated(cost, value) for cost, value in points]


def _number(value: float) -> str:
    return f"{value:g}"


def base_coefficients(train: ml_collections.ConfigDict) -> tuple[float, float, int]:
    """(width, depth, image size) of the unscaled training config: the variant's coefficients and size
    unless the config sets its own."""
    try:
        variant = scaling.variant_spec(train.model.variant)
    except ValueError as error:
        raise SweepError(f"config.train.model.variant: {error}") from error
    width = train.model.width if train.model.width is not None else variant.width
    depth = train.model.depth if train.model.depth is not None else variant.depth
    return width, depth, train.image_size or variant.resolution


def _scaled_run(
    train: ml_collections.ConfigDict,
    name: str,
    methods: tuple[str, ...],
    depth_multiplier: float,
    width_multiplier: float,
    resolution_multiplier: float,
    resolution: int,
    resolution_divisor: int,
    **settings: float | None,
) -> Run:
    width, depth, _ = base_coefficients(train)
    overrides = {
        "model.width": round(width * width_multiplier, _COEFFICIENT_DECIMALS),
        "model.depth": round(depth * depth_multiplier, _COEFFICIENT_DECIMALS),
        "image_size": resolution,
    }
    if train.get("train_image_size"):  # EfficientNetV2 trains smaller than it evaluates: both sizes scale
        overrides["train_image_size"] = scaling.round_resolution(
            train.train_image_size, resolution_multiplier, resolution_divisor
        )
    return Run(
        name, methods, depth_multiplier, width_multiplier, resolution_multiplier, overrides, **settings
    )


def _compound_run(train, sweep, methods, phi, alpha, beta, gamma, name) -> Run:
    width_multiplier, depth_multiplier, resolution = scaling.compound_coefficients(
        phi,
        alpha,
        beta,
        gamma,
        base_resolution=base_coefficients(train)[2],
        resolution_divisor=sweep.resolution_divisor,
    )
    return _scaled_run(
        train,
        name,
        methods,
        depth_multiplier,
        width_multiplier,
        gamma**phi,
        resolution,
        sweep.resolution_divisor,
        phi=phi,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
    )


def _grid_search_runs(config: ml_collections.ConfigDict) -> list[Run]:
    sweep = config.sweep
    points = grid_points(sweep.alphas, sweep.betas, sweep.gammas, sweep.target, sweep.tolerance)
    if not points:
        products = sorted(
            (abs(flops_multiplier(*p) - sweep.target), flops_multiplier(*p), p)
            for p in itertools.product(sweep.alphas, sweep.betas, sweep.gammas)
        )
        closest = ", ".join(f"{a:g}*{b:g}^2*{g:g}^2={v:.3f}" for _, v, (a, b, g) in products[:3])
        raise SweepError(
            f"No grid point satisfies alpha*beta^2*gamma^2 = {sweep.target:g} within a relative tolerance of "
            f"{sweep.tolerance:g}; the closest are {closest}. Widen config.sweep.tolerance or change "
            f"config.sweep.alphas/betas/gammas."
        )
    return [
        _compound_run(
            config.train, sweep, ("grid_search",), 1.0, a, b, g, f"a{_number(a)}_b{_number(b)}_g{_number(g)}"
        )
        for a, b, g in points
    ]


def _compound_runs(config: ml_collections.ConfigDict) -> list[Run]:
    sweep = config.sweep
    return [
        _compound_run(
            config.train,
            sweep,
            ("compound",),
            float(phi),
            sweep.alpha,
            sweep.beta,
            sweep.gamma,
            f"phi{_number(phi)}_a{_number(sweep.alpha)}_b{_number(sweep.beta)}_g{_number(sweep.gamma)}",
        )
        for phi in sweep.phis
    ]


def _single_dimension_runs(config: ml_collections.ConfigDict) -> list[Run]:
    sweep, train = config.sweep, config.train
    curves = [("width", (w, 1.0, 1.0)) for w in sweep.width_multipliers]
    curves += [("depth", (1.0, d, 1.0)) for d in sweep.depth_multipliers]
    curves += [("resolution", (1.0, 1.0, r)) for r in sweep.resolution_multipliers]
    for depth, resolution in sweep.combined_depth_resolution:
        curves += [
            (f"width (d={_number(depth)}, r={_number(resolution)})", (w, depth, resolution))
            for w in sweep.width_multipliers
        ]
    runs = []
    for method, (w, d, r) in curves:
        resolution = scaling.round_resolution(base_coefficients(train)[2], r, sweep.resolution_divisor)
        runs.append(
            _scaled_run(
                train, f"w{_number(w)}_d{_number(d)}_r{_number(r)}", (method,), d, w, r, resolution,
                sweep.resolution_divisor,
            )
        )
    return runs


def _merge_duplicates(runs: list[Run]) -> list[Run]:
    """One run per name, in first-seen order, belonging to every curve that asked for it."""
    merged: dict[str, Run] = {}
    for run in runs:
        if run.name not in merged:
            merged[run.name] = run
            continue
        previous = merged[run.name]
        if previous.overrides != run.overrides:
            raise SweepError(
                f"Two runs are named {run.name!r} but train differently: "
                f"{previous.overrides} vs {run.overrides}."
            )
        methods = previous.methods + tuple(m for m in run.methods if m not in previous.methods)
        merged[run.name] = dataclasses.replace(previous, methods=methods)
    return list(merged.values())


def _check_positive(name: str, values: Sequence[float]) -> None:
    bad = [v for v in values if not v > 0]
    if bad:
        raise SweepError(f"config.sweep.{name} must all be positive, got {tuple(values)} (bad: {bad}).")


def validate_sweep(config: ml_collections.ConfigDict) -> None:
    """Every mistake a sweep config can hold, found before any run starts."""
    sweep, train = config.sweep, config.train
    if sweep.method not in METHODS:
        raise SweepError(f"config.sweep.method={sweep.method!r} is not one of {', '.join(METHODS)}.")
    try:
        scaling.get_baseline(train.model.baseline)
        if train.model.block_strings:
            scaling.stages_from_block_strings(train.model.block_strings)
    except ValueError as error:
        raise SweepError(f"config.train.model: {error}") from error
    base_coefficients(train)
    if sweep.metric not in METRICS:
        raise SweepError(f"config.sweep.metric={sweep.metric!r} is not one of {', '.join(METRICS)}.")
    if sweep.resolution_divisor <= 0:
        raise SweepError(f"config.sweep.resolution_divisor must be positive, got {sweep.resolution_divisor}.")
    if sweep.method == "grid_search":
        for name in ("alphas", "betas", "gammas"):
            if not sweep[name]:
                raise SweepError(f"config.sweep.{name} is empty: give at least one multiplier.")
            _check_positive(name, sweep[name])
        if sweep.target <= 0 or sweep.tolerance < 0:
            raise SweepError(
                f"config.sweep.target must be positive and config.sweep.tolerance non-negative, "
                f"got {sweep.target} and {sweep.tolerance}."
            )
    elif sweep.method == "compound":
        _check_positive("alpha, beta and gamma", (sweep.alpha, sweep.beta, sweep.gamma))
        if not sweep.phis:
            raise SweepError("config.sweep.phis is empty: give at least one phi.")
    else:
        for name in ("width_multipliers", "depth_multipliers", "resolution_multipliers"):
            _check_positive(name, sweep[name])
        pairs = [tuple(pair) for pair in sweep.combined_depth_resolution]
        if any(len(pair) != 2 for pair in pairs):
            raise SweepError(
                f"config.sweep.combined_depth_resolution must hold (depth, resolution) pairs, got {pairs}."
            )
        _check_positive("combined_depth_resolution", [v for pair in pairs for v in pair])
        if pairs and not sweep.width_multipliers:
            raise SweepError(
                "config.sweep.combined_depth_resolution sweeps width: set config.sweep.width_multipliers."
            )
        if not (sweep.width_multipliers or sweep.depth_multipliers or sweep.resolution_multipliers):
            raise SweepError(
                "The single-dimension sweep is empty: set config.sweep.width_multipliers, "
                "depth_multipliers or resolution_multipliers."
            )


def expand_sweep(config: ml_collections.ConfigDict) -> list[Run]:
    """The runs of a sweep config, validated (`SweepError` before anything runs)."""
    validate_sweep(config)
    expand = {
        "grid_search": _grid_search_runs,
        "compound": _compound_runs,
        "single_dimension": _single_dimension_runs,
    }
    return _merge_duplicates(expand[config.sweep.method](config))


def run_config(train: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
    """The full training config of one run: the sweep's training config with the run's values."""
    config = ml_collections.ConfigDict(train.to_dict())
    for key, value in run.overrides.items():
        *parents, leaf = key.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """{'model.width': 0.5, ...}, tuples and lists alike as tuples."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _as_tuple(value)
    return flat


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def format_flag_value(value: Any) -> str:
    """The text ml_collections' config flags parse back to `value` (bool, int, float, str, tuple)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return repr(value)
    raise SweepError(f"Cannot pass a {type(value).__name__} value ({value!r}) as a train.py flag.")


def load_config_file(spec: str, repo_root: str) -> ml_collections.ConfigDict:
    """Calls `get_config([arg])` of a config file named 'path/to/file.py[:arg]' (relative to the
    repository), as train.py's --config flag does."""
    path, _, arg = spec.partition(":")
    full_path = os.path.join(repo_root, path)
    if not os.path.isfile(full_path):
        raise SweepError(f"config.sweep.base_config={spec!r}: no file {full_path}.")
    module_spec = importlib.util.spec_from_file_location("_sweep_base_config", full_path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def train_flags(config: ml_collections.ConfigDict, base: ml_collections.ConfigDict) -> list[str]:
    """`--config.key=value` for every value where a run's config differs from the base config file,
    so `train.py --config=<base file> <flags>` trains exactly `config`."""
    flat, flat_base = flatten(config), flatten(base)
    flags = []
    for key, value in sorted(flat.items()):
        if key not in flat_base:
            raise SweepError(
                f"config.train.{key} is not a field of the base config: train.py would reject it."
            )
        if value == flat_base[key]:
            continue
        if value is None:
            raise SweepError(
                f"config.train.{key} is None but the base config sets it; None cannot be passed as a flag."
            )
        flags.append(f"--config.{key}={format_flag_value(value)}")
    return flags


def train_command(
    config: ml_collections.ConfigDict, base: ml_collections.ConfigDict, base_spec: str, workdir: str
) -> list[str]:
    """The train.py arguments of one run, run from the repository root (the interpreter not included)."""
    return ["train.py", f"--config={base_spec}", f"--workdir={workdir}", *train_flags(config, base)]


def config_as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as it reads back from JSON (what the manifest stores and report.py reads)."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def manifest(config: ml_collections.ConfigDict, runs: Sequence[Run], workdir: str, repo_root: str) -> dict:
    """What sweep.py records in `<workdir>/sweep.json` and report.py reads: the sweep settings and,
    per run, its settings, its full training config and its train.py command."""
    base_spec = config.sweep.base_config
    base = load_config_file(base_spec, repo_root)
    entries = []
    for run in runs:
        config_of_run = run_config(config.train, run)
        entries.append(
            {
                **dataclasses.asdict(run),
                "command": train_command(config_of_run, base, base_spec, os.path.join(workdir, run.name)),
                "config": config_as_json(config_of_run),
            }
        )
    return {"sweep": config_as_json(config.sweep), "runs": entries}
