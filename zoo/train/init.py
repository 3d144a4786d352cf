"""Starting a run from existing weights: a Hugging Face checkpoint (init.hf) or another zoo run (init.run).

The model is the checkpoint's. What the preset and the command line say about it must agree with it
(zoo.semantics: the fields that decide what the parameters compute) or the run is refused, naming
the field; the rest follows this run's config: how the model runs (dtype, remat, attention kernel, scan)
and training-only fields (dropout, z-loss). The vocabulary is the checkpoint's, and so is the tokenizer.
A run started this way that has a checkpoint of its own resumes from that, like any run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax

from zoo import hf
from zoo.config import RUNTIME_FIELDS, TRAINING_FIELDS, ModelConfig
from zoo.model import stack_layers, unstack_layers
from zoo.semantics import semantic_differences
from zoo.sharding import make_mesh
from zoo.train.checkpoint import Checkpoints
from zoo.train.config import Config, UserError, load_run_config
from zoo.train.objectives import make_objective
from zoo.train.state import programs
from zoo.train.tokenizer import load_tokenizer

# What this run decides, whatever the checkpoint says.
_THIS_RUN = (*RUNTIME_FIELDS, *TRAINING_FIELDS, "scan_layers", "param_dtype")


@dataclasses.dataclass(frozen=True)
class Start:
    """The starting point: the model config, its parameters (host arrays), and the tokenizer."""

    cfg: ModelConfig
    params: Any
    tokenizer: Any


def source(config: Config) -> tuple[str, Path] | None:
    """("init.hf" or "init.run", the directory), or None for a fresh init."""
    init = config.init
    if init.hf is not None:
        return "init.hf", Path(init.hf)
    if init.run is not None:
        return "init.run", Path(init.run)
    return None


def agreed_model(config: Config, checkpoint: ModelConfig, key: str) -> ModelConfig:
    """The checkpoint's model with this run's runtime and training fields; UserError if the preset or the
    command line sets a semantic field (other than the vocabulary) to another value than the checkpoint."""
    differences = semantic_differences(config.model.replace(vocab_size=checkpoint.vocab_size), checkpoint)
    if differences:
        name, wanted, found = differences[0]
        given = "the command line" if f"model.{name}" in config.explicit else f"preset {config.preset!r}"
        more = f" (also {', '.join(d[0] for d in differences[1:])})" if len(differences) > 1 else ""
        raise UserError(f"{key}: the checkpoint has model.{name}={found!r} but {given} says {wanted!r}{more}; "
                        f"choose the preset of this model or set model.{name} on the command line")
    return checkpoint.replace(**{name: getattr(config.model, name) for name in _THIS_RUN})


def load(config: Config) -> Start:
    """The starting point `config.init` names (before the run has a checkpoint of its own)."""
    key, path = source(config)
    if not path.is_dir():
        raise UserError(f"{key}: {path} is not a directory")
    if key == "init.hf":
        try:
            checkpoint, params = hf.load(path, scan_layers=config.model.scan_layers,
                                         param_dtype=config.model.param_dtype)
            tokenizer = load_tokenizer(path)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"init.hf: {e}") from None
        return Start(agreed_model(config, checkpoint, key), params, tokenizer)
    other = load_run_config(path)
    checkpoints = Checkpoints(path, read_only=True)
    step = checkpoints.latest_step()
    if step is None:
        raise UserError(f"init.run: no checkpoint in {path}")
    cfg = agreed_model(config, other.model, key)
    tokenizer = load_tokenizer(path / "tokenizer")
    # Restored onto one device in the other run's own state layout; the new run reshards the params.
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    objective = make_objective(other.model, other.train, tokenizer, other.run.seed)
    state, _ = checkpoints.restore(step, programs(other.model, other.train, objective, mesh).abstract_state)
    params = state["params"]
    if other.model.scan_layers != cfg.scan_layers:
        params = stack_layers(params) if cfg.scan_layers else unstack_layers(params)
    return Start(cfg, params, tokenizer)
