"""Everything about checkpoints on disk: saving and resuming the train state, locating a checkpoint
(a workdir, a step directory, the weight converter's output), and reading only chosen weights.

A checkpoint is a step directory `<workdir>/checkpoints/<step>/` with the items `state` (the TrainState)
and `model` (a `ModelRecord` as JSON: the ModelSpec, the input normalisation the weights expect, the
eval crop, the class names), and, for a job with progressive learning, `progressive_learning` (its stage
schedule as JSON, progressive.schedule_to_json). Only the coordinator (process 0) touches the files;
what it read is broadcast to the other hosts, so shared and host-local file systems behave alike. Saves
are asynchronous: the step loop only waits for the device-to-host copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from efficientnet_jax import errors, progressive, steps
from efficientnet_jax.configuration import (
    OFFICIAL_RESIZE_METHODS,
    REFERENCE_EVAL_CROP_PADDING,
    Preprocessing,
)
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.normalizations import IMAGENET_NORMALIZATION, InputNormalization
from efficientnet_jax.scaling import ModelSpec, StageSpec

CHECKPOINTS_DIRECTORY = "checkpoints"  # under a workdir, as train_and_evaluate writes them
DAMAGED_CHECKPOINTS_DIRECTORY = "damaged_checkpoints"  # beside it: unreadable steps moved aside on resume
FINAL_METRICS_FILE = "final_metrics.json"  # written by train_and_evaluate when the job ends
PROGRESSIVE_LEARNING_ITEM = "progressive_learning"  # the stage schedule of a job with progressive learning
# The TrainState fields holding the variables evaluated with each choice of --weights.
WEIGHT_FIELDS = {"ema": ("ema_params", "ema_batch_stats"), "raw": ("params", "batch_stats")}
# EfficientNet's eval crop (configuration.EVAL_PREPROCESSINGS): what a checkpoint that does not record
# its own was evaluated with (as REFERENCE_EVAL_CROP_PADDING is its padding).
REFERENCE_EVAL_PREPROCESSING = "efficientnet"
# The resize that a checkpoint written before records held one was trained and evaluated with, for each
# eval preprocessing: TF2's `tf.image.resize`, bicubic for EfficientNet's crop, bilinear for V2's.
# Reading it so keeps such a checkpoint's evaluation what it was, and a resumed job training as it
# did; the official EfficientNet resize ('tf1_bicubic') is what checkpoints record since.
UNRECORDED_RESIZE_METHODS = {
    "efficientnet": "bicubic",
    "efficientnetv2": "bilinear",
    "efficientnetv2_finetune": "bilinear",
}

T = TypeVar("T")


class CheckpointError(errors.UserError, RuntimeError):
    """A checkpoint that cannot be used: corrupt, truncated, or of another model."""


class DamagedCheckpointError(CheckpointError):
    """A step directory whose files cannot be read (deleted, cut short or overwritten), as opposed to
    a readable checkpoint of another model: resuming and --follow pass over the first, not the second."""


class CheckpointSaveError(CheckpointError):
    """Writing a checkpoint failed (disk full, permission lost): the job stops, earlier steps intact."""


def spec_to_json(spec: ModelSpec) -> dict[str, Any]:
    """The spec as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def complete_saved_spec(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved spec with the fields added to ModelSpec and StageSpec since it was written at their
    defaults, which is how it was built: a checkpoint from before Fused-MBConv and `fix_head_stem`
    existed is of MBConv stages with scaled stem and head."""
    completed = {**spec_to_json(ModelSpec()), **saved}
    stage_defaults = {
        field.name: field.default
        for field in dataclasses.fields(StageSpec)
        if field.default is not dataclasses.MISSING
    }
    completed["stages"] = [{**stage_defaults, **stage} for stage in completed["stages"]]
    return completed


def spec_from_json(saved: dict[str, Any]) -> ModelSpec:
    """The ModelSpec a saved spec describes (`complete_saved_spec`), to build the network from the
    checkpoint alone."""
    completed = complete_saved_spec(saved)
    stage_fields = {field.name for field in dataclasses.fields(StageSpec)}
    stages = tuple(
        StageSpec(**{key: value for key, value in stage.items() if key in stage_fields})
        for stage in completed["stages"]
    )
    fields = {field.name: completed[field.name] for field in dataclasses.fields(ModelSpec)}
    return ModelSpec(**{**fields, "stages": stages})


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """A checkpoint's `model` item: the network (a ModelSpec as JSON), the input normalisation its
    weights were trained with, the eval crop padding and preprocessing of its job (or, for converted
    weights, of their official evaluation) and, when its dataset names them, its class names. With it
    a checkpoint is usable without the config that wrote it (prediction.py).

    Checkpoints written before a field existed read it as what they were made with: ImageNet's
    normalisation (the only one the input pipeline applied), the reference's crop, TF2's resize
    (`UNRECORDED_RESIZE_METHODS`), no class names. The eval preprocessing is written only when it is
    not that reference's."""

    spec: dict[str, Any]  # as saved: older specs lack newer fields (`complete_saved_spec`)
    input_normalization: InputNormalization = IMAGENET_NORMALIZATION
    eval_crop_padding: int = REFERENCE_EVAL_CROP_PADDING
    class_names: tuple[str, ...] | None = None
    eval_preprocessing: str = REFERENCE_EVAL_PREPROCESSING
    resize_method: str = UNRECORDED_RESIZE_METHODS[REFERENCE_EVAL_PREPROCESSING]

    @classmethod
    def of(
        cls,
        spec: ModelSpec,
        input_normalization: InputNormalization,
        eval_crop_padding: int = REFERENCE_EVAL_CROP_PADDING,
        class_names: Sequence[str] | None = None,
        eval_preprocessing: str = REFERENCE_EVAL_PREPROCESSING,
        resize_method: str | None = None,
    ) -> ModelRecord:
        """`resize_method` None: the official one of `eval_preprocessing` (OFFICIAL_RESIZE_METHODS)."""
        names = None if class_names is None else tuple(class_names)
        resize_method = resize_method or OFFICIAL_RESIZE_METHODS[eval_preprocessing]
        return cls(
            spec_to_json(spec),
            input_normalization,
            eval_crop_padding,
            names,
            eval_preprocessing,
            resize_method,
        )

    def to_json(self) -> dict[str, Any]:
        """The spec's fields, and beside them the record's own (no ModelSpec field bears their names)."""
        record = {
            **self.spec,
            "input_normalization": dataclasses.asdict(self.input_normalization),
            "eval_crop_padding": self.eval_crop_padding,
        }
        if self.class_names is not None:
            record["class_names"] = list(self.class_names)
        if self.eval_preprocessing != REFERENCE_EVAL_PREPROCESSING:
            record["eval_preprocessing"] = self.eval_preprocessing
        record["resize_method"] = self.resize_method
        return json.loads(json.dumps(record))

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> ModelRecord:
        spec = dict(saved)
        normalization = spec.pop("input_normalization", None)
        eval_crop_padding = spec.pop("eval_crop_padding", REFERENCE_EVAL_CROP_PADDING)
        class_names = spec.pop("class_names", None)
        eval_preprocessing = spec.pop("eval_preprocessing", REFERENCE_EVAL_PREPROCESSING)
        resize_method = spec.pop("resize_method", UNRECORDED_RESIZE_METHODS[eval_preprocessing])
        return cls(
            spec=spec,
            input_normalization=(
                IMAGENET_NORMALIZATION
                if normalization is None
                else InputNormalization(mean=tuple(normalization["mean"]), std=tuple(normalization["std"]))
            ),
            eval_crop_padding=eval_crop_padding,
            class_names=None if class_names is None else tuple(class_names),
            eval_preprocessing=eval_preprocessing,
            resize_method=resize_method,
        )

    def model_spec(self) -> ModelSpec:
        return spec_from_json(self.spec)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.eval_preprocessing, self.eval_crop_padding, self.resize_method)

    def resolution(self) -> int:
        """The image size the weights were evaluated at (their spec's)."""
        return complete_saved_spec(self.spec)["resolution"]


def describe_spec(description: dict[str, Any]) -> str:
    return (
        f"{description.get('name')} (width {description.get('width')}, depth {description.get('depth')}, "
        f"{description.get('num_classes')} classes)"
    )


def check_same_model(saved: dict[str, Any], spec: ModelSpec, where: str) -> None:
    """Compares the fields that change the parameters; dtype, remat and the like may differ."""
    expected, saved = spec_to_json(spec), complete_saved_spec(saved)
    fields = (
        "width",
        "depth",
        "num_classes",
        "stages",
        "stem_filters",
        "head_filters",
        "fix_head_stem",
        "min_filters_fraction",
    )
    mismatched = [field for field in fields if saved[field] != expected[field]]
    if mismatched == ["num_classes"]:
        raise CheckpointError(
            f"The checkpoint at {where} has a classifier of {saved['num_classes']} classes (its weights' "
            f"dataset, e.g. ImageNet-21k's 21843), but this dataset has {expected['num_classes']}. "
            f"Evaluate it on a dataset of its classes, classify images with predict.py, or fine-tune it on "
            f"this dataset (config.init_checkpoint)."
        )
    if mismatched:
        raise CheckpointError(
            f"The checkpoint at {where} is of model {describe_spec(saved)}, but the config asks for "
            f"{describe_spec(expected)} (differing: {', '.join(mismatched)}). Point --config at the "
            f"matching variant, or use another --workdir / checkpoint."
        )


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


def locate_checkpoint(path: str, step: int | None = None) -> CheckpointLocation:
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
            f"The workdir {path} has no checkpoint of step {step}; it has steps {steps}. "
            f"Pick one with --step."
        )
    return step_location(os.path.join(path, CHECKPOINTS_DIRECTORY, str(steps[-1] if step is None else step)))


def _first_line(error: Exception, limit: int = 400) -> str:
    """Tensorstore errors carry a page of JSON spec after the cause; the cause is what a user needs."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


def read_items(step_directory: str, **items: ocp.args.CheckpointArgs) -> Any:
    """Reads some items of a step directory; any failure of orbax or tensorstore as a
    DamagedCheckpointError naming the directory and the first line of the cause."""
    reader = ocp.Checkpointer(
        ocp.CompositeCheckpointHandler(),
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}),
    )
    try:
        return reader.restore(step_directory, args=ocp.args.Composite(**items))
    except Exception as error:  # orbax and tensorstore raise many types for unreadable files
        raise DamagedCheckpointError(
            f"Cannot read the checkpoint at {step_directory}: {_first_line(error)}. It is truncated or "
            f"corrupt (a file under it was deleted, cut short or overwritten), or it holds a train state of "
            f"another structure; use another step, or restore this one from a copy."
        ) from error
    finally:
        reader.close()


@functools.cache
def abstract_variables(spec: ModelSpec) -> dict[str, Any]:
    """Shapes and dtypes of `{"params", "batch_stats"}` for `spec`, traced without allocating them
    (once per spec: --follow reads many checkpoints of one model)."""
    images = jax.ShapeDtypeStruct((1, spec.resolution, spec.resolution, 3), jnp.float32)
    return jax.eval_shape(EfficientNet(spec).init, jax.random.key(0), images)


def read_model_record(step_directory: str) -> ModelRecord:
    """The `model` item of a step directory, on the calling process (`read_shared_model_record`: on
    every host)."""
    return ModelRecord.from_json(read_items(step_directory, model=ocp.args.JsonRestore()).model)


def read_progressive_schedule(step_directory: str) -> dict[str, Any] | None:
    """The progressive-learning schedule stored at a step directory (progressive.schedule_to_json); None
    for a checkpoint trained without progressive learning."""
    if not os.path.isdir(os.path.join(step_directory, PROGRESSIVE_LEARNING_ITEM)):
        return None
    return read_items(step_directory, **{PROGRESSIVE_LEARNING_ITEM: ocp.args.JsonRestore()})[
        PROGRESSIVE_LEARNING_ITEM
    ]


def check_same_schedule(step_directory: str, schedule: Sequence[progressive.Stage]) -> None:
    """Stops a job resuming from `step_directory` when its config now gives another progressive-learning
    schedule (`schedule`, empty without progressive learning) than the checkpoint was trained on. Which
    stage a step belongs to, and at what size and regularisation it trains, is the schedule's: a run
    that changed it half-way would be neither the old run nor the new one, and a CheckpointError (as
    for a checkpoint of another model) makes the user choose. Read by process 0, raised on every host."""

    def read() -> np.ndarray:
        differences = progressive.schedule_differences(read_progressive_schedule(step_directory), schedule)
        if differences:
            raise CheckpointError(
                f"The checkpoint at {step_directory} was trained on another progressive-learning "
                f"schedule than the config gives ({'; '.join(differences)}). Resume with the config it was "
                f"started with "
                f"(config.progressive, the number of steps, the train size, dropout, magnitude and alphas), "
                f"or use another --workdir."
            )
        return np.array(0)

    on_coordinator(read, lambda: np.array(0))


def normalization_to_array(normalization: InputNormalization) -> np.ndarray:
    """The float64 values as int32 pairs: a broadcast between hosts would round float64 to float32
    (JAX without x64), and every host must normalise with the same numbers as the checkpoint says."""
    return np.array([normalization.mean, normalization.std], np.float64).view(np.int32)


def normalization_from_array(array: np.ndarray) -> InputNormalization:
    mean, std = np.asarray(array, np.int32).view(np.float64).tolist()
    return InputNormalization(mean=tuple(mean), std=tuple(std))


def read_shared_model_record(step_directory: str) -> ModelRecord:
    """The `model` item of a step directory, read by process 0 and given to every host (its JSON, as
    bytes: a broadcast carries arrays), so that every host evaluates and trains with the normalisation,
    preprocessing and size process 0 read. Two broadcasts: the length, then the bytes."""
    encoded: list[np.ndarray] = []

    def read_length() -> np.ndarray:
        text = json.dumps(read_model_record(step_directory).to_json())
        encoded.append(np.frombuffer(text.encode(), np.uint8))
        return np.array(encoded[0].size, np.int32)

    length = int(on_coordinator(read_length, lambda: np.array(0, np.int32)))
    data = on_coordinator(lambda: encoded[0], lambda: np.zeros(length, np.uint8))
    return ModelRecord.from_json(json.loads(np.asarray(data, np.uint8).tobytes()))


def read_variables(location: CheckpointLocation, spec: ModelSpec, weights: str) -> dict[str, Any]:
    """`{"params", "batch_stats"}` of the `weights` ('ema' or 'raw') stored at `location`, as host
    arrays, after checking that the checkpoint holds the model `spec` describes. Host arrays, because
    replicating them to the devices is one transfer, where device arrays cost a small compiled copy
    per leaf shape."""
    where = location.step_directory
    check_same_model(read_model_record(where).spec, spec, where)
    params_field, stats_field = WEIGHT_FIELDS[weights]
    shapes = abstract_variables(spec)
    target = {params_field: shapes["params"], stats_field: shapes["batch_stats"]}
    restore = ocp.args.PyTreeRestore(
        item=target,
        restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target),
        partial_restore=True,
    )
    state = read_items(where, state=restore).state
    return {"params": state[params_field], "batch_stats": state[stats_field]}


def on_coordinator(read: Callable[[], T], like: Callable[[], T]) -> T:
    """`read()` on process 0, broadcast to every host (the others build a placeholder with `like()`).
    A CheckpointError on process 0 is raised on every host, of the same class (damage or not), so
    every host takes the same branch and none waits in a collective forever."""
    if jax.process_count() == 1:
        return read()
    value, error = None, None
    if jax.process_index() == 0:
        try:
            value = read()
        except CheckpointError as caught:
            error = caught
    failure = 0 if error is None else 1 if isinstance(error, DamagedCheckpointError) else 2
    failure = int(multihost_utils.broadcast_one_to_all(np.array(failure)))
    if failure:
        kind = DamagedCheckpointError if failure == 1 else CheckpointError
        raise error or kind("Process 0 could not read the checkpoint; its log names the problem.")
    return multihost_utils.broadcast_one_to_all(value if jax.process_index() == 0 else like())


class Checkpointer:
    """The train state's checkpoints under `<workdir>/checkpoints`, through an orbax `CheckpointManager`.

    Saves are asynchronous and atomic (orbax writes a temporary directory and renames it when
    complete; leftovers of an interrupted save are removed when the next job opens the directory).
    Resuming passes over damaged checkpoints to the newest readable one.
    """

    def __init__(self, directory: str, max_to_keep: int, asynchronous: bool = True):
        self.directory = os.path.abspath(directory)
        self.damaged_directory = os.path.join(os.path.dirname(self.directory), DAMAGED_CHECKPOINTS_DIRECTORY)
        self._manager: ocp.CheckpointManager | None = None
        if jax.process_index() == 0:
            os.makedirs(self.directory, exist_ok=True)  # orbax cannot create it with active_processes set
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                enable_async_checkpointing=asynchronous,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    primary_host=0, active_processes={0}
                ),
                create=False,
                cleanup_tmp_directories=True,
            )
            items = ("state", "model", PROGRESSIVE_LEARNING_ITEM)
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=items)
        self._last_saved: int | None = None

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        """Closes, so the save in flight completes and no orbax thread outlives the job. When the job
        is already failing, a save error here is logged rather than raised over the first error."""
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except CheckpointError as error:
            logging.error("%s", error)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, agreed by all hosts."""
        step = self._manager.latest_step() if self._manager else None
        if jax.process_count() > 1:
            step = int(multihost_utils.broadcast_one_to_all(-1 if step is None else step))
            step = None if step < 0 else step
        return step

    def save(
        self, step: int, state: Any, model: ModelRecord, schedule: Sequence[progressive.Stage] = ()
    ) -> None:
        """Starts an asynchronous save of a host-local (unreplicated) state, with the record of its
        model and the progressive-learning schedule it is trained on (none: not saved). A failure of
        this save or of the previous one (they surface here) raises CheckpointSaveError."""
        if self._manager:
            items = {
                "state": ocp.args.StandardSave(jax.device_get(state)),
                "model": ocp.args.JsonSave(model.to_json()),
            }
            if schedule:
                items[PROGRESSIVE_LEARNING_ITEM] = ocp.args.JsonSave(progressive.schedule_to_json(schedule))
            args = ocp.args.Composite(**items)
            with self._save_errors(step):
                self._manager.save(step, args=args, force=True)
            self._last_saved = step

    def wait(self) -> None:
        """Waits for the save in flight; raises CheckpointSaveError if it failed."""
        if self._manager:
            with self._save_errors(self._last_saved):
                self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the save in flight, then releases orbax's threads; raises CheckpointSaveError if
        that save failed (after releasing them)."""
        if self._manager:
            try:
                self.wait()
            finally:
                self._manager.close()
                self._manager = None

    @contextlib.contextmanager
    def _save_errors(self, step: int | None) -> Iterator[None]:
        try:
            yield
        except Exception as error:  # orbax re-raises the writer thread's error, of any type
            self._manager.reload()  # forget the failed step: only finalized directories are checkpoints
            previous = self._manager.latest_step()
            kept = (
                f"step {previous} in {self.directory} is intact"
                if previous is not None
                else "none was written before"
            )
            raise CheckpointSaveError(
                f"Saving the checkpoint of step {step} to {self.directory} failed: {_first_line(error)}. The "
                f"previous checkpoint, {kept}. Free disk space or fix the permissions, then restart the "
                f"same command to resume."
            ) from error

    def resume(self, target: Any, spec: ModelSpec) -> tuple[int, Any]:
        """(step, state) of the newest readable checkpoint, read into the structure of `target`, on
        every host; (0, target) when there is none.

        A newer checkpoint that cannot be read is moved aside to `<workdir>/damaged_checkpoints/` (never
        deleted) with a warning, so a restarted job never loops on it. When none is readable nothing
        is moved and CheckpointError names each one and why. A checkpoint of another model is a
        CheckpointError at once: that is a wrong config, not damage.
        """

        def read() -> tuple[np.ndarray, Any]:
            damaged = []
            for step in sorted(self._manager.all_steps(), reverse=True):
                where = os.path.join(self.directory, str(step))
                try:
                    check_same_model(read_model_record(where).spec, spec, where)
                    state = read_items(where, state=ocp.args.StandardRestore(target)).state
                except DamagedCheckpointError as error:
                    damaged.append((step, error))
                    continue
                for damaged_step, error in damaged:
                    self._move_aside(damaged_step, error, step)
                return np.array(step), state
            if damaged:
                reasons = "; ".join(
                    f"step {step}: {_first_line(error.__cause__ or error)}" for step, error in damaged
                )
                raise CheckpointError(
                    f"No checkpoint in {self.directory} can be read ({reasons}). Restore one from a copy, or "
                    f"move {self.directory} aside to train from scratch."
                )
            return np.array(0), target

        step, state = on_coordinator(read, lambda: (np.array(0), target))
        return int(step), state

    def _move_aside(self, step: int, error: Exception, resume_step: int) -> None:
        source = os.path.join(self.directory, str(step))
        os.makedirs(self.damaged_directory, exist_ok=True)
        destination = os.path.join(self.damaged_directory, str(step))
        if os.path.exists(destination):
            destination = f"{destination}-{int(time.time())}"
        os.rename(source, destination)
        self._manager.reload()
        logging.warning(
            "Checkpoint of step %d is damaged (%s); moved it to %s and resuming from step %d.",
            step, _first_line(error.__cause__ or error), destination, resume_step,
        )


def write_weights(variables: Any, record: ModelRecord, workdir: str, tx: Any) -> str:
    """Saves `variables` ({"params", "batch_stats"}, e.g. converted published weights) as the step-0
    checkpoint of a job in `workdir` (`<workdir>/checkpoints/0/{state,model}`) and returns that step
    directory. Its TrainState holds them both as the raw and as the EMA variables, so `--weights=ema`
    and `--weights=raw` agree, and the fresh state of `tx` (an optax GradientTransformation), so the
    tree has the structure of a job training with `tx`; `record` says what the weights are."""
    state = steps.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        ema_params=variables["params"],
        ema_batch_stats=variables["batch_stats"],
    )
    checkpointer = Checkpointer(
        os.path.join(workdir, CHECKPOINTS_DIRECTORY), max_to_keep=1, asynchronous=False
    )
    checkpointer.save(0, state, record)
    checkpointer.close()
    return os.path.join(checkpointer.directory, "0")
