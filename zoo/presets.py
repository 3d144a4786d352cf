"""Named presets: ``configs/<family>.yaml`` -> ModelConfig and a training recipe.

Each family file has three top-level keys::

    defaults:  {ModelConfig fields shared by the family}
    train:     {the family's training recipe: TrainConfig fields}
    presets:
      <name>:
        inherits: <another preset>      # optional; resolved recursively, cycles are an error
        model:    {field overrides}
        train:    {recipe overrides}
        published: {params: <exact count>, label: <what the source prints>, source: ..., note: ...}

A preset resolves to: (its parent, fully resolved, if it inherits one, else its family's ``defaults`` /
``train``) <- its own ``model`` / ``train`` overrides. ``published`` belongs to the preset alone (not
inherited): the parameter count of the published hyperparameters, which zoo.count_params must equal
(tests/test_presets.py), and the label the source prints. Keys are checked when the files are read; values
are checked by ModelConfig (model) and TrainConfig (train, zoo/recipe.py), and every error names
the file.

The YAML files ship inside the wheel as the package ``zoo.configs`` (pyproject maps it to the top-level
``configs/`` directory); in a source checkout they are read from ``configs/`` directly.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
from pathlib import Path
from typing import Any

import yaml

from zoo.config import ModelConfig
from zoo.fields import Replaceable, YamlLoader, coerce, defaults, fail, field_names, suggest, value_origins
from zoo.recipe import TrainConfig

_TOP_KEYS = ("defaults", "train", "presets")
_PRESET_KEYS = ("inherits", "model", "train", "published")


def config_dir():
    """The directory holding the family YAML files (a Traversable; a Path in a source checkout)."""
    try:
        files = importlib.resources.files("zoo.configs")
        if any(f.name.endswith(".yaml") for f in files.iterdir()):
            return files
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return Path(__file__).resolve().parent.parent / "configs"


# The two sections of a preset and the dataclass each one builds.
SECTIONS: dict[str, type[Replaceable]] = {"model": ModelConfig, "train": TrainConfig}


def _check(section: str, values: dict, where: str) -> dict:
    """Coerce the values of one section, rejecting unknown keys with close matches."""
    cls = SECTIONS[section]
    names = field_names(cls)
    for key in values:
        if key not in names:
            raise ValueError(f"{where}: unknown {section} key {key!r}.{suggest(str(key), names)}")
    return {key: coerce(cls, key, value, f"{where}: {section}.{key}") for key, value in values.items()}


def _check_keys(mapping: dict, allowed: tuple[str, ...], where: str, what: str = "key") -> None:
    for key in mapping:
        if key not in allowed:
            raise ValueError(
                f"{where}: unknown {what} {key!r}; allowed: {', '.join(allowed)}.{suggest(str(key), allowed)}"
            )


# ------------------------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class Published:
    """A preset's published size."""

    params: int
    """The exact parameter count of the published hyperparameters: what zoo.count_params must give."""
    label: str
    """What the source prints, usually rounded ("7B", "117M (paper) / 124M")."""
    source: str
    """Where `params` and `label` come from."""
    note: str = ""
    """Why the label and the exact count differ, where they do."""
    active: int | None = None
    """Mixture of experts: the exact parameters one token uses, what zoo.count_params(active=True) must give."""
    active_label: str = ""
    """What the source prints for the active count ("12.9B")."""

    def __post_init__(self):
        if self.params < 1:
            fail(self, "params", f"must be a positive integer, got {self.params}")
        if self.active is not None and not 1 <= self.active <= self.params:
            fail(self, "active", f"must be a positive integer <= params, got {self.active}")


def _published(values, where: str) -> Published | None:
    if values is None:
        return None
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping with keys {', '.join(field_names(Published))}")
    _check_keys(values, field_names(Published), where)
    try:
        return Published(**{k: coerce(Published, k, v, f"{where}.{k}") for k, v in values.items()})
    except TypeError as e:  # a required key is missing
        raise ValueError(f"{where}: {e}") from None


@dataclasses.dataclass(frozen=True)
class _Preset:
    name: str
    family: str
    file: str
    inherits: str | None
    model: dict
    train: dict
    published: Published | None


@dataclasses.dataclass(frozen=True)
class _Family:
    name: str
    file: str
    defaults: dict
    train: dict


@functools.cache
def _registry() -> tuple[dict[str, _Family], dict[str, _Preset]]:
    families: dict[str, _Family] = {}
    presets: dict[str, _Preset] = {}
    root = config_dir()
    files = sorted((f for f in root.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    if not files:
        raise FileNotFoundError(f"no preset files (*.yaml) found in {root}")
    for path in files:
        family = path.name[: -len(".yaml")]
        where = f"configs/{path.name}"
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader)
        except yaml.YAMLError as e:
            raise ValueError(f"{where}: invalid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping with keys {', '.join(_TOP_KEYS)}")
        _check_keys(data, _TOP_KEYS, where, "top-level key")
        families[family] = _Family(
            family,
            where,
            _check("model", data.get("defaults") or {}, f"{where}: defaults"),
            _check("train", data.get("train") or {}, f"{where}: train"),
        )
        for name, entry in (data.get("presets") or {}).items():
            pwhere = f"{where}: preset {name!r}"
            entry = entry or {}
            if not isinstance(entry, dict):
                raise ValueError(f"{pwhere}: expected a mapping with keys {', '.join(_PRESET_KEYS)}")
            _check_keys(entry, _PRESET_KEYS, pwhere)
            if name in presets:
                raise ValueError(f"{pwhere}: preset name already defined in {presets[name].file}")
            presets[name] = _Preset(
                name,
                family,
                where,
                entry.get("inherits"),
                _check("model", entry.get("model") or {}, pwhere),
                _check("train", entry.get("train") or {}, pwhere),
                _published(entry.get("published"), f"{pwhere}: published"),
            )
    for p in presets.values():
        if p.inherits is not None and p.inherits not in presets:
            raise ValueError(
                f"{p.file}: preset {p.name!r} inherits unknown preset {p.inherits!r}."
                f"{suggest(str(p.inherits), presets)}"
            )
    return families, presets


def _lookup(name: str) -> _Preset:
    _, presets = _registry()
    if name not in presets:
        raise ValueError(
            f"unknown preset {name!r}.{suggest(name, presets)} (zoo.presets.list_presets() lists all {len(presets)})"
        )
    return presets[name]


def _resolve(name: str, part: str, chain: tuple[str, ...] = ()) -> dict:
    """The merged `model` or `train` dict of a preset, following `inherits` recursively."""
    preset = _lookup(name)
    if name in chain:
        raise ValueError(f"{preset.file}: inheritance cycle: {' -> '.join(chain + (name,))}")
    if preset.inherits is not None:
        base = _resolve(preset.inherits, part, chain + (name,))
    else:
        family = _registry()[0][preset.family]
        base = dict(family.defaults if part == "model" else family.train)
    return {**base, **getattr(preset, part)}


# ------------------------------------------------------------------------------------------------- API
def list_presets() -> list[str]:
    """Every preset name, sorted."""
    return sorted(_registry()[1])


def list_families() -> list[str]:
    """Every family (one YAML file each), sorted."""
    return sorted(_registry()[0])


def family_presets(family: str) -> list[str]:
    """The presets of one family, in the order its YAML file lists them."""
    families, presets = _registry()
    if family not in families:
        raise ValueError(f"unknown preset family {family!r}.{suggest(family, families)}")
    return [p.name for p in presets.values() if p.family == family]


def family_sections(family: str) -> tuple[dict, dict, str]:
    """A family's own `defaults:` (model) and `train:` (its training recipe) as its YAML file writes them,
    and the file ("configs/<family>.yaml")."""
    families = _registry()[0]
    if family not in families:
        raise ValueError(f"unknown preset family {family!r}.{suggest(family, families)}")
    f = families[family]
    return dict(f.defaults), dict(f.train), f.file


def preset_family(name: str) -> str:
    """The family (YAML file stem) a preset is defined in."""
    return _lookup(name).family


def published(name: str) -> Published | None:
    """A preset's published size (None for presets of our own size, such as the -tiny ones)."""
    return _lookup(name).published


def build_section(name: str, section: str, overrides: dict, source: str):
    """The ModelConfig ("model") or TrainConfig ("train") of preset `name` with `overrides` on top. An
    invalid result names the preset file, and which of the values it mentions came from `source` (e.g.
    "the command line") and which from the preset."""
    preset = _lookup(name)
    base = _resolve(name, section)
    given = _check(section, overrides, source)
    try:
        return SECTIONS[section].from_dict({**base, **given})
    except (ValueError, TypeError) as e:
        if not value_origins(str(e), section, [(given, "")]):  # the preset alone is invalid
            raise ValueError(f"{preset.file}: preset {name!r}: {e}") from e
        sources = [
            (given, f"from {source}"),
            (base, f"from {preset.file} preset {name!r}"),
            (defaults(SECTIONS[section]), "by default"),
        ]
        origins = value_origins(str(e), section, sources)
        raise ValueError(f"{e} ({origins})") from e


def get_config(name: str, **overrides) -> ModelConfig:
    """The ModelConfig of a preset, with optional field overrides: get_config("llama-tiny", num_layers=4)."""
    return build_section(name, "model", overrides, f"get_config({name!r}) overrides")


def get_train_config(name: str, **overrides) -> TrainConfig:
    """The TrainConfig of a preset, with optional field overrides."""
    return build_section(name, "train", overrides, f"get_train_config({name!r}) overrides")


def get_recipe(name: str) -> dict[str, Any]:
    """The training recipe of a preset as a dict with every TrainConfig key: TrainConfig defaults <- family
    `train:` <- inherited presets' <- its own. Validated by TrainConfig."""
    return get_train_config(name).to_dict()
