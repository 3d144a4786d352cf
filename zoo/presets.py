"""Named presets: ``configs/<family>.yaml`` -> ModelConfig and a training recipe.

Each family file has three top-level keys::

    defaults:  {ModelConfig fields shared by the family}
    train:     {the family's training recipe: TrainConfig fields}
    presets:
      <name>:
        inherits: <another preset>      # optional; resolved recursively, cycles are an error
        model:    {field overrides}
        train:    {recipe overrides}

A preset resolves to: (its parent, fully resolved, if it inherits one, else its family's ``defaults`` /
``train``) <- its own ``model`` / ``train`` overrides. Keys are checked when the files are read; values
are checked by ModelConfig (model) and TrainConfig (train, zoo/train/recipe.py), and every error names
the file.

The YAML files ship inside the wheel as the package ``zoo.configs`` (pyproject maps it to the top-level
``configs/`` directory); in a source checkout they are read from ``configs/`` directly.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import re
from pathlib import Path
from typing import Any

import yaml

from zoo.config import ModelConfig, suggest
from zoo.train.recipe import TrainConfig

# The training recipe's keys and types are TrainConfig's (zoo/train/recipe.py); a family's `train:` block
# sets the values that matter for its optimizer and schedule, and TrainConfig's defaults fill the rest.

_TOP_KEYS = ("defaults", "train", "presets")
_PRESET_KEYS = ("inherits", "model", "train")


# ------------------------------------------------------------------------------------------------ YAML
class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-6` as a float (YAML 1.2; PyYAML's 1.1 rules make it a string) and
    rejects a key written twice in one mapping (PyYAML silently keeps the last)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def config_dir():
    """The directory holding the family YAML files (a Traversable; a Path in a source checkout)."""
    try:
        files = importlib.resources.files("zoo.configs")
        if any(f.name.endswith(".yaml") for f in files.iterdir()):
            return files
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return Path(__file__).resolve().parent.parent / "configs"


# --------------------------------------------------------------------------------------- value checking
def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _coerce(kind: str, value, where: str):
    """Check a YAML value against a simple type ('int', 'float', 'bool', 'str', 'tuple'; a trailing '?'
    allows null). Ints are accepted for floats; other kinds pass through for the dataclass to check."""
    nullable = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None and nullable:
        return None
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "tuple": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
    }
    if kind not in checks:
        return value
    if not checks[kind](value):
        expected = "a list of strings" if kind == "tuple" else kind + (" or null" if nullable else "")
        hint = " (write numbers unquoted, e.g. 1.0e-6)" if kind == "float" and isinstance(value, str) else ""
        raise ValueError(f"{where}: expected {expected}, got {_type_name(value)} {value!r}{hint}")
    if kind == "float":
        return float(value)
    if kind == "tuple":
        return tuple(value)
    return value


def _field_kind(annotation: str) -> str:
    """'int | None' -> 'int?', 'tuple[str, ...]' -> 'tuple', 'float' -> 'float'."""
    nullable = "None" in annotation
    base = annotation.replace("| None", "").replace("None |", "").strip()
    if base.startswith("tuple"):
        base = "tuple"
    return base + ("?" if nullable else "")


# The two sections of a preset: the dataclass each one builds, and each field's kind for coercion.
_SECTIONS = {"model": ModelConfig, "train": TrainConfig}
_KINDS = {section: {f.name: _field_kind(str(f.type)) for f in dataclasses.fields(cls)}
          for section, cls in _SECTIONS.items()}


def _check(section: str, values: dict, where: str) -> dict:
    """Coerce the values of one section, rejecting unknown keys with close matches."""
    kinds, out = _KINDS[section], {}
    for key, value in values.items():
        if key not in kinds:
            raise ValueError(f"{where}: unknown {section} key {key!r}.{suggest(str(key), kinds)}")
        out[key] = _coerce(kinds[key], value, f"{where}: {section}.{key}")
    return out


# ------------------------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class _Preset:
    name: str
    family: str
    file: str
    inherits: str | None
    model: dict
    train: dict


@dataclasses.dataclass(frozen=True)
class _Family:
    name: str
    file: str
    defaults: dict
    train: dict


@functools.lru_cache(maxsize=None)
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
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        except yaml.YAMLError as e:
            raise ValueError(f"{where}: invalid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping with keys {', '.join(_TOP_KEYS)}")
        for key in data:
            if key not in _TOP_KEYS:
                raise ValueError(f"{where}: unknown top-level key {key!r}; allowed: {', '.join(_TOP_KEYS)}."
                                 f"{suggest(str(key), _TOP_KEYS)}")
        families[family] = _Family(family, where, _check("model", data.get("defaults") or {}, f"{where}: defaults"),
                                   _check("train", data.get("train") or {}, f"{where}: train"))
        for name, entry in (data.get("presets") or {}).items():
            pwhere = f"{where}: preset {name!r}"
            entry = entry or {}
            if not isinstance(entry, dict):
                raise ValueError(f"{pwhere}: expected a mapping with keys {', '.join(_PRESET_KEYS)}")
            for key in entry:
                if key not in _PRESET_KEYS:
                    raise ValueError(f"{pwhere}: unknown key {key!r}; allowed: {', '.join(_PRESET_KEYS)}."
                                     f"{suggest(str(key), _PRESET_KEYS)}")
            if name in presets:
                raise ValueError(f"{pwhere}: preset name already defined in {presets[name].file}")
            presets[name] = _Preset(name, family, where, entry.get("inherits"),
                                    _check("model", entry.get("model") or {}, pwhere),
                                    _check("train", entry.get("train") or {}, pwhere))
    for p in presets.values():
        if p.inherits is not None and p.inherits not in presets:
            raise ValueError(f"{p.file}: preset {p.name!r} inherits unknown preset {p.inherits!r}."
                             f"{suggest(str(p.inherits), presets)}")
    return families, presets


def _lookup(name: str) -> _Preset:
    _, presets = _registry()
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}.{suggest(name, presets)} "
                         f"(zoo.presets.list_presets() lists all {len(presets)})")
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


def preset_family(name: str) -> str:
    """The family (YAML file stem) a preset is defined in."""
    return _lookup(name).family


def _build(name: str, section: str, overrides: dict, caller: str):
    preset = _lookup(name)
    values = {**_resolve(name, section), **_check(section, overrides, f"{caller}({name!r}) overrides")}
    try:
        return _SECTIONS[section].from_dict(values)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{preset.file}: preset {name!r}: {e}") from e


def get_config(name: str, **overrides) -> ModelConfig:
    """The ModelConfig of a preset, with optional field overrides: get_config("llama-tiny", num_layers=4)."""
    return _build(name, "model", overrides, "get_config")


def get_train_config(name: str, **overrides) -> TrainConfig:
    """The TrainConfig of a preset, with optional field overrides."""
    return _build(name, "train", overrides, "get_train_config")


def get_recipe(name: str) -> dict[str, Any]:
    """The training recipe of a preset as a dict with every TrainConfig key: TrainConfig defaults <- family
    `train:` <- inherited presets' <- its own. Validated by TrainConfig."""
    return get_train_config(name).to_dict()
