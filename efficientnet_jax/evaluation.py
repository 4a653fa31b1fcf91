"""Evaluating saved checkpoints: the library behind eval.py.

A checkpoint is a step directory `<workdir>/checkpoints/<step>/` with the items `state` (the
TrainState) and `model` (the ModelSpec as JSON), written by training or by `python -m
efficientnet_jax.pretrained`. Evaluation restores from `state` only the two collections it needs
(orbax partial restore): it reads neither the optimizer state nor the other weights, so it works
whatever optimizer wrote the checkpoint. Batches come from the config's eval pipeline (padded and
masked) and go through `steps.eval_step` pmapped over every local device, whose sums are psummed
over all hosts, so every example of the split counts exactly once. The images are cropped, resized
(to the size) and normalised as the checkpoint's weights were (its model record) unless the config
sets otherwise.

Only process 0 reads checkpoint files and writes results; what it read is broadcast to the other
hosts, as in checkpointing.py.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from efficientnet_jax import checkpointing, configuration, input_pipeline, steps
from efficientnet_jax.checkpointing import (
    CHECKPOINTS_DIRECTORY,
    FINAL_METRICS_FILE,
    WEIGHT_FIELDS,
    CheckpointError,
    CheckpointLocation,
    DamagedCheckpointError,
)
from efficientnet_jax.configuration import model_spec_from_config
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.normalizations import InputNormalization, describe_normalization

T = TypeVar("T")


class Evaluator:
    """One config and split: the model, and the compiled eval step reused for every checkpoint."""

    def __init__(self, config: ml_collections.ConfigDict, split: str | None = None):
        self.config = config
        self.split = split or config.eval_split
        configuration.configured_input_normalization(config)  # a bad value fails before anything is read
        num_classes = input_pipeline.get_builder(config).info.features["label"].num_classes
        self.spec = model_spec_from_config(config, num_classes)
        configuration.resolve_preprocessing(config)
        self._p_eval_steps: dict[InputNormalization, Callable] = {}

    def _p_eval_step(self, normalization: InputNormalization) -> Callable:
        """The compiled step for checkpoints of this normalisation (part of the step: one per value met)."""
        if normalization not in self._p_eval_steps:
            self._p_eval_steps[normalization] = steps.pmap_eval_step(EfficientNet(self.spec), normalization)
        return self._p_eval_steps[normalization]

    def _warm_up(self, p_eval_step: Callable, variables: dict[str, Any], size: int) -> None:
        """Compiles the step on one all-padding batch, so images_per_second measures evaluation only."""
        local_devices = jax.local_device_count()
        per_device = input_pipeline.per_device_batch_size(
            self.config.eval_batch_size,
            jax.process_count(),
            local_devices,
            config_key="config.eval_batch_size",
        )
        padding = {
            "image": np.zeros((local_devices, per_device, size, size, 3), np.uint8),
            "label": np.zeros((local_devices, per_device), np.int32),
            "mask": np.zeros((local_devices, per_device), np.float32),
        }
        jax.block_until_ready(p_eval_step(variables, padding))

    def evaluate(self, location: CheckpointLocation, weights: str) -> dict[str, Any]:
        """top1, top5, loss (mean, no label smoothing), num_examples, step, weights, split,
        checkpoint, input_normalization (its name, or its values), preprocessing (crop, padding and
        resize, in words), image_size, images_per_second."""
        if weights not in WEIGHT_FIELDS:
            raise ValueError(f"weights must be one of {sorted(WEIGHT_FIELDS)}, got {weights!r}.")
        where = location.step_directory
        record = checkpointing.read_shared_model_record(where)
        normalization = configuration.resolve_input_normalization(
            self.config, record.input_normalization, where
        )
        preprocessing = configuration.resolve_preprocessing(self.config, record.preprocessing(), where)
        image_size = configuration.resolve_image_size(self.config, record.resolution(), where)
        # The split and the batch size are checked before the weights are read.
        batches, _ = input_pipeline.create_eval_iterator(
            configuration.with_preprocessing(self.config, preprocessing, image_size), self.split
        )
        variables = checkpointing.on_coordinator(
            lambda: checkpointing.read_variables(location, self.spec, weights),
            lambda: jax.tree.map(
                lambda s: np.zeros(s.shape, s.dtype), checkpointing.abstract_variables(self.spec)
            ),
        )
        variables = steps.replicate(variables)
        p_eval_step = self._p_eval_step(normalization)
        self._warm_up(p_eval_step, variables, image_size)
        start = time.perf_counter()
        metrics = steps.evaluate(p_eval_step, variables, batches)
        seconds = time.perf_counter() - start
        return {
            **metrics,
            "step": location.step,
            "weights": weights,
            "split": self.split,
            "checkpoint": location.step_directory,
            "input_normalization": describe_normalization(normalization),
            "preprocessing": preprocessing.describe(),
            "image_size": image_size,
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
    evaluator: Evaluator, location: CheckpointLocation, weights: str, output: str | None = None
) -> tuple[dict[str, Any], str]:
    """Evaluates, then writes the results (to `output`, or `results_path`): nothing is written when
    the checkpoint or the data cannot be read. Returns (results, path)."""
    results = evaluator.evaluate(location, weights)
    path = output or results_path(location, evaluator.split, weights)
    write_results(results, path)
    return results, path


def final_step(workdir: str) -> int | None:
    """The step of the training job's final_metrics.json, once the job has written it."""
    try:
        with open(os.path.join(workdir, FINAL_METRICS_FILE)) as f:
            return int(json.load(f)["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):  # not written yet, or being written
        return None


def _next_action(workdir: str, evaluated: set[int], deadline: float | None) -> tuple[int, bool]:
    """(the next step to evaluate or -1, whether to stop), decided by process 0 for every host."""
    decision = np.array([-1, 0])
    if jax.process_index() == 0:
        pending = [step for step in checkpointing.checkpoint_steps(workdir) if step not in evaluated]
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
    timeout_s: float | None = None,
) -> Iterator[tuple[dict[str, Any], str]]:
    """Evaluates every checkpoint of a (possibly running) training job once, oldest first, writing
    each result file, and yields (results, path). Stops once the job's final step is evaluated (its
    final_metrics.json names it), or after `timeout_s` seconds."""
    if checkpointing.is_step_directory(os.path.abspath(workdir)) or not os.path.isdir(workdir):
        raise CheckpointError(
            f"--follow watches a training workdir; {workdir} is not a directory that holds one. Pass the "
            f"--workdir of the training job."
        )
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    evaluated: set[int] = set()
    while True:
        step, stop = _next_action(workdir, evaluated, deadline)
        if step >= 0:
            location = checkpointing.step_location(os.path.join(workdir, CHECKPOINTS_DIRECTORY, str(step)))
            evaluated.add(step)
            try:
                yield evaluate_to_file(evaluator, location, weights)
            except DamagedCheckpointError as error:  # another model (a plain CheckpointError) stops following
                if os.path.exists(location.step_directory):
                    logging.warning("Skipped the checkpoint of step %d, which is damaged: %s", step, error)
                else:
                    logging.warning(
                        "Checkpoint %d was deleted (max_to_keep) before it was read; skipped.", step
                    )
            continue
        if stop:
            if final_step(workdir) not in evaluated:
                logging.warning(
                    "Stopped following %s after %s s without its final checkpoint.", workdir, timeout_s
                )
            return
        time.sleep(poll_interval_s)
