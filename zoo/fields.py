"""The machinery every config dataclass shares (ModelConfig, TrainConfig, the run's data/run/mesh sections).

One of each: a known-field check with close matches, `replace`/`from_dict`/`to_dict`, field docs read from
the docstring under each field, and one typed coercion of values, whether they come from a preset's YAML
(`coerce`) or from a command line (`parse`, which reads the text as YAML first). Validation itself lives in
each class's ``__post_init__``; errors come out as ``ValueError("Class.field: what is wrong")``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import itertools
import re
import textwrap
from typing import Any

import yaml

DERIVED: Any = None
"""The default of a field that __post_init__ fills in when it is left null (ModelConfig.head_dim = d_model //
num_heads): None, typed Any so that the field is declared with the type it has once constructed
(`head_dim: int = DERIVED`). A field whose default is None accepts null from YAML and the command line."""


def suggest(name: str, options) -> str:
    """' Did you mean: a, b?' for a misspelt name, or ''."""
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def check_known_fields(cls: type, values) -> None:
    """Raise for keys of `values` that are not fields of the dataclass `cls`, suggesting close ones."""
    names = field_names(cls)
    for key in values:
        if key not in names:
            raise ValueError(f"unknown {cls.__name__} field {key!r}.{suggest(str(key), names)}")


def fail(config, field: str, message: str):
    """The one error shape of config validation: ValueError('ModelConfig.num_heads: ...')."""
    raise ValueError(f"{type(config).__name__}.{field}: {message}")


def defaults(cls: type) -> dict[str, Any]:
    """The declared default of every field that has one."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def is_default(config, name: str) -> bool:
    """Whether field `name` of a dataclass instance still has its declared default."""
    value = getattr(config, name)
    value = tuple(value) if isinstance(value, list) else value  # a pattern read from YAML or JSON is a list
    return value == defaults(type(config)).get(name, dataclasses.MISSING)


class Replaceable:
    """replace / from_dict / to_dict for the frozen config dataclasses. Unknown field names fail with close
    matches, and every result is validated again by the class's __post_init__.

    A class whose __post_init__ fills derived fields (a None meaning "d_model // num_heads") records their
    names in `_derived`; `replace` resets those to None, so a derived value follows the values it derives
    from (shrinking num_heads of an MHA config keeps it MHA) while a value that was given stays pinned."""

    _derived: frozenset = frozenset()

    def replace(self, **changes):
        """A copy with some fields changed, validated again."""
        check_known_fields(type(self), changes)
        rederive = {name: None for name in self._derived if name not in changes}
        return dataclasses.replace(self, **rederive, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        check_known_fields(cls, values)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML values: tuples become lists."""
        return {
            name: (list(v) if isinstance(v := getattr(self, name), tuple) else v) for name in field_names(type(self))
        }


def value_origins(message: str, section: str, sources: list[tuple[dict, str]]) -> str:
    """Where each field a validation error names got its value: "train.total_steps=12 from the command
    line; train.warmup_steps=30 from configs/gpt2.yaml preset 'gpt2-tiny'". `sources` are (values, phrase)
    pairs ("from the command line", "by default"); the first that holds a field wins; fields none of them
    holds are left out."""
    parts = []
    for name in dict.fromkeys(re.findall(r"\w+", message)):
        origin = next(((values[name], where) for values, where in sources if name in values), None)
        if origin is not None:
            parts.append(f"{section}.{name}={origin[0]!r} {origin[1]}")
    return "; ".join(parts)


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring under it (train.py --help and the README print them)."""
    return _field_docs(cls)  # not cached itself: mypy takes a config class for unhashable (python/mypy#11470)


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    class_def = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(class_def, ast.ClassDef), class_def
    return {
        node.target.id: " ".join(nxt.value.value.split())
        for node, nxt in itertools.pairwise(class_def.body)
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and isinstance(nxt, ast.Expr)
        and isinstance(nxt.value, ast.Constant)
        and isinstance(nxt.value.value, str)
    }


# --------------------------------------------------------------------------------------------- values
class YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-6` as a float (YAML 1.2; PyYAML's 1.1 rules make it a string) and
    rejects a key written twice in one mapping (PyYAML silently keeps the last)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
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


YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "tuple": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
}


@functools.cache
def _kind(cls: type, name: str) -> tuple[str, bool]:
    """The declared type of a field as (kind, nullable): 'int | None' -> ('int', True),
    'tuple[str, ...]' -> ('tuple', False); a field that defaults to None (DERIVED) is nullable too."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    parts = [p.strip() for p in str(field.type).split("|")]
    base = next(p for p in parts if p != "None")
    return ("tuple" if base.startswith("tuple") else base), "None" in parts or field.default is None


def coerce(cls: type, name: str, value, where: str):
    """Check a value for field `name` of `cls` against its declared type; ints are accepted for floats,
    lists for tuples. `where` starts the error message (the file and key, or the command-line key)."""
    kind, nullable = _kind(cls, name)
    if (value is None and nullable) or kind not in _CHECKS:
        return value
    if not _CHECKS[kind](value):
        expected = "a list of strings" if kind == "tuple" else kind + (" or null" if nullable else "")
        got = "null" if value is None else f"{type(value).__name__} {value!r}"
        hint = " (write numbers unquoted, e.g. 1.0e-6)" if kind == "float" and isinstance(value, str) else ""
        raise ValueError(f"{where}: expected {expected}, got {got}{hint}")
    return float(value) if kind == "float" else tuple(value) if kind == "tuple" else value


def parse(cls: type, name: str, text: str, where: str):
    """A command-line string for field `name` of `cls` -> a checked value. The text is read as YAML (so
    `1e-3`, `true`, `null` mean what they mean in a preset file); strings are taken as typed, and lists
    may be written `a,b` or `[a, b]`."""
    kind, nullable = _kind(cls, name)
    if nullable and text.strip().lower() in ("null", "none", "~"):
        return None
    if kind == "str":
        return text
    if kind == "tuple":
        items = text.strip()
        items = items[1:-1] if items.startswith("[") and items.endswith("]") else items
        return tuple(s.strip().strip("'\"") for s in items.split(",") if s.strip())
    try:
        value = yaml.load(text, Loader=YamlLoader)
    except yaml.YAMLError:
        value = text
    return coerce(cls, name, value, where)
