"""A trained run read back for use: its config, its tokenizer and the parameters of one checkpoint, alone.

Sampling, evaluation, export, init.run and the stability probes all read a run through `load_run`. Only the
params subtree of the checkpoint is restored (an orbax partial restore), straight into the shardings that the
model's logical axes give on `mesh` (zoo/sharding.py): no optimizer state is read and no training program is
built, so a model that training and `generate(mesh=...)` shard can be sampled, evaluated and exported from
its run sharded the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from zoo.model import abstract_params, build
from zoo.sharding import make_mesh, param_shardings
from zoo.train.checkpoint import Checkpoints, abstract_like
from zoo.train.config import Config, UserError, load_run_config
from zoo.train.tokenizer import load_tokenizer


@dataclasses.dataclass(frozen=True)
class Trained:
    """One checkpoint of a run: `config` is the run's resolved config (config.model the model it trained)."""

    config: Config
    params: Any
    tokenizer: Any
    step: int

    @property
    def model(self) -> nn.Module:
        return build(self.config.model)


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The steps of a run's complete checkpoints; UserError if it has none."""
    steps = Checkpoints(run_dir, read_only=True).all_steps()
    if not steps:
        raise UserError(f"no checkpoint in {run_dir}")
    return steps


def load_params(run_dir: str | Path, config: Config, step: int, mesh: Mesh | None = None):
    """The params of checkpoint `step` of the run `config` describes, restored onto `mesh` (default: one
    device) in the run's own layout (config.model.scan_layers)."""
    mesh = mesh if mesh is not None else make_mesh(1, 1, 1, devices=jax.devices()[:1])
    boxed = abstract_params(config.model)
    abstract = abstract_like(nn.meta.unbox(boxed), param_shardings(boxed, mesh))
    return Checkpoints(run_dir, read_only=True).restore_params(step, abstract)


def load_run(run_dir: str | Path, step: int | None = None, mesh: Mesh | None = None) -> Trained:
    """Checkpoint `step` (default: the latest) of a run directory with the config it was trained with (its own,
    saved with it: a run resumed with another recipe has several) and the run's tokenizer; the params restored
    onto `mesh` (default: one device)."""
    load_run_config(run_dir)  # a clear error for a directory that is not a run
    steps = checkpoint_steps(run_dir)
    step = steps[-1] if step is None else step
    if step not in steps:
        raise UserError(f"no checkpoint of step {step} in {run_dir}; saved: {', '.join(map(str, steps))}")
    config = Config.from_dict(Checkpoints(run_dir, read_only=True).meta(step)["config"])
    tokenizer = load_tokenizer(Path(run_dir) / "tokenizer")
    return Trained(config, load_params(run_dir, config, step, mesh), tokenizer, step)
