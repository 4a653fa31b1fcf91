"""The training job: train state, the pure train and eval steps, and `train_and_evaluate`.

Data flow: config -> input_pipeline (host batches) -> prefetch to devices -> pmapped train_step
(model, loss, RMSProp, EMA) -> metrics (clu writers) and checkpoints (orbax).
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import time
from typing import Any, Callable, Iterator, Optional

import flax
import flax.jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers
from jax import lax
from jax.experimental import multihost_utils

from efficientnet_jax import checkpointing, input_pipeline, optim
from efficientnet_jax.model import EfficientNet, create_model
from efficientnet_jax.scaling import ModelSpec, get_baseline, stages_from_block_strings

AXIS_NAME = "batch"
MULTIHOST_CHECK_EVERY_STEPS = 10


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the fix."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any  # exponential moving averages, used for evaluation as in the reference
    ema_batch_stats: Any


def model_spec_from_config(config: ml_collections.ConfigDict, num_classes: int) -> ModelSpec:
    """The model a config describes: the baseline network (`config.model.baseline`, or its stage
    table replaced by `config.model.block_strings`) scaled by the variant's coefficients, with any
    coefficient the config sets. The default baseline, EfficientNet-B0, gives the released variants."""
    try:
        baseline = get_baseline(config.model.baseline)
    except ValueError as error:
        raise ConfigError(f"config.model.baseline: {error}") from error
    stages = baseline.stages
    if config.model.block_strings:
        try:
            stages = stages_from_block_strings(config.model.block_strings)
        except ValueError as error:
            raise ConfigError(f"config.model.block_strings: {error}") from error
    overrides = {
        field: config.model[field]
        for field in ("width", "depth", "dropout_rate")
        if config.model.get(field) is not None
    }
    if config.model.block_strings:
        overrides["name"] = "custom"
    elif config.model.baseline != "efficientnet-b0":
        overrides["name"] = config.model.baseline
    model = create_model(
        config.model.variant,
        num_classes=num_classes,
        stages=stages,
        stem_filters=baseline.stem_filters,
        head_filters=baseline.head_filters,
        activation=baseline.activation,
        resolution=config.image_size,
        drop_connect_rate=config.model.drop_connect_rate,
        batch_norm_momentum=config.model.batch_norm_momentum,
        dtype="bfloat16" if config.half_precision else "float32",
        depthwise_implementation=config.model.depthwise_implementation,
        remat=config.model.remat,
        **overrides,
    )
    return model.spec


def create_train_state(rng: jax.Array, model: EfficientNet, image_size: int, tx: optax.GradientTransformation) -> TrainState:
    """Initial state on the host; the EMA starts at the initial values (TF's moving averages do)."""

    @jax.jit
    def init(rng):
        variables = model.init(rng, jnp.zeros((1, image_size, image_size, 3), jnp.float32))
        params, batch_stats = variables["params"], variables["batch_stats"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            ema_params=params,
            ema_batch_stats=batch_stats,
        )

    return init(rng)


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy in float32 with TF-style label smoothing."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def step_rngs(rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
    """This device's keys for this step: folded with the step (so a resumed job replays the same
    draws) and with the device's index (so replicas draw different masks). Call under pmap."""
    key = jax.random.fold_in(jax.random.fold_in(rng, step), lax.axis_index(AXIS_NAME))
    dropout_rng, drop_path_rng = jax.random.split(key)
    return {"dropout": dropout_rng, "drop_path": drop_path_rng}


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: EfficientNet,
    tx: optax.GradientTransformation,
    learning_rate_fn: optax.Schedule,
    config: ml_collections.ConfigDict,
    rng: jax.Array,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on one device's shard; run under `jax.pmap(axis_name='batch')`.

    Batch-norm statistics are reduced across replicas inside the model (its BN axis_name), the
    gradients here with `pmean`, so N devices compute what one device would on the whole batch.
    Each device draws its own dropout/stochastic-depth masks (`step_rngs`).
    """
    num_classes = model.spec.num_classes

    def loss_fn(params):
        logits, new_model_state = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs=step_rngs(rng, state.step),
        )
        data_loss = jnp.mean(cross_entropy(logits, batch["label"], num_classes, config.label_smoothing))
        loss = data_loss + config.weight_decay * optim.l2_penalty(params)
        return loss, (data_loss, logits, new_model_state["batch_stats"])

    (loss, (data_loss, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, AXIS_NAME)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    # The reference's EMA warm-up: the decay is small for the first steps.
    ema_decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=optax.incremental_update(params, state.ema_params, 1.0 - ema_decay),
        ema_batch_stats=optax.incremental_update(batch_stats, state.ema_batch_stats, 1.0 - ema_decay),
    )
    metrics = {
        "loss": loss,
        "cross_entropy": data_loss,
        "top1": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "learning_rate": learning_rate_fn(state.step),
        "grad_norm": optax.global_norm(grads),
    }
    return new_state, lax.pmean(metrics, AXIS_NAME)


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], *, model: EfficientNet) -> dict[str, jax.Array]:
    """Sums of loss, top-1/top-5 hits and real examples (padding masked out) over all devices."""
    logits = model.apply(variables, batch["image"], train=False)
    labels, mask = batch["label"], batch["mask"]
    num_classes = model.spec.num_classes
    loss = cross_entropy(logits, labels, num_classes, 0.0)
    _, top5 = lax.top_k(logits, min(5, num_classes))
    sums = {
        "loss": jnp.sum(loss * mask),
        "top1": jnp.sum((top5[:, 0] == labels) * mask),
        "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        "num_examples": jnp.sum(mask),
    }
    return lax.psum(sums, AXIS_NAME)


def evaluate(
    p_eval_step: Callable, variables: dict[str, Any], batches: Iterator[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Runs a full pass; every example counted once (the pipeline pads and masks the last batch)."""
    totals = None
    for batch in batches:
        sums = p_eval_step(variables, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.tree.map(lambda x: float(x[0]), jax.device_get(totals))
    count = totals["num_examples"]
    return {
        "top1": totals["top1"] / count,
        "top5": totals["top5"] / count,
        "loss": totals["loss"] / count,
        "num_examples": int(count),
    }


def pmap_train_step(
    model: EfficientNet,
    tx: optax.GradientTransformation,
    learning_rate_fn: optax.Schedule,
    config: ml_collections.ConfigDict,
    rng: jax.Array,
    devices: Optional[list] = None,
) -> Callable:
    """`train_step` pmapped over the devices, the state's buffers donated (updated in place)."""
    step = functools.partial(train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn, config=config, rng=rng)
    return jax.pmap(step, axis_name=AXIS_NAME, donate_argnums=(0,), devices=devices)


def pmap_eval_step(model: EfficientNet, devices: Optional[list] = None) -> Callable:
    return jax.pmap(functools.partial(eval_step, model=model), axis_name=AXIS_NAME, devices=devices)


def replicate(tree: Any, devices: Optional[list] = None) -> Any:
    """Copies a host tree to every device, laid out exactly as pmap's outputs are.

    `flax.jax_utils.replicate` alone gives arrays sharded over a differently named mesh, so the
    second train step (fed the first step's outputs) would compile the whole step again.
    """
    replicated = flax.jax_utils.replicate(tree, devices)
    return jax.pmap(lambda x: x, axis_name=AXIS_NAME, devices=devices)(replicated)


def unreplicate(tree: Any) -> Any:
    """The first local device's copy of a replicated tree, as host (numpy) arrays.

    Reads the local shard directly: indexing a multi-process array would run a computation that
    every host must join, and hosts reach this point at different times. The reshape is numpy's:
    on device it would compile one program per parameter shape."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data).reshape(x.shape[1:]), tree)


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


def _validate(config: ml_collections.ConfigDict) -> None:
    positive = ("batch_size", "eval_batch_size", "image_size", "log_every_steps", "eval_every_steps",
                "checkpoint_every_steps", "keep_checkpoints")
    for key in positive:
        if config[key] <= 0:
            raise ConfigError(f"config.{key} must be positive, got {config[key]}.")
    if config.num_train_steps is None and config.num_epochs <= 0:
        raise ConfigError(f"config.num_epochs must be positive, got {config.num_epochs}.")
    _validate_fine_tuning(config)


def _validate_fine_tuning(config: ml_collections.ConfigDict) -> None:
    """The fine-tuning options act on weights from config.init_checkpoint: without one they would
    silently freeze or slow down a randomly initialised network."""
    if config.init_weights not in ("ema", "raw"):
        raise ConfigError(f"config.init_weights must be 'ema' or 'raw', got {config.init_weights!r}.")
    if config.backbone_learning_rate_multiplier < 0:
        raise ConfigError(
            f"config.backbone_learning_rate_multiplier must be >= 0, got "
            f"{config.backbone_learning_rate_multiplier}."
        )
    if not config.init_checkpoint:  # None, or '' (how a command line unsets it)
        options = {
            "freeze_backbone": config.freeze_backbone,
            "freeze_batch_norm": config.freeze_batch_norm,
            "keep_classifier": config.keep_classifier,
            "backbone_learning_rate_multiplier": config.backbone_learning_rate_multiplier != 1.0,
        }
        for key, is_set in options.items():
            if is_set:
                raise ConfigError(
                    f"config.{key} fine-tunes pretrained weights, but config.init_checkpoint is not set. Set "
                    f"--config.init_checkpoint to a workdir or a checkpoint (e.g. converted with `python -m "
                    f"efficientnet_jax.pretrained`), or reset config.{key} to train from scratch."
                )


class _PreemptionFlag:
    """Set by SIGTERM (how TPU and cloud preemption arrive): the loop saves and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
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


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> tuple[TrainState, dict[str, Any]]:
    """Trains (resuming from the newest checkpoint in `workdir`; a fresh job with config.init_checkpoint
    starts from that checkpoint's weights, finetuning.py), evaluates raw and EMA weights, and
    returns the final (unreplicated) state and metrics. The single entry point of train.py and of
    the tests."""
    from efficientnet_jax import finetuning  # here: it imports evaluation.py, which imports this module

    _validate(config)
    _check_workdir(workdir)
    is_coordinator = jax.process_index() == 0

    builder = input_pipeline.get_builder(config)
    num_classes = builder.info.features["label"].num_classes
    input_pipeline.per_device_batch_size(config.batch_size, jax.process_count(), jax.local_device_count())
    input_pipeline.per_device_batch_size(
        config.eval_batch_size, jax.process_count(), jax.local_device_count(), config_key="config.eval_batch_size"
    )
    steps_per_epoch = input_pipeline.steps_per_epoch(config)
    num_train_steps = config.num_train_steps or int(math.ceil(config.num_epochs * steps_per_epoch))

    spec = model_spec_from_config(config, num_classes)
    model = EfficientNet(spec, batch_norm_axis_name=AXIS_NAME, freeze_batch_norm=config.freeze_batch_norm)
    learning_rate_fn = optim.learning_rate_schedule(
        optim.scaled_learning_rate(config.base_learning_rate, config.batch_size),
        steps_per_epoch,
        config.warmup_epochs,
        config.lr_decay_factor,
        config.lr_decay_epochs,
    )
    tx = optim.optimizer(learning_rate_fn, config)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    start_step = checkpointer.latest_step() or 0
    pretrained = None
    if config.init_checkpoint and not start_step:  # read and checked before anything compiles
        pretrained = finetuning.read_pretrained(config, spec)

    rng = jax.random.key(config.seed)
    init_rng, step_rng = jax.random.split(rng)
    state = create_train_state(init_rng, model, config.image_size, tx)
    if start_step:
        state = checkpointer.restore(start_step, state, spec)
        logging.info("Resumed from the checkpoint of step %d in %s.", start_step, checkpointer.directory)
    elif pretrained is not None:
        state = finetuning.start_from(state, pretrained, tx)
        logging.info("Fine-tuning from the %s weights of %s.", config.init_weights, config.init_checkpoint)
    if is_coordinator:  # once the initial state is known: a checkpoint that does not fit writes nothing
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    state = replicate(state)
    p_train_step = pmap_train_step(model, tx, learning_rate_fn, config, step_rng)
    p_eval_step = pmap_eval_step(model)

    writer = metric_writers.create_default_writer(workdir, just_logging=not is_coordinator)
    if start_step == 0:
        writer.write_hparams({k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))})
    logging.info(
        "Training %s (%d classes) on %s: %d steps (%d per epoch), global batch %d on %d devices.",
        spec.name, num_classes, config.dataset, num_train_steps, steps_per_epoch, config.batch_size, jax.device_count(),
    )

    def run_eval(step: int) -> dict[str, float]:
        results = {}
        for weights, variables in (
            ("raw", {"params": state.params, "batch_stats": state.batch_stats}),
            ("ema", {"params": state.ema_params, "batch_stats": state.ema_batch_stats}),
        ):
            batches, _ = input_pipeline.create_eval_iterator(config)
            start = time.perf_counter()
            metrics = evaluate(p_eval_step, variables, batches)
            results.update({f"eval_{weights}_{k}": v for k, v in metrics.items()})
            results[f"eval_{weights}_images_per_second"] = metrics["num_examples"] / (time.perf_counter() - start)
        writer.write_scalars(step, {k: v for k, v in results.items() if not k.endswith("num_examples")})
        logging.info(
            "eval @ step %d: raw top-1 %.4f top-5 %.4f | EMA top-1 %.4f top-5 %.4f (%d examples)",
            step, results["eval_raw_top1"], results["eval_raw_top5"], results["eval_ema_top1"],
            results["eval_ema_top5"], results["eval_raw_num_examples"],
        )
        return results

    train_batches = flax.jax_utils.prefetch_to_device(
        input_pipeline.create_train_iterator(config, start_step=start_step), config.prefetch_batches
    )
    pending_metrics = []
    last_metrics = None
    eval_results: dict[str, float] = {}
    step = start_step
    window_start, window_step = time.perf_counter(), start_step
    job_start = time.perf_counter()
    with _PreemptionFlag() as preemption:
        while step < num_train_steps:
            batch = next(train_batches)
            state, metrics = p_train_step(state, batch)
            step += 1
            pending_metrics.append(metrics)
            if step == start_step + 1:
                jax.block_until_ready(metrics)
                logging.info("First step (compilation included) took %.1f s.", time.perf_counter() - job_start)
                window_start, window_step = time.perf_counter(), step
                pending_metrics = pending_metrics[-1:]

            at_end = step == num_train_steps
            should_log = step % config.log_every_steps == 0 or at_end
            should_checkpoint = step % config.checkpoint_every_steps == 0 or at_end
            preempted = preemption.agreed(step)
            if should_log or should_checkpoint or preempted:
                fetched = jax.device_get(pending_metrics)
                last_metrics = {k: float(np.mean([m[k][0] for m in fetched])) for k in fetched[-1]}
                if not all(math.isfinite(m["loss"][0]) for m in fetched):
                    bad = next(step - len(fetched) + i + 1 for i, m in enumerate(fetched) if not math.isfinite(m["loss"][0]))
                    raise FloatingPointError(
                        f"Non-finite loss at step {bad}. Stopping; the last good checkpoint is step "
                        f"{checkpointer.latest_step()} in {checkpointer.directory}."
                    )
                pending_metrics = []
            if should_log:
                elapsed = time.perf_counter() - window_start
                steps_done = step - window_step
                images_per_second = steps_done * config.batch_size / elapsed if steps_done and elapsed > 0 else 0.0
                step_seconds = elapsed / steps_done if steps_done else float("nan")
                eta = (num_train_steps - step) * step_seconds if steps_done else float("nan")
                writer.write_scalars(step, {
                    **last_metrics, "images_per_second": images_per_second, "step_seconds": step_seconds,
                    "corrupt_images_skipped": input_pipeline.corrupt_images_skipped(),
                })
                logging.info(
                    "step %d/%d (%.1f%%) loss %.4f top-1 %.3f lr %.5f grad-norm %.3f | %.1f img/s, %.3f s/step, ETA %s",
                    step, num_train_steps, 100 * step / num_train_steps, last_metrics["loss"], last_metrics["top1"],
                    last_metrics["learning_rate"], last_metrics["grad_norm"], images_per_second, step_seconds,
                    _format_duration(eta) if math.isfinite(eta) else "?",
                )
                window_start, window_step = time.perf_counter(), step
            if step % config.eval_every_steps == 0 or at_end:
                eval_results = run_eval(step)
            if should_checkpoint or preempted:  # the losses up to here were checked finite above
                checkpointer.save(step, unreplicate(state), spec)
            if preempted:
                logging.warning("Stopped at step %d on request; restart the same command to resume.", step)
                break
    checkpointer.close()
    writer.flush()
    final = {"step": step, "num_train_steps": num_train_steps, **(last_metrics or {}), **eval_results}
    if is_coordinator:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump(final, f, indent=2, sort_keys=True)
    return unreplicate(state), final
