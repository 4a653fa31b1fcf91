"""Evaluating saved checkpoints: the library behind eval.py.

A checkpoint is a step directory `<workdir>/checkpoints/<step>/` with the items `state` (the
TrainState) and `model` (the ModelSpec as JSON), written by training or by `python -m
efficientnet_jax.pretrained`. Evaluation restores from `state` only the two collections it needs
(orbax partial restore): it reads neither the optimizer state nor the other weights, so it works
whatever optimizer wrote the checkpoint. Batches come from the config's eval pipeline (padded and
masked) and go through `trainer.eval_step` pmapped over every local device, whose sums are psummed
over all hosts, so every example of the split counts exactly once.

Only process 0 reads checkpoint files and writes results; what it read is broadcast to the other
hosts, as in checkpointing.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import time
from typing import Any, Callable, Iterator, Optional, TypeVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from efficientnet_jax import checkpointing, input_pipeline, trainer
from efficientnet_jax.checkpointing import CheckpointError
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.scaling import ModelSpec

CHECKPOINTS_DIRECTORY = "checkpoints"  # under a workdir, as train_and_evaluate writes them
FINAL_METRICS_FILE = "final_metrics.json"  # written by train_and_evaluate when the job ends
# The TrainState fields holding the variables evaluated with each choice of --weights.
WEIGHT_FIELDS = {"ema": ("ema_params", "ema_batch_stats"), "raw": ("params", "batch_stats")}

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class CheckpointLocation:
    """One checkpoint step directory, and the directory its results are written to by default."""

    step_directory: str
    step: int
    results_directory: str  # the workdir; for a checkpoint outside a workdir, the directory holding it


def checkpoint_steps(workdir: str) -> list[int]:
    """The complete (finalized) checkpoint steps of a workdir, ascending; saves in flight are left out."""
    directory = os.path.join(workdir, CHECKPOINTS_DIRECTORY)
    return sorted(ocp.utils.checkpoint_steps(directory)) if os.path.isdir(directory) else []


def is_step_directory(path: str) -> bool:
    return (
        os.path.basename(path).isdigit()
        and all(os.path.isdir(os.path.join(path, item)) for item in ("state", "model"))
        and ocp.step.is_checkpoint_finalized(path)
    )


def step_location(step_directory: str) -> CheckpointLocation:
    step_directory = os.path.abspath(step_directory)
    holder = os.path.dirname(step_directory)
    in_workdir = os.path.basename(holder) == CHECKPOINTS_DIRECTORY
    return CheckpointLocation(
        step_directory=step_directory,
        step=int(os.path.basename(step_directory)),
        results_directory=os.path.dirname(holder) if in_workdir else holder,
    )


def locate_checkpoint(path: str, step: Optional[int] = None) -> CheckpointLocation:
    """Resolves eval.py's --checkpoint (and --step): a step directory, or a workdir (its newest step, or
    `step`). Every failure names what was found and what is accepted."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"--checkpoint={path} does not exist.")
    if is_step_directory(path):
        location = step_location(path)
        if step is not None and step != location.step:
            raise CheckpointError(
                f"--step={step} contradicts --checkpoint={path}, the checkpoint of step {location.step}. "
                f"Drop --step, or pass the workdir as --checkpoint."
            )
        return location
    steps = checkpoint_steps(path)
    if not steps:
        raise CheckpointError(
            f"--checkpoint={path} is not a checkpoint: neither a complete step directory "
            f"(<workdir>/{CHECKPOINTS_DIRECTORY}/<step>/ holding 'state' and 'model') nor a workdir with "
            f"one under {CHECKPOINTS_DIRECTORY}/. Point it at a training workdir, one of its step "
            f"directories, or the output of `python -m efficientnet_jax.pretrained`."
        )
    if step is not None and step not in steps:
        raise CheckpointError(
            f"The workdir {path} has no checkpoint of step {step}; it has steps {steps}. Pick one with --step."
        )
    return step_location(os.path.join(path, CHECKPOINTS_DIRECTORY, str(steps[-1] if step is None else step)))


def _first_line(error: Exception, limit: int = 400) -> str:
    """Tensorstore errors carry a page of JSON spec after the cause; the cause is what a user needs."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


def _read_items(step_directory: str, **items: ocp.args.CheckpointArgs) -> Any:
    """Reads some items of a step directory; any failure of orbax or tensorstore as a CheckpointError."""
    reader = ocp.Checkpointer(
        ocp.CompositeCheckpointHandler(),
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}),
    )
    try:
        return reader.restore(step_directory, args=ocp.args.Composite(**items))
    except Exception as error:  # orbax and tensorstore raise many types for unreadable files
        raise CheckpointError(
            f"Cannot read the checkpoint at {step_directory}: {_first_line(error)}. It is truncated or "
            f"corrupt (a file under it was deleted, cut short or overwritten). Evaluate another step "
            f"(--step), or restore this one from a copy."
        ) from error
    finally:
        reader.close()


@functools.lru_cache(maxsize=None)
def abstract_variables(spec: ModelSpec) -> dict[str, Any]:
    """Shapes and dtypes of `{"params", "batch_stats"}` for `spec`, traced without allocating them
    (once per spec: --follow reads many checkpoints of one model)."""
    images = jax.ShapeDtypeStruct((1, spec.resolution, spec.resolution, 3), jnp.float32)
    return jax.eval_shape(EfficientNet(spec).init, jax.random.key(0), images)


def read_variables(location: CheckpointLocation, spec: ModelSpec, weights: str) -> dict[str, Any]:
    """`{"params", "batch_stats"}` of the `weights` ('ema' or 'raw') stored at `location`, as host
    arrays, after checking that the checkpoint holds the model `spec` describes. Host arrays, because
    replicating them to the devices is one transfer, where device arrays cost a small compiled copy
    per leaf shape."""
    where = location.step_directory
    saved_model = _read_items(where, model=ocp.args.JsonRestore()).model
    checkpointing.check_same_model(saved_model, spec, where)
    params_field, stats_field = WEIGHT_FIELDS[weights]
    shapes = abstract_variables(spec)
    target = {params_field: shapes["params"], stats_field: shapes["batch_stats"]}
    restore = ocp.args.PyTreeRestore(
        item=target,
        restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target),
        partial_restore=True,
    )
    state = _read_items(where, state=restore).state
    return {"params": state[params_field], "batch_stats": state[stats_field]}


def on_coordinator(read: Callable[[], T], like: Callable[[], T]) -> T:
    """`read()` on process 0, broadcast to every host (the others build a placeholder with `like()`).
    A CheckpointError on process 0 is raised on every host, so none waits in a collective forever."""
    if jax.process_count() == 1:
        return read()
    value, error = None, None
    if jax.process_index() == 0:
        try:
            value = read()
        except CheckpointError as caught:
            error = caught
    if multihost_utils.broadcast_one_to_all(np.array(error is not None)):
        raise error or CheckpointError("Process 0 could not read the checkpoint; its log names the problem.")
    return multihost_utils.broadcast_one_to_all(value if jax.process_index() == 0 else like())


class Evaluator:
    """One config and split: the model, and the compiled eval step reused for every checkpoint."""

    def __init__(self, config: ml_collections.ConfigDict, split: Optional[str] = None):
        self.config = config
        self.split = split or config.eval_split
        num_classes = input_pipeline.get_builder(config).info.features["label"].num_classes
        self.spec = trainer.model_spec_from_config(config, num_classes)
        self._p_eval_step = trainer.pmap_eval_step(EfficientNet(self.spec))

    def _warm_up(self, variables: dict[str, Any]) -> None:
        """Compiles the step on one all-padding batch, so images_per_second measures evaluation only."""
        local_devices = jax.local_device_count()
        per_device = input_pipeline.per_device_batch_size(
            self.config.eval_batch_size, jax.process_count(), local_devices, config_key="config.eval_batch_size"
        )
        size = self.config.image_size
        padding = {
            "image": np.zeros((local_devices, per_device, size, size, 3), np.float32),
            "label": np.zeros((local_devices, per_device), np.int32),
            "mask": np.zeros((local_devices, per_device), np.float32),
        }
        jax.block_until_ready(self._p_eval_step(variables, padding))

    def evaluate(self, location: CheckpointLocation, weights: str) -> dict[str, Any]:
        """top1, top5, loss (mean, no label smoothing), num_examples, step, weights, split,
        checkpoint, images_per_second."""
        if weights not in WEIGHT_FIELDS:
            raise ValueError(f"weights must be one of {sorted(WEIGHT_FIELDS)}, got {weights!r}.")
        batches, _ = input_pipeline.create_eval_iterator(self.config, self.split)  # checks split and batch first
        variables = on_coordinator(
            lambda: read_variables(location, self.spec, weights),
            lambda: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_variables(self.spec)),
        )
        variables = trainer.replicate(variables)
        self._warm_up(variables)
        start = time.perf_counter()
        metrics = trainer.evaluate(self._p_eval_step, variables, batches)
        seconds = time.perf_counter() - start
        return {
            **metrics,
            "step": location.step,
            "weights": weights,
            "split": self.split,
            "checkpoint": location.step_directory,
            "images_per_second": metrics["num_examples"] / seconds,
        }


def results_path(location: CheckpointLocation, split: str, weights: str) -> str:
    """`<results directory>/eval_<split>_<step>_<weights>.json`; a sub-split such as 'test[:50%]' is
    spelt with '_' for the characters a file name should not hold."""
    safe_split = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_")
    return os.path.join(location.results_directory, f"eval_{safe_split}_{location.step}_{weights}.json")


def write_results(results: dict[str, Any], path: str) -> None:
    """Process 0 writes; through a temporary name, so a reader never sees half a file."""
    if jax.process_index() != 0:
        return
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    os.replace(temporary, path)


def evaluate_to_file(
    evaluator: Evaluator, location: CheckpointLocation, weights: str, output: Optional[str] = None
) -> tuple[dict[str, Any], str]:
    """Evaluates, then writes the results (to `output`, or `results_path`): nothing is written when
    the checkpoint or the data cannot be read. Returns (results, path)."""
    results = evaluator.evaluate(location, weights)
    path = output or results_path(location, evaluator.split, weights)
    write_results(results, path)
    return results, path


def final_step(workdir: str) -> Optional[int]:
    """The step of the training job's final_metrics.json, once the job has written it."""
    try:
        with open(os.path.join(workdir, FINAL_METRICS_FILE)) as f:
            return int(json.load(f)["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):  # not written yet, or being written
        return None


def _next_action(workdir: str, evaluated: set[int], deadline: Optional[float]) -> tuple[int, bool]:
    """(the next step to evaluate or -1, whether to stop), decided by process 0 for every host."""
    decision = np.array([-1, 0])
    if jax.process_index() == 0:
        pending = [step for step in checkpoint_steps(workdir) if step not in evaluated]
        finished = final_step(workdir) in evaluated
        timed_out = deadline is not None and time.monotonic() >= deadline
        decision = np.array([pending[0] if pending else -1, int(finished or timed_out)])
    if jax.process_count() > 1:
        decision = multihost_utils.broadcast_one_to_all(decision)
    return int(decision[0]), bool(decision[1])


def follow(
    evaluator: Evaluator,
    workdir: str,
    weights: str,
    poll_interval_s: float,
    timeout_s: Optional[float] = None,
) -> Iterator[tuple[dict[str, Any], str]]:
    """Evaluates every checkpoint of a (possibly running) training job once, oldest first, writing
    each result file, and yields (results, path). Stops once the job's final step is evaluated (its
    final_metrics.json names it), or after `timeout_s` seconds."""
    if is_step_directory(os.path.abspath(workdir)) or not os.path.isdir(workdir):
        raise CheckpointError(
            f"--follow watches a training workdir; {workdir} is not a directory that holds one. Pass the "
            f"--workdir of the training job."
        )
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    evaluated: set[int] = set()
    while True:
        step, stop = _next_action(workdir, evaluated, deadline)
        if step >= 0:
            location = step_location(os.path.join(workdir, CHECKPOINTS_DIRECTORY, str(step)))
            evaluated.add(step)
            try:
                yield evaluate_to_file(evaluator, location, weights)
            except CheckpointError:
                if os.path.exists(location.step_directory):
                    raise
                logging.warning("Checkpoint %d was deleted (max_to_keep) before it was read; skipped.", step)
            continue
        if stop:
            if final_step(workdir) not in evaluated:
                logging.warning("Stopped following %s after %s s without its final checkpoint.", workdir, timeout_s)
            return
        time.sleep(poll_interval_s)
