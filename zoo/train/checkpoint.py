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

from zoo.config import ModelConfig
from zoo.semantics import RUNTIME_FIELDS


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


def _this_process() -> ocp.options.MultiprocessingOptions:
    """Reads outside the manager involve this process alone: orbax's default ends a restore with a barrier over
    every process, which hangs a job in which one process reads (process 0 exporting, sampling) and stalls
    readers that have nothing to agree on. Every process that reads, reads the same files."""
    return ocp.options.MultiprocessingOptions(primary_host=jax.process_index(), active_processes={jax.process_index()})


class CheckpointFailed(Exception):
    """A checkpoint could not be written."""


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
        return ocp.Checkpointer(ocp.JsonCheckpointHandler(), multiprocessing_options=_this_process()).restore(
            self.directory / str(step) / "meta"
        )

    def save(self, step: int, state, meta: dict[str, Any]) -> None:
        """Start saving (returns once the arrays are copied off the devices; the write continues)."""
        assert self._manager is not None, "a read-only Checkpoints cannot save"
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        except OSError as e:
            raise CheckpointFailed(f"checkpoint step {step} could not be written: {e}") from e

    def restore(self, step: int, abstract_state) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of checkpoint `step`. `abstract_state`: a pytree of jax.ShapeDtypeStruct with the
        target `sharding` on every leaf; arrays come back with those shardings, whatever mesh saved them."""
        if self._manager is None:  # read only
            state = ocp.StandardCheckpointer(multiprocessing_options=_this_process()).restore(
                self.directory / str(step) / "state", abstract_state
            )
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
        return ocp.Checkpointer(
            ocp.PyTreeCheckpointHandler(multiprocessing_options=_this_process()),
            multiprocessing_options=_this_process(),
        ).restore(self.directory / str(step) / "state", args=args)["params"]

    def layout_mismatch(self, step: int, abstract_state) -> str | None:
        """None when checkpoint `step`'s state has the arrays `abstract_state` asks for (names and shapes, from
        its metadata, nothing read), else the first difference: a recipe whose optimizer state differs (another
        optimizer, frozen parameters) cannot restore it, and that is not a damaged checkpoint."""
        stored = self._stored_tree(step)
        have, want = _shapes(stored), _shapes(abstract_state)
        for name in sorted(set(have) | set(want)):
            if have.get(name) != want.get(name):
                return f"{name}: {have.get(name, 'absent')} in the checkpoint, {want.get(name, 'absent')} now"
        return None

    def _stored_tree(self, step: int):
        """Checkpoint `step`'s state as a tree of array metadata (shape, dtype), from its metadata file."""
        return (
            ocp.PyTreeCheckpointHandler(multiprocessing_options=_this_process())
            .metadata(self.directory / str(step) / "state")
            .tree
        )

    def stored_bytes(self, step: int) -> dict[str, int]:
        """Bytes of each top-level item of checkpoint `step`'s state ("params", "opt_state", ...), from its
        metadata (nothing read): what a restore of that item allocates."""
        tree = self._stored_tree(step)
        return {
            key: sum(
                int(np.prod(leaf.shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
                for leaf in jax.tree.leaves(item)
            )
            for key, item in tree.items()
        }

    def check(self) -> None:
        """CheckpointFailed if an asynchronous save has failed (a full disk, a lost mount): the run stops at the
        step it notices, not at the next save, `checkpoint_interval` steps later. Never blocks: a save still
        being written is checked on a later step."""
        if self._manager is not None and not self._manager.is_saving_in_progress():
            self.wait()  # returns at once; raises what the finished save's threads raised

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk; CheckpointFailed if one failed."""
        if self._manager is None:
            return
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as e:  # noqa: BLE001  (orbax re-raises whatever its writer threads raised)
            raise CheckpointFailed(f"a checkpoint save failed: {type(e).__name__}: {e}") from e

    def set_aside(self, step: int) -> Path:
        """Move checkpoint `step` (one that does not restore) to `<run_dir>/broken_checkpoints/<step>`, out of the
        steps the run counts, kept for inspection; returns where it went."""
        target = self.directory.parent / "broken_checkpoints" / str(step)
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            target = target.with_name(f"{step}-{os.getpid()}")
        os.replace(self.directory / str(step), target)
        if self._manager is not None:
            self._manager.reload()
        return target

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """{"opt_state/0/mu/embed": shape}: leaves by a path that names dict keys, attributes (optax's NamedTuple
    states) and indices alike, as orbax's metadata (plain dicts and lists) and the live tree spell them."""

    def name(entry) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)

    return {
        "/".join(name(e) for e in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if hasattr(leaf, "shape")
    }


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) carrying `shardings` (same structure)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
