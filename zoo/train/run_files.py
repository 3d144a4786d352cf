"""The files a run keeps beside its checkpoints: config.json, tokenizer/ and history.jsonl, and the recipe check.

A run directory is defined by its checkpoints: each one stores the resolved config it was trained with (its
`meta` item, zoo/train/checkpoint.py), and readers (sampling, evaluation, export, init.run) take the config from
the checkpoint they load. config.json and tokenizer/ are written when the run's first checkpoint is, each
atomically (written aside, then renamed into place), so a run that fails before its first checkpoint leaves
nothing a later run would trust: the next run into that directory rewrites both.

Resuming checks the new invocation's recipe against the checkpoint's: a run that silently changed its learning
rate, batch or data halfway is not the run its config says. A changed recipe field is refused, naming it,
unless `run.allow_recipe_change=true`; then the change is appended to history.jsonl (step, field, before, after)
and config.json holds the new values, so the history of the run stays readable from the run directory.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax

from zoo.train.config import UserError
from zoo.train.run_lock import describe, holder_if_locked

HISTORY_FILE = "history.jsonl"
CONTENTS = "the data's contents (token cache entries)"
# Fields that are not the recipe: where things are written, how often the run reports, the mesh (a checkpoint
# restores onto any mesh), the starting weights (a resumed run starts from its own checkpoint) and the run's
# length (extending a run is what resuming is for).
NOT_RECIPE = {
    "preset",
    "origin",
    "data.cache_dir",
    "run.dir",
    "run.steps",
    "run.eval_interval",
    "run.eval_batches",
    "run.checkpoint_interval",
    "run.keep",
    "run.log_interval",
    "run.peak_flops",
    "run.progress",
    "run.sample_tokens",
    "run.sample_prompt",
    "run.sample_temperature",
    "run.async_checkpoint",
    "run.distributed",
    "run.memory_check",
    "run.memory_limit_gb",
    "run.profile",
    "run.wandb",
    "run.export",
    "run.allow_recipe_change",
}
NOT_RECIPE_SECTIONS = ("model.", "mesh.", "init.")  # the model is checked on its own (checkpoint.model_mismatch)


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= {f"{key}.{k}": v for k, v in value.items()}
        else:
            out[key] = value
    return out


def recipe_changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{field: (the checkpoint's value, the new value)} for every recipe field that differs (configs as dicts)."""
    before, after = _flat(saved), _flat(now)
    keys = sorted(k for k in set(before) | set(after) if k not in NOT_RECIPE and not k.startswith(NOT_RECIPE_SECTIONS))
    return {k: (before.get(k), after.get(k)) for k in keys if _same(before.get(k)) != _same(after.get(k))}


def _same(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value  # tuples come back from JSON as lists


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    shown = [f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in list(changes.items())[:3]]
    more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
    return "; ".join(shown) + more


def write_json(path: Path, value: Any) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(json.dumps(value, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def write_tokenizer(tokenizer, directory: Path) -> None:
    """Saved beside `directory`, then swapped in: an old tokenizer is replaced whole or not at all."""
    fresh = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    tokenizer.save(fresh)
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
    os.replace(fresh, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_run_files(run_dir: Path, config: dict[str, Any], tokenizer) -> None:
    """config.json and tokenizer/ of a new run (process 0, just before its first checkpoint)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_tokenizer(tokenizer, run_dir / "tokenizer")
    write_json(run_dir / "config.json", config)


def record_changes(run_dir: Path, step: int, changes: dict[str, tuple[Any, Any]], config: dict[str, Any]) -> None:
    """A resumed run whose recipe changed (run.allow_recipe_change): one history row, and config.json updated."""
    if changes:
        row = {
            "step": step,
            "time": datetime.datetime.now().isoformat(timespec="seconds"),
            "changed": {k: {"before": a, "after": b} for k, (a, b) in changes.items()},
        }
        with open(run_dir / HISTORY_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
    write_json(run_dir / "config.json", config)


# --- checks before anything is written (prepare()) ---------------------------------------------------------------


def check_available(run_dir: Path) -> None:
    """UserError unless this process may train into `run_dir`: no live trainer holds it, and it (or the
    nearest folder above it that exists) is writable. Cheap, so it runs before the corpus is read."""
    holder = holder_if_locked(run_dir)
    if holder is not None:
        raise UserError(f"run.dir: {run_dir} is in use by another trainer: {describe(holder)}; choose another run.dir")
    existing = next(p for p in [run_dir, *run_dir.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"run.dir: {existing} is not a writable directory, so {run_dir} cannot be written")


def check_recipe(config, saved: dict | None, step: int | None, contents: list[str]) -> dict[str, tuple[Any, Any]]:
    """The recipe fields a resumed run changes, the training data's `contents` (data_setup.TrainingData) among
    them; UserError naming them unless run.allow_recipe_change."""
    if saved is None:
        return {}
    changes = recipe_changes(saved["config"], config.to_dict())
    if "corpus" in saved and saved["corpus"] != contents:  # the same data.path, edited
        changes[CONTENTS] = (saved["corpus"], contents)
    if changes and not config.run.allow_recipe_change:
        raise UserError(
            f"{config.run_dir} holds a checkpoint (step {step}) trained with another recipe "
            f"({describe_changes(changes)}); "
            "resume with the same values, or set run.allow_recipe_change=true to change them (recorded in "
            f"{HISTORY_FILE}), or choose another run.dir"
        )
    return changes


def check_space(run_dir: Path, abstract_state) -> str:
    """A line on free space against one checkpoint's size (the train state's bytes); UserError if one does not fit."""
    need = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))
    existing = next(p for p in [run_dir, *run_dir.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if free < need:
        raise UserError(
            f"run.dir: {existing} has {free / 2**30:.2f} GiB free, less than one checkpoint ({need / 2**30:.2f} GiB)"
        )
    return f"run.dir: {free / 2**30:,.1f} GiB free; a checkpoint takes {need / 2**30:.3g} GiB"
