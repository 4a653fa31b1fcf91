"""The training job, `train_and_evaluate`: the loop around the pmapped steps of steps.py.

Data flow: config -> input_pipeline (host batches) -> prefetch to devices -> pmapped train_step
(model, loss, RMSProp, EMA) -> metrics (clu writers) and checkpoints (orbax, checkpointing.py).

The run is a sequence of stages (progressive.py): one without progressive learning; with it, each
stage has its own train image size, dropout, RandAugment magnitude and Mixup/CutMix alphas, hence
its own train iterator and train step, compiled once when the stage begins.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax
import flax.jax_utils
import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from jax.experimental import multihost_utils

from efficientnet_jax import (
    checkpointing,
    configuration,
    errors,
    finetuning,
    input_pipeline,
    optim,
    progressive,
    scaling,
    steps,
)
from efficientnet_jax.configuration import ConfigError
from efficientnet_jax.layers import ReplicaGroups
from efficientnet_jax.model import EfficientNet, batch_norm_groups
from efficientnet_jax.normalizations import InputNormalization, describe_normalization
from efficientnet_jax.steps import AXIS_NAME, TrainState

MULTIHOST_CHECK_EVERY_STEPS = 10


def _check_workdir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test_{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ConfigError(
            f"Cannot write to --workdir={workdir!r} ({error.strerror or error}). Choose a writable directory."
        ) from error


class _PreemptionFlag:
    """Set by SIGTERM (how TPU and cloud preemption arrive): the loop saves and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            if not self.requested:  # a scheduler may signal both a supervised process and its parent
                logging.warning("Received signal %d: saving a checkpoint and stopping.", signum)
            self.requested = True

        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: preemption handling is the caller's business
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self, step: int) -> bool:
        """True on every host if any host was signalled, so all stop at the same step. Across hosts
        the flags are gathered every `MULTIHOST_CHECK_EVERY_STEPS` steps, not every step, so the
        step loop keeps dispatching ahead of the devices."""
        if jax.process_count() == 1:
            return self.requested
        if step % MULTIHOST_CHECK_EVERY_STEPS:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


class NonFiniteError(errors.UserError, FloatingPointError):
    """Training produced a NaN or an infinity; the message names the step and the last good checkpoint."""


def _check_finite(
    fetched: list[dict[str, np.ndarray]], step: int, checkpointer: checkpointing.Checkpointer
) -> None:
    """Raises NonFiniteError at the first of the fetched steps (the last one is `step`) whose loss or
    updated state is not finite. It waits for the save in flight first, so the checkpoint it names
    is complete; the non-finite state itself is never saved."""
    first = step - len(fetched) + 1
    for offset, metrics in enumerate(fetched):
        if not math.isfinite(metrics["loss"][0]):
            what = "loss"
        elif metrics["state_finite"][0] < 1.0:
            what = "train state after the update (parameters, EMA or optimizer slots)"
        else:
            continue
        checkpointer.wait()
        last_good = checkpointer.latest_step()
        resume = (
            f"the last good checkpoint is step {last_good} in {checkpointer.directory}, "
            f"where a restart resumes"
            if last_good is not None
            else "no checkpoint was written, so a restart starts from scratch"
        )
        raise NonFiniteError(
            f"Non-finite {what} at step {first + offset}: stopping without saving it; {resume}. "
            f"If it recurs, lower config.base_learning_rate or raise config.warmup_epochs."
        )


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _start_stage(
    config: ml_collections.ConfigDict,
    stage: progressive.Stage,
    spec: scaling.ModelSpec,
    tx: Any,
    learning_rate_fn: Callable[[Any], Any],
    rng: jax.Array,
    normalization: InputNormalization,
    step: int,
    replica_groups: ReplicaGroups | None,
) -> tuple[Callable, Iterator]:
    """The pmapped train step and the device-prefetched train batches of `stage`, from `step` on: the
    model at the stage's dropout rate, the input pipeline at its image size, magnitude and alphas
    (progressive.stage_config). The step compiles at its first call, once per stage: its inputs keep
    their shapes through the stage. The batches are those an iterator started at the stage's first step
    would give from `step` (the pipeline's order depends on the seed and the step alone), so a job
    resumed mid-stage trains on the same batches."""
    stage_config = progressive.stage_config(config, stage)
    model = EfficientNet(
        dataclasses.replace(spec, dropout_rate=stage.dropout_rate),
        batch_norm_axis_name=AXIS_NAME,
        batch_norm_axis_index_groups=replica_groups,
        freeze_batch_norm=config.freeze_batch_norm,
    )
    p_train_step = steps.pmap_train_step(model, tx, learning_rate_fn, stage_config, rng, normalization)
    batches = flax.jax_utils.prefetch_to_device(
        input_pipeline.create_train_iterator(stage_config, start_step=step), config.prefetch_batches
    )
    return p_train_step, batches


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, on_step: Callable[[int], None] = lambda step: None
) -> tuple[TrainState, dict[str, Any]]:
    """Trains (resuming from the newest checkpoint in `workdir`; a fresh job with config.init_checkpoint
    starts from that checkpoint's weights, finetuning.py), evaluates raw and EMA weights, and
    returns the final (unreplicated) state and metrics. The single entry point of train.py and of
    the tests. `on_step` is told of each step as it is dispatched (train.py: for the line that names
    the step at which another process was lost, given while the loop may be blocked in a collective)."""
    configuration.validate(config)
    _check_workdir(workdir)
    is_coordinator = jax.process_index() == 0

    builder = input_pipeline.get_builder(config)
    num_classes = builder.info.features["label"].num_classes
    input_pipeline.per_device_batch_size(config.batch_size, jax.process_count(), jax.local_device_count())
    input_pipeline.per_device_batch_size(
        config.eval_batch_size,
        jax.process_count(),
        jax.local_device_count(),
        config_key="config.eval_batch_size",
    )
    steps_per_epoch = input_pipeline.steps_per_epoch(config)
    num_train_steps = config.num_train_steps or int(math.ceil(config.num_epochs * steps_per_epoch))

    spec = configuration.model_spec_from_config(config, num_classes)
    schedule = progressive.stage_schedule(config, num_train_steps, spec.dropout_rate)
    # What checkpoints store and a resumed job must agree with: nothing without progressive learning, so
    # that such a job can still be resumed for more steps.
    saved_schedule = schedule if progressive.is_enabled(config) else ()
    group_size = configuration.batch_norm_group_size(config, jax.device_count())
    replica_groups = batch_norm_groups(jax.device_count(), group_size)
    model = EfficientNet(spec, batch_norm_axis_name=AXIS_NAME, batch_norm_axis_index_groups=replica_groups,
                         freeze_batch_norm=config.freeze_batch_norm)
    learning_rate_fn = optim.learning_rate_schedule(
        optim.scaled_learning_rate(config.base_learning_rate, config.batch_size),
        steps_per_epoch,
        config.warmup_epochs,
        config.lr_decay_factor,
        config.lr_decay_epochs,
    )
    tx = optim.optimizer(learning_rate_fn, config)
    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, checkpointing.CHECKPOINTS_DIRECTORY), config.keep_checkpoints
    )
    with checkpointer:
        pretrained = None
        # read and checked before anything compiles
        if config.init_checkpoint and checkpointer.latest_step() is None:
            pretrained, pretrained_normalization = finetuning.read_pretrained(config, spec)

        rng = jax.random.key(config.seed)
        init_rng, step_rng = jax.random.split(rng)
        state = steps.create_train_state(init_rng, model, spec.resolution, tx)
        start_step, state = checkpointer.resume(state, spec)
        # The weights' normalisation: the one this job saved (resuming), or the pretrained checkpoint's.
        # The crop and resize: the ones this job saved (resuming), else the config's or the variant's, not
        # the pretrained checkpoint's: fine-tuning trains on another dataset, and the official fine-tuning
        # of EfficientNetV2 (efficientnetv2/datasets.py `ImagenetFt`) preprocesses otherwise than its
        # weights' eval.
        weights_normalization, weights_preprocessing, weights_source = None, None, ""
        if start_step:
            logging.info("Resumed from the checkpoint of step %d in %s.", start_step, checkpointer.directory)
            weights_source = os.path.join(checkpointer.directory, str(start_step))
            record = checkpointing.read_shared_model_record(weights_source)
            weights_normalization, weights_preprocessing = record.input_normalization, record.preprocessing()
            checkpointing.check_same_schedule(weights_source, saved_schedule)
        elif pretrained is not None:
            state = finetuning.start_from(state, pretrained, tx)
            logging.info(
                "Fine-tuning from the %s weights of %s.", config.init_weights, config.init_checkpoint
            )
            weights_normalization, weights_source = pretrained_normalization, config.init_checkpoint
        normalization = configuration.resolve_input_normalization(
            config, weights_normalization, weights_source
        )
        preprocessing = configuration.resolve_preprocessing(config, weights_preprocessing, weights_source)
        # config.json keeps the config as asked for (unset keys unset: a sweep compares it with the run it
        # asks for); the checkpoint's model record holds the preprocessing and size (spec.resolution,
        # `configuration.resolve_image_size`: the config's or the variant's, resumed or not) it resolved.
        requested_config = config
        # what the input pipelines read
        config = configuration.with_preprocessing(config, preprocessing, spec.resolution)
        model_record = checkpointing.ModelRecord.of(
            spec,
            normalization,
            preprocessing.eval_crop_padding,
            builder.info.features["label"].names,
            preprocessing.eval_preprocessing,
            preprocessing.resize_method,
        )
        if is_coordinator:  # once the initial state is known: a checkpoint that does not fit writes nothing
            with open(os.path.join(workdir, "config.json"), "w") as f:
                f.write(requested_config.to_json_best_effort(indent=2, sort_keys=True))
        state = steps.replicate(state)
        p_eval_step = steps.pmap_eval_step(model, normalization)  # at config.image_size in every stage

        writer = metric_writers.create_default_writer(workdir, just_logging=not is_coordinator)
        if start_step == 0:
            writer.write_hparams(
                {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}
            )
        logging.info(
            "Training %s (%d classes) on %s: %d steps (%d per epoch), global batch %d on %d devices, "
            "batch-norm statistics over groups of %d, inputs normalised as %s.",
            spec.name,
            num_classes,
            config.dataset,
            num_train_steps,
            steps_per_epoch,
            config.batch_size,
            jax.device_count(),
            group_size,
            describe_normalization(normalization),
        )

        def run_eval(step: int) -> dict[str, float]:
            results = {}
            # the names eval.py uses
            for weights, (params, batch_stats) in checkpointing.WEIGHT_FIELDS.items():
                variables = {"params": getattr(state, params), "batch_stats": getattr(state, batch_stats)}
                batches, _ = input_pipeline.create_eval_iterator(config)
                start = time.perf_counter()
                metrics = steps.evaluate(p_eval_step, variables, batches)
                results.update({f"eval_{weights}_{k}": v for k, v in metrics.items()})
                results[f"eval_{weights}_images_per_second"] = metrics["num_examples"] / (
                    time.perf_counter() - start
                )
            writer.write_scalars(step, {k: v for k, v in results.items() if not k.endswith("num_examples")})
            logging.info(
                "eval @ step %d: raw top-1 %.4f top-5 %.4f | EMA top-1 %.4f top-5 %.4f (%d examples)",
                step, results["eval_raw_top1"], results["eval_raw_top5"], results["eval_ema_top1"],
                results["eval_ema_top5"], results["eval_raw_num_examples"],
            )
            return results

        pending_metrics = []
        last_metrics = None
        eval_results: dict[str, float] = {}
        step = start_step
        on_step(step)
        window_start, window_step = time.perf_counter(), start_step
        stage = None
        with _PreemptionFlag() as preemption:
            while step < num_train_steps:
                if stage is None or step == stage.end_step:
                    stage = progressive.stage_at(schedule, step)
                    if saved_schedule:
                        logging.info("%s.", progressive.describe(stage, len(schedule), step, config.augment))
                    stage_start, stage_start_step = time.perf_counter(), step
                    p_train_step, train_batches = _start_stage(
                        config, stage, spec, tx, learning_rate_fn, step_rng, normalization, step,
                        replica_groups,
                    )
                batch = next(train_batches)
                state, metrics = p_train_step(state, batch)
                step += 1
                on_step(step)
                pending_metrics.append(metrics)
                # the stage's train step compiled: time it, leave it out of img/s
                if step == stage_start_step + 1:
                    jax.block_until_ready(metrics)
                    logging.info(
                        "First step (compilation included) took %.1f s.", time.perf_counter() - stage_start
                    )
                    window_start, window_step = time.perf_counter(), step

                at_end = step == num_train_steps
                should_log = step % config.log_every_steps == 0 or at_end
                should_checkpoint = step % config.checkpoint_every_steps == 0 or at_end
                preempted = preemption.agreed(step)
                if should_log or should_checkpoint or preempted:
                    fetched = jax.device_get(pending_metrics)
                    pending_metrics = []
                    _check_finite(fetched, step, checkpointer)
                    last_metrics = {
                        k: float(np.mean([m[k][0] for m in fetched]))
                        for k in fetched[-1]
                        if k != "state_finite"
                    }
                if should_log:
                    elapsed = time.perf_counter() - window_start
                    steps_done = step - window_step
                    images_per_second = (
                        steps_done * config.batch_size / elapsed if steps_done and elapsed > 0 else 0.0
                    )
                    step_seconds = elapsed / steps_done if steps_done else float("nan")
                    eta = (num_train_steps - step) * step_seconds if steps_done else float("nan")
                    writer.write_scalars(step, {
                        **last_metrics, "images_per_second": images_per_second, "step_seconds": step_seconds,
                        "corrupt_images_skipped": input_pipeline.corrupt_images_skipped(),
                    })
                    logging.info(
                        "step %d/%d (%.1f%%) loss %.4f top-1 %.3f lr %.5f grad-norm %.3f | "
                        "%.1f img/s, %.3f s/step, ETA %s",
                        step,
                        num_train_steps,
                        100 * step / num_train_steps,
                        last_metrics["loss"],
                        last_metrics["top1"],
                        last_metrics["learning_rate"],
                        last_metrics["grad_norm"],
                        images_per_second,
                        step_seconds,
                        _format_duration(eta) if math.isfinite(eta) else "?",
                    )
                    window_start, window_step = time.perf_counter(), step
                if step % config.eval_every_steps == 0 or at_end:
                    eval_results = run_eval(step)
                if should_checkpoint or preempted:  # the state to save was checked finite above
                    checkpointer.save(step, steps.unreplicate(state), model_record, saved_schedule)
                if preempted:
                    logging.warning(
                        "Stopped at step %d on request; restart the same command to resume.", step
                    )
                    break
        if not eval_results:  # resumed from the final checkpoint of a job stopped before its last lines
            eval_results = run_eval(step)
    writer.flush()
    final = {"step": step, "num_train_steps": num_train_steps, **(last_metrics or {}), **eval_results}
    if is_coordinator:
        with open(os.path.join(workdir, checkpointing.FINAL_METRICS_FILE), "w") as f:
            json.dump(final, f, indent=2, sort_keys=True)
    return steps.unreplicate(state), final
