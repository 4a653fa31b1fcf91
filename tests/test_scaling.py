"""Scaling experiments: the rules (grid constraint, compound FLOPs growth, multipliers landing in the
model, the MobileNetV2 baseline, the Pareto front), clear errors for bad sweeps, a failed run that
does not stop a sweep, and a tiny grid search end to end through sweep.py (stopped mid-run and
restarted) and report.py."""

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from configs.scaling import compound, grid_search, single_dimension
from efficientnet_jax import accounting, configuration, experiments, scaling, scaling_report, sweep_runner
from efficientnet_jax.model import EfficientNet
from tests import xla_flags
from tests.workers.tiny_config import with_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = {
    "grid_search.py": grid_search,
    "compound.py": compound,
    "single_dimension.py": single_dimension,
}


def sweep_config(config_file: str, arg: str = "", **overrides) -> ml_collections.ConfigDict:
    """A configs/scaling/ config with dotted-key overrides, e.g. `**{"sweep.phis": (1.0,)}`."""
    return with_overrides(CONFIG_FILES[config_file].get_config(arg), **overrides)


def run_spec(config: ml_collections.ConfigDict, run: experiments.Run, num_classes: int = 10):
    return configuration.model_spec_from_config(experiments.run_config(config.train, run), num_classes)


# The rules.


def test_grid_keeps_exactly_the_points_within_the_tolerance():
    alphas = tuple(np.round(np.arange(1.0, 2.21, 0.1), 2))
    betas = gammas = tuple(np.round(np.arange(1.0, 1.31, 0.05), 2))
    target, tolerance = 2.0, 0.04
    config = sweep_config(
        "grid_search.py",
        **{
            "sweep.alphas": alphas,
            "sweep.betas": betas,
            "sweep.gammas": gammas,
            "sweep.target": target,
            "sweep.tolerance": tolerance,
        },
    )
    runs = experiments.expand_sweep(config)
    kept = {(run.alpha, run.beta, run.gamma) for run in runs}
    assert len(kept) == len(runs) > 10
    inside = outside = 0
    for alpha, beta, gamma in itertools.product(alphas, betas, gammas):
        deviation = abs(alpha * beta * beta * gamma * gamma / target - 1.0)
        if abs(deviation - tolerance) < 1e-9:
            continue  # on the boundary to rounding error: either answer is right
        assert ((alpha, beta, gamma) in kept) == (deviation < tolerance), (alpha, beta, gamma, deviation)
        inside += deviation < tolerance
        outside += deviation > tolerance
    assert inside == len(kept) and outside > inside
    for run in runs:  # step 1 is at phi = 1: alpha, beta, gamma are the multipliers themselves
        assert (run.phi, run.depth_multiplier, run.width_multiplier, run.resolution_multiplier) == (
            1.0,
            run.alpha,
            run.beta,
            run.gamma,
        )
    # The default grid holds the paper's choice, and a point exactly at the tolerance is kept.
    assert (1.2, 1.1, 1.15) in {
        (r.alpha, r.beta, r.gamma) for r in experiments.expand_sweep(sweep_config("grid_search.py"))
    }
    edge = sweep_config(
        "grid_search.py", **{"sweep.alphas": (2.1, 2.11), "sweep.betas": (1.0,), "sweep.gammas": (1.0,)}
    )
    assert [r.name for r in experiments.expand_sweep(edge)] == ["a2.1_b1_g1"]


def test_compound_scaled_b0_flops_grow_as_alpha_beta2_gamma2_to_the_phi():
    """B0 at 224 pixels scaled with the paper's alpha, beta, gamma. The official rounding (repeats
    rounded up, widths to multiples of 8, resolution to multiples of 8, feature maps rounded up at
    each stride) makes single phis overshoot (2.23, 4.69, 8.43 times B0's FLOPs against
    1.92, 3.69, 7.08); the growth per unit of phi over phi = 0..3 is within 15% of 1.92."""
    config = sweep_config(
        "compound.py", "base=imagenet,alpha=1.2,beta=1.1,gamma=1.15", **{"sweep.phis": (0.0, 1.0, 2.0, 3.0)}
    )
    runs = experiments.expand_sweep(config)
    specs = {run.phi: run_spec(config, run, 1000) for run in runs}
    b0 = scaling.variant_spec("b0")
    assert (specs[0.0].width, specs[0.0].depth, specs[0.0].resolution, specs[0.0].stages) == (
        b0.width,
        b0.depth,
        b0.resolution,
        b0.stages,
    )  # phi = 0 is B0 itself
    flops = {phi: accounting.count_multiply_adds(spec) for phi, spec in specs.items()}
    per_phi = experiments.flops_multiplier(1.2, 1.1, 1.15)
    for phi in (1.0, 2.0, 3.0):
        growth = flops[phi] / flops[0.0]
        print(f"phi={phi:g}: FLOPs x{growth:.3f}, (alpha*beta^2*gamma^2)^phi = {per_phi**phi:.3f}")
        assert abs(growth / per_phi**phi - 1) < 0.30, (phi, growth)
    assert abs((flops[3.0] / flops[0.0]) ** (1 / 3) / per_phi - 1) < 0.15


def test_multipliers_land_in_the_model_as_the_rounding_rules_say():
    """Every single-dimension and combined run of the offline proxy (B0 at width 0.5, depth 0.5, 32
    pixels): the traced model's stem, stage widths, block counts and head, and its input size."""
    config = sweep_config(
        "single_dimension.py",
        **{
            "sweep.width_multipliers": (0.75, 2.6),
            "sweep.depth_multipliers": (1.5, 3.0),
            "sweep.resolution_multipliers": (1.15, 1.5),
            "sweep.combined_depth_resolution": ((2.0, 1.3),),
        },
    )
    runs = experiments.expand_sweep(config)
    assert len(runs) == 2 + 2 + 2 + 2
    resolutions = {}
    for run in runs:
        trained = experiments.run_config(config.train, run)
        width, depth, resolution = trained.model.width, trained.model.depth, trained.image_size
        assert (width, depth) == pytest.approx((0.5 * run.width_multiplier, 0.5 * run.depth_multiplier))
        resolutions[run.resolution_multiplier] = resolution
        assert resolution == scaling.round_resolution(32, run.resolution_multiplier, divisor=4)
        spec = run_spec(config, run)
        assert spec.resolution == resolution
        shapes = jax.eval_shape(
            lambda x, spec=spec: EfficientNet(spec).init(jax.random.key(0), x),
            jnp.zeros((1, resolution, resolution, 3)),
        )["params"]
        assert shapes["stem_conv"]["kernel"].shape[-1] == scaling.round_filters(32, width)
        assert shapes["head_conv"]["kernel"].shape[-1] == scaling.round_filters(1280, width)
        block = 0
        for stage in scaling.EFFICIENTNET_B0_STAGES:
            for _ in range(scaling.round_repeats(stage.repeats, depth)):
                assert shapes[f"block_{block}"]["project_conv"]["kernel"].shape[-1] == scaling.round_filters(
                    stage.output_filters, width
                ), (run.name, block)
                block += 1
        assert f"block_{block}" not in shapes, run.name
    # Hand-checked roundings to multiples of 4: 36.8 -> 36, 48 -> 48, 41.6 -> 40.
    assert resolutions == {1.0: 32, 1.15: 36, 1.5: 48, 1.3: 40}
    assert scaling.compound_coefficients(1.0)[2] == 256  # 224 * 1.15 = 257.6 -> 256 (multiples of 8)


def test_mobilenetv2_baseline_is_torchvisions_and_scales_like_b0():
    config = default.get_config()
    config.model.baseline = "mobilenetv2"
    spec = configuration.model_spec_from_config(config, 1000)
    # torchvision's MobileNet_V2 (ImageNet weights): 3,504,872 parameters, 0.30 GFLOPs.
    assert accounting.count_parameters(spec)["trainable"] == 3_504_872
    assert abs(accounting.count_multiply_adds(spec) / 0.30e9 - 1) < 0.02
    params = jax.eval_shape(
        lambda x: EfficientNet(spec).init(jax.random.key(0), x), jnp.zeros((1, 224, 224, 3))
    )["params"]
    blocks = [params[name] for name in params if name.startswith("block_")]
    assert len(blocks) == 17 and not any("se" in block for block in blocks)  # no squeeze-and-excitation
    assert spec.activation == "relu6" and spec.name == "mobilenetv2"

    sweep = sweep_config("compound.py", "base=imagenet,baseline=mobilenetv2,phi=1")
    (run,) = experiments.expand_sweep(sweep)
    scaled = run_spec(sweep, run, 1000)
    assert scaled.stages == spec.stages and (scaled.width, scaled.depth, scaled.resolution) == (1.1, 1.2, 256)


def test_pareto_front_keeps_the_runs_nothing_beats():
    points = [(1.0, 0.50), (2.0, 0.60), (2.0, 0.55), (3.0, 0.60), (0.5, 0.40), (4.0, 0.90), (4.0, 0.90)]
    assert experiments.pareto_front(points) == [True, True, False, False, True, True, True]


@pytest.mark.parametrize(
    "config_file, arg, overrides, match",
    [
        ("grid_search.py", "tolerance=0.001", {"sweep.alphas": (1.0, 1.5)}, "No grid point satisfies"),
        ("grid_search.py", "baseline=resnet50", {}, "Unknown baseline 'resnet50'"),
        ("grid_search.py", "", {"sweep.betas": (1.0, -1.1)}, "sweep.betas must all be positive"),
        (
            "single_dimension.py",
            "",
            {"sweep.width_multipliers": (1.0, 0.0)},
            "width_multipliers must all be positive",
        ),
        (
            "single_dimension.py",
            "",
            {"sweep.combined_depth_resolution": ((2.0, 0.0),)},
            "must all be positive",
        ),
        ("compound.py", "phi=2,alpha=0", {}, "alpha, beta and gamma must all be positive"),
        ("compound.py", "", {"train.model.block_strings": ("r1_k3_s11_e1_o16",)}, "lacks fields"),
    ],
)
def test_a_bad_sweep_is_a_clear_error(config_file, arg, overrides, match):
    with pytest.raises(experiments.SweepError, match=match):
        experiments.expand_sweep(sweep_config(config_file, arg, **overrides))


def test_sweep_py_rejects_a_bad_sweep_before_any_run(tmp_path):
    workdir = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            "sweep.py",
            "--config=configs/scaling/grid_search.py:tolerance=0.0001",
            "--config.sweep.alphas=(1.0, 1.5)",
            f"--workdir={workdir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert (
        "Bad sweep: No grid point satisfies" in result.stderr
        and "Widen config.sweep.tolerance" in result.stderr
    )
    assert not workdir.exists()
    with pytest.raises(ValueError, match="tolerence=0.1"):
        grid_search.get_config("tolerence=0.1")


def test_a_failed_run_is_recorded_and_does_not_stop_the_others(tmp_path):
    """Commands standing in for train.py: one that finishes (writes final metrics at the last step),
    one that dies with an error."""
    finish = (
        "import json, sys; "
        "json.dump({'step': 3, 'num_train_steps': 3}, open(sys.argv[1] + '/final_metrics.json', 'w'))"
    )
    die = "import sys; sys.exit('ConfigError: config.batch_size must be positive, got 0.')"
    workdir = str(tmp_path)
    runs = [(name, ["-c", finish, os.path.join(workdir, name)]) for name in ("first", "third")]
    runs.insert(1, ("second", ["-c", die]))
    messages = []
    statuses = sweep_runner.run_sweep(runs, workdir, cwd=REPO, log=messages.append)
    assert [s["status"] for s in statuses.values()] == ["finished", "failed", "finished"]
    recorded = json.loads((tmp_path / "second" / "status.json").read_text())
    assert recorded["status"] == "failed" and recorded["returncode"] == 1
    assert "config.batch_size must be positive" in recorded["error"]

    # Started again: finished runs are skipped, the failed one is tried again.
    statuses = sweep_runner.run_sweep(runs, workdir, cwd=REPO, log=messages.append)
    assert statuses["second"]["attempts"] == 2 and statuses["first"].get("attempts") == 1
    assert sum("finished before, skipped" in m for m in messages) == 2

    # A second sweep on the same workdir while one runs is refused.
    with sweep_runner.sweep_lock(workdir), pytest.raises(experiments.SweepError, match="Another sweep"):
        sweep_runner.run_sweep(runs, workdir, cwd=REPO, log=messages.append)


def test_a_workdir_holding_runs_of_another_experiment_is_refused(tmp_path):
    """Restarting with changed settings must not skip or resume runs trained with the old ones."""
    config = sweep_config("grid_search.py")
    manifest = experiments.manifest(config, experiments.expand_sweep(config), str(tmp_path), REPO)
    first = manifest["runs"][0]
    (tmp_path / first["name"]).mkdir()
    (tmp_path / first["name"] / "config.json").write_text(json.dumps(first["config"]))
    sweep_runner.check_existing_runs(str(tmp_path), manifest)  # the same settings: resumed or skipped

    longer = sweep_config("grid_search.py", **{"train.num_epochs": 20.0})
    changed = experiments.manifest(longer, experiments.expand_sweep(longer), str(tmp_path), REPO)
    with pytest.raises(experiments.SweepError, match="other settings \\(differing: num_epochs\\)"):
        sweep_runner.check_existing_runs(str(tmp_path), changed)


# A tiny grid search, end to end: two grid points of a two-stage baseline of our own at 16 pixels,
# 40 steps each, on one CPU device; stopped with SIGTERM while the second run trains, then restarted.

TINY_GRID = [
    "--config=configs/scaling/grid_search.py",
    "--config.sweep.alphas=(1.0, 2.0)",
    "--config.sweep.betas=(1.0,)",
    "--config.sweep.gammas=(1.0, 1.4)",
    "--config.train.model.block_strings=('r1_k3_s22_e1_i32_o16_se0.25', 'r1_k3_s22_e6_i16_o24_se0.25')",
    "--config.train.model.width=0.25",
    "--config.train.model.depth=1.0",
    "--config.train.image_size=16",
    "--config.train.batch_size=16",
    "--config.train.num_train_steps=40",
    "--config.train.log_every_steps=1",
]
# name: depth, width, image size
TINY_GRID_RUNS = {"a1_b1_g1.4": (1.0, 0.25, 24), "a2_b1_g1": (2.0, 0.25, 16)}


def _wait_for(condition, process, timeout_s=600):
    deadline = time.time() + timeout_s
    while not condition():
        assert process.poll() is None, f"sweep.py exited early: {process.communicate()[0][-3000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tiny_grid(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grid")
    command = [
        sys.executable,
        "sweep.py",
        *TINY_GRID,
        f"--config.train.data_dir={data_dir}",
        f"--workdir={workdir}",
    ]
    # One device per run; the least XLA optimisation: these runs test the bookkeeping, not speed.
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        XLA_FLAGS=xla_flags.for_devices(1),
    )
    first_run, second_run = TINY_GRID_RUNS
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    second_log = workdir / second_run / "train.log"
    _wait_for(lambda: second_log.exists() and "step 2/40" in second_log.read_text(), process)
    process.send_signal(signal.SIGTERM)
    stopped_output, _ = process.communicate(timeout=300)
    finished_first = workdir / first_run / "final_metrics.json"
    stopped = {
        "returncode": process.returncode,
        "output": stopped_output,
        "statuses": {name: sweep_runner.run_status(str(workdir / name)) for name in TINY_GRID_RUNS},
        "first_run_mtime": finished_first.stat().st_mtime_ns,
    }
    restarted = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    # What report.py does, in this process: a subprocess would spend seconds importing TensorFlow again.
    report = scaling_report.write_report(str(workdir))
    return {
        "workdir": workdir,
        "stopped": stopped,
        "restarted": restarted,
        "report": report,
        "first_run_mtime": finished_first.stat().st_mtime_ns,
    }


def test_sweep_stopped_mid_run_finishes_the_rest_when_restarted(tiny_grid):
    first_run, second_run = TINY_GRID_RUNS
    stopped = tiny_grid["stopped"]
    assert stopped["returncode"] != 0 and "run the same command again" in stopped["output"]
    assert [stopped["statuses"][name]["status"] for name in TINY_GRID_RUNS] == ["finished", "interrupted"]

    restarted = tiny_grid["restarted"]
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
    assert f"{first_run}: finished before, skipped" in restarted.stdout
    assert tiny_grid["first_run_mtime"] == stopped["first_run_mtime"]  # not trained again
    second_log = (tiny_grid["workdir"] / second_run / "train.log").read_text()
    stopped_at = int(second_log.split("Stopped at step ")[1].split(" ")[0])
    assert 2 <= stopped_at < 40 and f"Resumed from the checkpoint of step {stopped_at}" in second_log
    for name in TINY_GRID_RUNS:
        status = sweep_runner.run_status(str(tiny_grid["workdir"] / name))
        metrics = sweep_runner.final_metrics(str(tiny_grid["workdir"] / name))
        assert status["status"] == "finished" and metrics["step"] == metrics["num_train_steps"] == 40
        assert status["attempts"] == (2 if name == second_run else 1)


def test_each_run_trains_its_grid_point(tiny_grid):
    """What train.py recorded for each run: the scaled baseline the grid point asks for."""
    manifest = json.loads((tiny_grid["workdir"] / "sweep.json").read_text())
    for run in manifest["runs"]:
        trained = json.loads((tiny_grid["workdir"] / run["name"] / "config.json").read_text())
        assert trained == run["config"]
        depth, width, image_size = TINY_GRID_RUNS[run["name"]]
        assert (trained["model"]["depth"], trained["model"]["width"], trained["image_size"]) == (
            depth,
            width,
            image_size,
        )
        assert trained["model"]["block_strings"] == [
            "r1_k3_s22_e1_i32_o16_se0.25",
            "r1_k3_s22_e6_i16_o24_se0.25",
        ]


def test_report_has_a_row_per_run_with_the_models_accounting(tiny_grid):
    report_dir = tiny_grid["workdir"] / "report"
    assert tiny_grid["report"]["csv"] == str(report_dir / "report.csv")
    with open(report_dir / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["name"] for row in rows] == list(TINY_GRID_RUNS)
    for row in rows:
        config = ml_collections.ConfigDict(
            json.loads((tiny_grid["workdir"] / row["name"] / "config.json").read_text())
        )
        spec = configuration.model_spec_from_config(config, num_classes=10)
        assert int(row["params"]) == accounting.count_parameters(spec)["trainable"]
        assert int(row["multiply_adds"]) == accounting.count_multiply_adds(spec)
        metrics = json.loads((tiny_grid["workdir"] / row["name"] / "final_metrics.json").read_text())
        assert float(row["eval_ema_top1"]) == metrics["eval_ema_top1"] and row["status"] == "finished"
    assert len({row["multiply_adds"] for row in rows}) == len(rows)  # different networks
    assert any(row["pareto"] == "True" for row in rows)

    markdown = (report_dir / "report.md").read_text()
    table_rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in table_rows] == list(TINY_GRID_RUNS)
    assert "**Chosen: alpha = " in markdown
    for name in ("accuracy_vs_flops.png", "grid_search.png"):
        data = (report_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
        assert f"]({name})" in markdown


def test_a_v2_sweep_scales_the_train_size_with_the_eval_size():
    """EfficientNetV2 trains smaller than it evaluates (V2-B0: 192 and 224): a compound run at
    phi = 1 scales both by gamma, each rounded to the sweep's divisor, so progressive learning's
    final stage grows with the network."""
    config = sweep_config("compound.py", "base=imagenet_v2", **{"sweep.phis": (1.0,)})
    (run,) = experiments.expand_sweep(config)
    scaled = experiments.run_config(config.train, run)
    divisor = config.sweep.resolution_divisor
    assert scaled.image_size == scaling.round_resolution(224, run.resolution_multiplier, divisor)
    assert scaled.train_image_size == scaling.round_resolution(192, run.resolution_multiplier, divisor)
    assert scaled.train_image_size < scaled.image_size and scaled.train_image_size != 192
