"""Starting a run from existing weights: a Hugging Face checkpoint (init.hf) or another zoo run (init.run).

The model is the checkpoint's. With a --preset, what the preset and the command line say about it must agree
with it (zoo.semantics: the fields that decide what the parameters compute) or the run is refused, naming the
field; without one (`resolve_from_weights`), the checkpoint's model is taken as it is and the recipe is its
family's (init.hf: the `train:` section of the configs/*.yaml family of its HF model_type) or the run's
(init.run). Either way the rest follows this run's config: how the model runs (dtype, remat, attention
kernel, scan) and training-only fields (dropout, z-loss). The vocabulary is the checkpoint's, and so is the
tokenizer. A run started this way that has a checkpoint of its own resumes from that, like any run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from zoo import hf, presets
from zoo.config import ModelConfig
from zoo.layers.init import dtype_of
from zoo.layers.mtp import MultiTokenPrediction
from zoo.model import stack_layers, unstack_layers
from zoo.semantics import RUNTIME_FIELDS, TRAINING_FIELDS, semantic_differences
from zoo.train.config import (
    COMMAND_LINE,
    DEFAULT_PRESET,
    Config,
    UserError,
    load_run_config,
    parse_any,
    resolve,
    resolve_on,
)
from zoo.train.restore import load_run
from zoo.train.sections import InitConfig
from zoo.train.tokenizer import load_tokenizer

# What this run decides, whatever the checkpoint says.
_THIS_RUN = (*RUNTIME_FIELDS, *TRAINING_FIELDS, "scan_layers", "param_dtype")


@dataclasses.dataclass(frozen=True)
class Start:
    """The starting point: the model config, its parameters (host arrays), and the tokenizer."""

    cfg: ModelConfig
    params: Any
    tokenizer: Any


def source(init: InitConfig) -> tuple[str, Path] | None:
    """("init.hf" or "init.run", the directory), or None for a fresh init."""
    if init.hf is not None:
        return "init.hf", Path(init.hf)
    if init.run is not None:
        return "init.run", Path(init.run)
    return None


def _directory(named: tuple[str, Path]) -> tuple[str, Path]:
    """`named`, or UserError if its directory does not exist."""
    key, path = named
    if not path.is_dir():
        raise UserError(f"{key}: {path} is not a directory")
    return key, path


def agreed_model(config: Config, checkpoint: ModelConfig, key: str) -> ModelConfig:
    """The checkpoint's model with this run's runtime and training fields; UserError if the preset or the
    command line sets a semantic field (other than the vocabulary) to another value than the checkpoint."""
    differences = semantic_differences(config.model.replace(vocab_size=checkpoint.vocab_size), checkpoint)
    if differences:
        name, wanted, found = differences[0]
        given = "the command line" if f"model.{name}" in config.explicit else f"preset {config.preset!r}"
        more = f" (also {', '.join(d[0] for d in differences[1:])})" if len(differences) > 1 else ""
        raise UserError(
            f"{key}: the checkpoint has model.{name}={found!r} but {given} says {wanted!r}{more}; "
            f"choose the preset of this model or set model.{name} on the command line"
        )
    return checkpoint.replace(**{name: getattr(config.model, name) for name in _THIS_RUN})


def load(config: Config, mesh: Mesh | None = None) -> Start:
    """The starting point `config.init` names (before the run has a checkpoint of its own). init.run's params
    are restored onto `mesh` when the two runs lay the layers out alike (else onto one device, then converted)."""
    named = source(config.init)
    assert named is not None, "load() is for a run that starts from weights"
    key, path = _directory(named)
    if key == "init.hf":
        try:
            checkpoint, params = hf.load(
                path, scan_layers=config.model.scan_layers, param_dtype=config.model.param_dtype
            )
            tokenizer = load_tokenizer(path)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"init.hf: {e}") from None
        cfg = agreed_model(config, checkpoint, key)
        return Start(cfg, _mtp_modules(cfg, params, config.run.seed), tokenizer)
    other = load_run_config(path)
    cfg = agreed_model(config, other.model, key)
    same_layout = other.model.scan_layers == cfg.scan_layers and other.model.param_dtype == cfg.param_dtype
    try:
        trained = load_run(path, mesh=mesh if same_layout else None)
    except UserError as e:
        raise UserError(f"init.run: {e}") from None
    params = trained.params
    if other.model.scan_layers != cfg.scan_layers:
        params = stack_layers(params) if cfg.scan_layers else unstack_layers(params)
    return Start(cfg, _mtp_modules(cfg, params, config.run.seed), trained.tokenizer)


def _mtp_modules(cfg: ModelConfig, params: dict, seed: int) -> dict:
    """`params` with cfg.mtp_depth multi-token-prediction modules (a training-only field, this run's): the
    checkpoint's where it has them, freshly drawn where it has fewer (an HF checkpoint has none), dropped past it."""
    names = [f"mtp_{k}" for k in range(cfg.mtp_depth)]
    kept = {name: value for name, value in params.items() if not name.startswith("mtp_") or name in names}
    missing = [name for name in names if name not in kept]
    x, positions = jnp.zeros((1, 1, cfg.d_model), dtype_of(cfg.dtype)), jnp.zeros((1, 1), jnp.int32)
    for name in missing:  # a module's own init, not the whole model's: its draws are the in-model ones
        key = jax.random.fold_in(jax.random.key(seed), int(name.removeprefix("mtp_")))
        kept[name] = jax.device_get(nn.meta.unbox(MultiTokenPrediction(cfg).init(key, x, x, positions)["params"]))
    return kept


def resolve_from_weights(overrides: list[str] | dict | None, where: str = COMMAND_LINE) -> Config:
    """The Config of a run given no preset: with init.hf, the checkpoint's model and the training recipe of
    its family (the configs/*.yaml family zoo.hf maps its model_type to; how the model runs and its dropout
    come from that family's defaults too); with init.run, that run's model and recipe; with neither, the
    default preset's. The overrides (from `where`, for messages) go on top. The recipe's seq_len is capped at
    the model's max_seq_len."""
    parsed = parse_any(overrides)
    try:
        named = source(InitConfig.from_dict(parsed["init"]))
    except ValueError as e:
        raise UserError(str(e)) from None
    if named is None:
        return resolve(DEFAULT_PRESET, parsed, where)
    key, path = _directory(named)
    if key == "init.hf":
        try:
            checkpoint, family = hf.load_config(path)
            model_defaults, recipe, recipe_file = presets.family_sections(family.preset_family)
        except (OSError, ValueError) as e:
            raise UserError(f"init.hf: {e}") from None
        model = {**_given(checkpoint), **{k: v for k, v in model_defaults.items() if k in _THIS_RUN}}
        origin = (
            f"no --preset: the model is {key}'s (HF {family.model_type}), the recipe {recipe_file}'s `train:` "
            f"(the {family.preset_family} family's)"
        )
        bases = {"model": (model, f"{key} {path}"), "train": (recipe, f"{recipe_file} train")}
    else:
        other = load_run_config(path)
        origin = f"no --preset: the model and the recipe are {key}'s ({other.preset})"
        bases = {"model": (_given(other.model), f"{key} {path}"), "train": (other.train.to_dict(), f"{key} {path}")}
    seq_len = bases["train"][0].get("seq_len")
    if "seq_len" not in parsed["train"] and seq_len is not None and seq_len > bases["model"][0]["max_seq_len"]:
        bases["train"][0]["seq_len"] = bases["model"][0]["max_seq_len"]
        origin += f"; train.seq_len {seq_len} capped at the model's max_seq_len {bases['model'][0]['max_seq_len']}"
    return resolve_on(path.resolve().name, bases, parsed, where, origin)


def _given(cfg: ModelConfig) -> dict:
    """A ModelConfig's values without the ones it derived (so they follow the overrides, as in a preset)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in cfg._derived}
