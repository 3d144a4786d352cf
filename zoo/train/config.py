"""A training run's configuration: six sections, each a frozen dataclass that validates itself.

    model.*   ModelConfig (zoo/config.py), from the preset; vocab_size follows the tokenizer unless set
    train.*   TrainConfig (zoo/recipe.py), the preset's published recipe
    data.*    DataConfig: corpus, tokenizer
    run.*     RunConfig: run dir, steps, seed, intervals, logging
    mesh.*    MeshConfig: device mesh axis sizes
    init.*    InitConfig: start from a Hugging Face checkpoint or another run's parameters

The last four live in zoo/train/sections.py; this module joins the six into Config and resolves overrides.

    config = resolve("gpt3-tiny", ["model.num_layers=2", "train.learning_rate=1e-3", "mesh.fsdp=2"])

Overrides are `section.field=value` strings (read like a preset's YAML values, see zoo.fields.parse) or a
dict of typed values. Any bad value is a UserError: one line naming the key, where its value came from
(the preset file or the command line) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from zoo import presets
from zoo.config import ModelConfig
from zoo.fields import Replaceable, defaults, field_names, parse, suggest, value_origins
from zoo.recipe import TrainConfig
from zoo.sharding import BATCH_AXES
from zoo.train.sections import DataConfig, InitConfig, MeshConfig, RunConfig

DEFAULT_PRESET = "llama-tiny"
COMMAND_LINE = "the command line"


class UserError(Exception):
    """Bad input: reported as one line, exit status 2, no traceback."""


SECTIONS: dict[str, type[Replaceable]] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "data": DataConfig,
    "run": RunConfig,
    "mesh": MeshConfig,
    "init": InitConfig,
}


@dataclasses.dataclass(frozen=True)
class Config:
    """A fully resolved run: the preset's name and one validated dataclass per section."""

    preset: str
    model: ModelConfig
    train: TrainConfig
    data: DataConfig
    run: RunConfig
    mesh: MeshConfig
    init: InitConfig = InitConfig()
    explicit: frozenset = dataclasses.field(default=frozenset(), compare=False)
    """Override keys given explicitly (e.g. an explicit model.vocab_size is kept, not fitted)."""
    origin: str = ""
    """Where model and train came from when not from `preset` (a run started from weights without --preset);
    `preset` then names the starting checkpoint."""

    def __post_init__(self):
        for section, cls in SECTIONS.items():
            if not isinstance(getattr(self, section), cls):
                raise TypeError(f"Config.{section}: expected a {cls.__name__}, got {getattr(self, section)!r}")
        if self.train.seq_len > self.model.max_seq_len:
            raise ValueError(f"train.seq_len={self.train.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}")
        if self.train.document_masking and self.model.is_encoder_decoder:
            raise ValueError(
                "train.document_masking=true applies to decoder-only models (causal LM rows packed from documents); "
                "model.architecture=encoder_decoder trains on span corruption, one input per row: set it false"
            )
        check_mesh(self.model, self.train, self.mesh)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir if self.run.dir is not None else f"runs/{self.preset}")

    @property
    def steps(self) -> int:
        return self.run.steps if self.run.steps is not None else self.train.total_steps

    def replace(self, **sections) -> Config:
        """A copy with whole sections replaced, validated again."""
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict[str, Any]:
        origin = {"origin": self.origin} if self.origin else {}
        return {"preset": self.preset, **origin, **{s: getattr(self, s).to_dict() for s in SECTIONS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return cls(
            d["preset"], **{s: SECTIONS[s].from_dict(d.get(s, {})) for s in SECTIONS}, origin=d.get("origin", "")
        )


def check_mesh(model: ModelConfig, train: TrainConfig, mesh: MeshConfig) -> None:
    """ValueError naming the fields when the mesh does not fit the model or the batch. An axis of -1 is known
    only once the devices are: the checks here use the sizes given, and zoo/train/setup.py checks the mesh
    built (check_expert_axis, check_micro_batch)."""
    if mesh.expert != -1:
        check_expert_axis(model.num_experts, mesh.expert)
    fixed = {f"mesh.{axis}": getattr(mesh, axis) for axis in BATCH_AXES if getattr(mesh, axis) not in (-1, 1)}
    ways = math.prod(fixed.values())
    if train.micro_batch_size % ways:
        raise ValueError(
            f"invalid mesh for a micro-batch of {train.micro_batch_size} sequences (train.batch_size="
            f"{train.batch_size} / train.grad_accum_steps={train.grad_accum_steps}): not divisible by "
            + " x ".join(f"{key}={size}" for key, size in fixed.items())
            + (f" = {ways}" if len(fixed) > 1 else "")
            + ", the ways the batch is split"
        )


def check_expert_axis(num_experts: int, expert: int) -> None:
    """ValueError unless an expert axis of `expert` devices splits the model's experts into whole groups."""
    if expert > 1 and num_experts == 0:
        raise ValueError(
            f"mesh.expert={expert} splits a MoE layer's experts, but model.num_experts=0 (a dense model) has "
            "none: the axis would do nothing; set mesh.expert=1"
        )
    if num_experts % expert:
        raise ValueError(
            f"model.num_experts={num_experts} is not divisible by mesh.expert={expert}: each expert-parallel "
            "group of devices holds num_experts / expert whole experts"
        )


def all_keys() -> list[str]:
    """Every override key, `section.field`."""
    return [f"{s}.{f}" for s, cls in SECTIONS.items() for f in field_names(cls)]


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """['model.num_layers=4', ...] -> {"model": {"num_layers": 4}, ...}; unknown keys suggest close ones."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"expected section.field=value, got {item!r}.{suggest(key, all_keys())}")
        section, _, name = key.partition(".")
        if section not in SECTIONS or name not in field_names(SECTIONS[section]):
            hint = suggest(key, all_keys()) or suggest(name or section, all_keys())
            if not hint:  # a bare field name: which section has it?
                homes = [k for k in all_keys() if k.endswith("." + (name or section))]
                hint = f" Did you mean: {', '.join(homes)}?" if homes else ""
            raise UserError(f"unknown override key {key!r}.{hint} (python train.py --help lists every key)")
        try:
            out[section][name] = parse(SECTIONS[section], name, raw, key)
        except ValueError as e:
            raise UserError(str(e)) from None
    return out


def parse_any(overrides: list[str] | dict | None) -> dict[str, dict[str, Any]]:
    """Overrides as 'section.field=value' strings or a dict {"model": {...}, ...} -> {section: {field: value}}."""
    if overrides is None or isinstance(overrides, (list, tuple)):
        return parse_overrides(list(overrides or []))
    for section in overrides:
        if section not in SECTIONS:
            raise UserError(f"unknown config section {section!r}.{suggest(section, SECTIONS)}")
    return {s: dict(overrides.get(s, {})) for s in SECTIONS}


def resolve(
    preset: str = DEFAULT_PRESET, overrides: list[str] | dict | None = None, source: str = COMMAND_LINE
) -> Config:
    """The Config of `preset` with overrides: a list of 'section.field=value' strings, or a dict
    {"model": {...}, "train": {...}, ...} of typed values. `source` names where the overrides came from
    in error messages."""
    parsed = parse_any(overrides)
    try:
        sections = {s: presets.build_section(preset, s, parsed[s], source) for s in presets.SECTIONS}
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    return _config(preset, parsed, sections, source)


def resolve_on(
    name: str,
    bases: dict[str, tuple[dict, str]],
    overrides: list[str] | dict | None,
    source: str = COMMAND_LINE,
    origin: str = "",
) -> Config:
    """Like `resolve`, but the model and train sections start from `bases` rather than a preset:
    {"model": (values, where they came from), "train": (...)}; `name` stands for the preset in the Config."""
    parsed = parse_any(overrides)
    try:
        sections = {s: _section(s, parsed[s], source, *bases[s]) for s in presets.SECTIONS}
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    return _config(name, parsed, sections, source, origin)


def _config(name: str, parsed: dict, sections: dict, source: str, origin: str = "") -> Config:
    try:
        for s in SECTIONS.keys() - presets.SECTIONS.keys():
            sections[s] = _section(s, parsed[s], source)
        explicit = frozenset(f"{s}.{k}" for s, values in parsed.items() for k in values)
        return Config(name, **sections, explicit=explicit, origin=origin)
    except (ValueError, TypeError) as e:
        raise UserError(f"{e} ({_origins(str(e), parsed, name, source)})") from None


def _origins(message: str, parsed: dict, name: str, source: str) -> str:
    """Where the fields a cross-section error names got their values: `source` or the preset (its defaults)."""
    keys = dict.fromkeys(re.findall(rf"\b({'|'.join(SECTIONS)})\.(\w+)", message))
    return "; ".join(f"{s}.{f} from {source if f in parsed[s] else f'{name} (preset or default)'}" for s, f in keys)


def _section(section: str, values: dict, source: str, base: dict | None = None, base_source: str = ""):
    """A section: its defaults, then `base`, then `values`; errors say which values came from `source`, which
    from `base_source` and which are defaults."""
    try:
        return SECTIONS[section].from_dict({**(base or {}), **values})
    except ValueError as e:
        sources = [
            (values, f"from {source}"),
            (base or {}, f"from {base_source}"),
            (defaults(SECTIONS[section]), "by default"),
        ]
        origins = value_origins(str(e), section, sources)
        raise ValueError(f"{e} ({origins})" if origins else str(e)) from None


def load_run_config(run_dir: str | os.PathLike) -> Config:
    """The resolved config saved in a run directory."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    return Config.from_dict(json.loads(path.read_text()))
