"""Checkpoints of a run: orbax CheckpointManager under `<run_dir>/checkpoints/<step>/`.

Each checkpoint holds two items:

  state  the train state pytree {"params", "opt_state", "step", "rng"}, saved as sharded arrays (every
         host writes its own shards) and restored onto whatever shardings the caller asks for, so a
         checkpoint written on one mesh loads onto another.
  meta   JSON: the step, the data stream position (TrainStream.state: the step and the rows taken from
         each source, global, so it restores exactly on any number of hosts), the resolved config, the model
         config it was trained with.

Orbax writes a checkpoint into a temporary directory and renames it when complete, so a process killed
mid-save leaves only a temporary directory, which `latest_step` ignores: restarts resume from the last
complete checkpoint. Saves are asynchronous (the arrays are copied to host, then written in the background).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from zoo.config import RUNTIME_FIELDS, ModelConfig


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).resolve() / "checkpoints"


def model_mismatch(saved: dict[str, Any], current: ModelConfig) -> str | None:
    """None when a checkpoint trained with model config `saved` (a dict) can resume as `current`, else a
    short description of the differing fields."""
    now = current.to_dict()
    keys = sorted((set(saved) | set(now)) - set(RUNTIME_FIELDS))
    diffs = [f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in keys if saved.get(k) != now.get(k)]
    if not diffs:
        return None
    more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
    return "; ".join(diffs[:3]) + more


class Checkpoints:
    """A run's checkpoints: keep the last `keep`, save asynchronously, restore onto given shardings.

    `read_only=True` inspects a run directory without creating, cleaning or locking anything in it (used
    before the inputs of a new invocation are known to be valid, and by sample.py).
    """

    def __init__(
        self, run_dir: str | os.PathLike, keep: int | None = 3, async_save: bool = True, read_only: bool = False
    ):
        self.directory = checkpoint_dir(run_dir)
        self.read_only = read_only
        self._manager = None
        if read_only:
            return  # no manager: it would log warnings about read-only mode and may touch the directory
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True
        )  # leftovers of a killed save
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints (temporary directories of unfinished saves are skipped)."""
        if self._manager is not None:
            return sorted(self._manager.all_steps())
        return sorted(ocp.path.step.checkpoint_steps(self.directory)) if self.directory.is_dir() else []

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def meta(self, step: int | None = None) -> dict[str, Any]:
        """The JSON item of checkpoint `step` (default: the latest)."""
        step = self.latest_step() if step is None else step
        return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(self.directory / str(step) / "meta")

    def save(self, step: int, state, meta: dict[str, Any]) -> None:
        """Start saving (returns once the arrays are copied off the devices; the write continues)."""
        assert self._manager is not None, "a read-only Checkpoints cannot save"
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True
        )

    def restore(self, step: int, abstract_state) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of checkpoint `step`. `abstract_state`: a pytree of jax.ShapeDtypeStruct with the
        target `sharding` on every leaf; arrays come back with those shardings, whatever mesh saved them."""
        if self._manager is None:  # read only
            state = ocp.StandardCheckpointer().restore(self.directory / str(step) / "state", abstract_state)
            return state, self.meta(step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        )
        return restored["state"], restored["meta"]

    def restore_params(self, step: int, abstract_params):
        """The params subtree of checkpoint `step` alone (an orbax partial restore: the optimizer state is
        neither read nor allocated). `abstract_params`: ShapeDtypeStructs with the target shardings."""
        target = {"params": abstract_params}
        args = ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
        )
        return ocp.PyTreeCheckpointer().restore(self.directory / str(step) / "state", args=args)["params"]

    def stored_bytes(self, step: int) -> dict[str, int]:
        """Bytes of each top-level item of checkpoint `step`'s state ("params", "opt_state", ...), from its
        metadata (nothing read): what a restore of that item allocates."""
        tree = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state").item_metadata.tree
        return {
            key: sum(
                int(np.prod(leaf.shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
                for leaf in jax.tree.leaves(item)
            )
            for key, item in tree.items()
        }

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) carrying `shardings` (same structure)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
