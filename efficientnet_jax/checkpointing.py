"""Checkpoints with orbax: the full train state plus a JSON description of the model.

Only the coordinator (process 0) touches the files; on restore it reads them and the state is
broadcast to the other hosts, so shared and host-local file systems behave alike. Saves are
asynchronous: the step loop only waits for the device-to-host copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from efficientnet_jax.scaling import ModelSpec


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, truncated, or of another model."""


def spec_to_json(spec: ModelSpec) -> dict[str, Any]:
    """The spec as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def describe_spec(description: dict[str, Any]) -> str:
    return (
        f"{description.get('name')} (width {description.get('width')}, depth {description.get('depth')}, "
        f"{description.get('num_classes')} classes)"
    )


def check_same_model(saved: dict[str, Any], spec: ModelSpec, where: str) -> None:
    """Compares the fields that change the parameters; dtype, remat and the like may differ."""
    expected = spec_to_json(spec)
    fields = ("width", "depth", "num_classes", "stages", "stem_filters", "head_filters")
    mismatched = [field for field in fields if saved.get(field) != expected[field]]
    if mismatched:
        raise CheckpointError(
            f"The checkpoint at {where} is of model {describe_spec(saved)}, but the config asks for "
            f"{describe_spec(expected)} (differing: {', '.join(mismatched)}). Point --config at the "
            f"matching variant, or use another --workdir / checkpoint."
        )


class Checkpointer:
    """Wraps an orbax `CheckpointManager` over `<workdir>/checkpoints`."""

    def __init__(self, directory: str, max_to_keep: int, asynchronous: bool = True):
        self.directory = os.path.abspath(directory)
        self.is_coordinator = jax.process_index() == 0
        self._manager: Optional[ocp.CheckpointManager] = None
        if self.is_coordinator:
            os.makedirs(self.directory, exist_ok=True)  # orbax cannot create it with active_processes set
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                enable_async_checkpointing=asynchronous,
                multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}),
                create=False,
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "model"))

    def latest_step(self) -> Optional[int]:
        """The newest complete checkpoint's step, agreed by all hosts."""
        step = self._manager.latest_step() if self._manager else None
        if jax.process_count() > 1:
            step = int(multihost_utils.broadcast_one_to_all(-1 if step is None else step))
            step = None if step < 0 else step
        return step

    def save(self, step: int, state: Any, spec: ModelSpec) -> None:
        """Starts an asynchronous save of a host-local (unreplicated) state."""
        if self._manager:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(jax.device_get(state)), model=ocp.args.JsonSave(spec_to_json(spec))
                ),
                force=True,
            )

    def restore(self, step: int, target: Any, spec: ModelSpec) -> Any:
        """Restores `step` into the structure of `target` on every host."""
        restored = target
        if self._manager:
            where = os.path.join(self.directory, str(step))
            try:
                saved_model = self._manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))
            except Exception as error:  # orbax raises many types for unreadable files
                raise CheckpointError(
                    f"Cannot read the checkpoint at {where}: {error}. It may be truncated or corrupt; delete "
                    f"that step's directory to resume from an earlier one."
                ) from error
            check_same_model(saved_model.model, spec, where)
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
                ).state
            except Exception as error:
                raise CheckpointError(
                    f"Cannot restore the train state from {where}: {error}. The checkpoint may be truncated or "
                    f"corrupt, or written by an incompatible configuration (optimizer, number of classes)."
                ) from error
        if jax.process_count() > 1:
            restored = multihost_utils.broadcast_one_to_all(restored)
        return restored

    def wait(self) -> None:
        if self._manager:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager:
            self._manager.wait_until_finished()
            self._manager.close()
