"""`python train.py`: the run configuration, its resolution from a preset plus dotted overrides, and main().

A run is five sections, each a frozen dataclass whose fields are the override keys::

    model.*   ModelConfig (zoo/config.py), from the preset; vocab_size follows the tokenizer
    train.*   TrainConfig (zoo/train/recipe.py), the preset's published recipe
    data.*    DataConfig: corpus, tokenizer
    run.*     RunConfig: run dir, steps, seed, intervals, logging
    mesh.*    MeshConfig: device mesh axis sizes

    python train.py --preset gpt3-tiny model.num_layers=2 train.learning_rate=1e-3 mesh.fsdp=2 run.steps=100

Values are parsed by the field's type (`null` for None, lists as `a,b` or `[a, b]`). Bad input of any kind
(unknown key, bad value, missing data, invalid mesh, a checkpoint of another model) ends with exit status 2
and one line on stderr; nothing in the run directory is written before the inputs are known to be good.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from zoo.config import ModelConfig, field_docs, suggest
from zoo.train.recipe import TrainConfig

DEFAULT_PRESET = "llama-tiny"


class UserError(Exception):
    """Bad input: reported as one line, exit status 2, no traceback."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Corpus and tokenizer."""

    path: str | None = None
    """Training text: a UTF-8 file (one document), a folder (every text file below it), or a .jsonl file
    (one document per line, in text_field). null = the embedded default corpus (this Python's standard
    library sources, see zoo/train/data.py)."""
    text_field: str = "text"
    """Field holding the text in JSONL records."""
    tokenizer: str = "byte"
    """byte (UTF-8 bytes, ByT5 ids), bpe (byte-level BPE trained on the train split), or a path to a
    tokenizer.json (or a directory holding one)."""
    bpe_vocab_size: int = 4096
    """Vocabulary of the trained BPE (tokenizer: bpe), special and sentinel tokens included."""
    validation_percent: int = 2
    """Share of documents (by content hash) held out for validation."""
    max_documents: int | None = None
    """Use only the first N documents of the corpus (quick experiments, tests). null = all."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where the run lives, how long it runs, what it logs."""

    dir: str | None = None
    """Run directory: config.json, tokenizer/, checkpoints/, metrics.jsonl. Restarting with the same
    directory resumes from its latest checkpoint. null = runs/<preset>."""
    steps: int | None = None
    """Optimizer steps to train to (counted from the start of the run, not of this invocation).
    null = train.total_steps."""
    seed: int = 0
    """Seed of parameter init, data order, dropout and span corruption."""
    eval_interval: int = 100
    """Validation loss every N steps (and at the end). 0 = only at the end; -1 = never."""
    eval_batches: int = 8
    """Validation batches per evaluation (the same fixed batches every time)."""
    checkpoint_interval: int = 100
    """Checkpoint every N steps; the last step is always saved."""
    keep: int = 3
    """Checkpoints kept on disk (the newest)."""
    log_interval: int = 10
    """Steps between log lines when stdout is not a terminal (the progress bar updates every step)."""
    peak_flops: float | None = None
    """Peak FLOP/s per chip for MFU. null = by backend (zoo/train/metrics.py: H100/H200 989e12 bf16
    dense, ..., CPU a nominal 96 GFLOP/s per core for the whole host)."""
    progress: bool = True
    """Show a progress bar when stderr is a terminal."""
    sample_tokens: int = 200
    """Tokens to generate from sample_prompt at the end. 0 = no sample."""
    sample_prompt: str = "def "
    """Prompt of the end-of-run sample (encoder-decoder models: the encoder input, with a sentinel appended)."""
    sample_temperature: float = 0.8
    """Sampling temperature of the end-of-run sample (top-k 40, top-p 0.95)."""
    async_checkpoint: bool = True
    """Write checkpoints in the background while training continues."""
    distributed: bool = False
    """Call jax.distributed.initialize() (multi-process launch; also on when ZOO_DISTRIBUTED=1)."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh (zoo/sharding.py): batch split over data x fsdp, params over fsdp (embed) and tensor
    (mlp, heads, vocab). One axis may be -1: all remaining devices."""

    data: int = -1
    """Pure data parallelism: params replicated."""
    fsdp: int = 1
    """Fully sharded data parallelism: params split along embed, batch split too."""
    tensor: int = 1
    """Tensor (Megatron) parallelism: mlp, heads and vocab split."""


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig,
                             "run": RunConfig, "mesh": MeshConfig}


@dataclasses.dataclass(frozen=True)
class Config:
    """A fully resolved run."""

    preset: str
    model: ModelConfig
    train: TrainConfig
    data: DataConfig
    run: RunConfig
    mesh: MeshConfig
    explicit: frozenset = dataclasses.field(default=frozenset(), compare=False)
    """Override keys given explicitly (e.g. an explicit model.vocab_size is kept, not fitted)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir if self.run.dir is not None else f"runs/{self.preset}")

    @property
    def steps(self) -> int:
        return self.run.steps if self.run.steps is not None else self.train.total_steps

    def replace(self, **sections) -> "Config":
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "model": self.model.to_dict(), "train": self.train.to_dict(),
                "data": dataclasses.asdict(self.data), "run": dataclasses.asdict(self.run),
                "mesh": dataclasses.asdict(self.mesh)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        return cls(d["preset"], ModelConfig.from_dict(d["model"]), TrainConfig.from_dict(d["train"]),
                   DataConfig(**d["data"]), RunConfig(**d["run"]), MeshConfig(**d["mesh"]))


# --- fields, types, docs -------------------------------------------------------------------------------------


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "explicit"}


def _kind(annotation: str) -> tuple[str, bool]:
    """'int | None' -> ('int', True); 'tuple[str, ...]' -> ('tuple', False)."""
    parts = [p.strip() for p in str(annotation).split("|")]
    nullable = "None" in parts
    base = next(p for p in parts if p != "None")
    return ("tuple" if base.startswith("tuple") else base), nullable


def parse_value(raw: str, annotation: str, key: str) -> Any:
    """A command-line string -> the field's type; errors name the key and the expected type."""
    kind, nullable = _kind(annotation)
    text = raw.strip()
    if nullable and text.lower() in ("null", "none", "~"):
        return None
    try:
        if kind == "str":
            return raw
        if kind == "bool":
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            value = float(text) if any(c in text.lower() for c in ".e") else int(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if kind == "float":
            value = float(text)
            if math.isnan(value):
                raise ValueError
            return value
        if kind == "tuple":
            items = text[1:-1] if text.startswith("[") and text.endswith("]") else text
            return tuple(s.strip().strip("'\"") for s in items.split(",") if s.strip())
    except ValueError:
        pass
    else:
        raise UserError(f"{key}: unsupported field type {annotation!r}")
    expected = {"tuple": "a comma-separated list"}.get(kind, kind) + (" or null" if nullable else "")
    raise UserError(f"{key}={raw!r}: expected {expected}")


def all_keys() -> list[str]:
    return [f"{s}.{f}" for s, cls in SECTIONS.items() for f in _fields(cls)]


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """['model.num_layers=4', ...] -> {"model": {"num_layers": 4}, ...}; unknown keys suggest close ones."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"expected section.field=value, got {item!r}.{suggest(key, all_keys())}")
        section, _, name = key.partition(".")
        if section not in SECTIONS or name not in _fields(SECTIONS[section]):
            hint = suggest(key, all_keys()) or suggest(name or section, all_keys())
            if not hint:  # a bare field name: which section has it?
                homes = [k for k in all_keys() if k.endswith("." + (name or section))]
                hint = f" Did you mean: {', '.join(homes)}?" if homes else ""
            raise UserError(f"unknown override key {key!r}.{hint} (python train.py --help lists every key)")
        out[section][name] = parse_value(raw, _fields(SECTIONS[section])[name].type, key)
    return out


def resolve(preset: str = DEFAULT_PRESET, overrides: list[str] | dict | None = None) -> Config:
    """The Config of `preset` with overrides: a list of 'section.field=value' strings, or a dict
    {"model": {...}, "train": {...}, ...} of typed values."""
    if overrides is None or isinstance(overrides, (list, tuple)):
        parsed = parse_overrides(list(overrides or []))
    else:
        parsed = {s: dict(overrides.get(s, {})) for s in SECTIONS}
        for section in overrides:
            if section not in SECTIONS:
                raise UserError(f"unknown config section {section!r}.{suggest(section, SECTIONS)}")
    from zoo import presets

    try:
        model = presets.get_config(preset, **parsed["model"])
        train = presets.get_train_config(preset, **parsed["train"])
        data = DataConfig(**parsed["data"])
        run = RunConfig(**parsed["run"])
        mesh = MeshConfig(**parsed["mesh"])
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    _validate(run, data)
    explicit = frozenset(f"{s}.{k}" for s, values in parsed.items() for k in values)
    return Config(preset, model, train, data, run, mesh, explicit)


def _validate(run: RunConfig, data: DataConfig) -> None:
    def fail(key, message):
        raise UserError(f"{key}: {message}")
    if run.steps is not None and run.steps < 1:
        fail("run.steps", f"must be >= 1 or null, got {run.steps}")
    for key in ("checkpoint_interval", "keep", "log_interval", "eval_batches"):
        if getattr(run, key) < 1:
            fail(f"run.{key}", f"must be >= 1, got {getattr(run, key)}")
    if run.eval_interval < -1:
        fail("run.eval_interval", f"must be >= 0, or -1 for never, got {run.eval_interval}")
    if run.sample_tokens < 0 or run.sample_temperature < 0:
        fail("run.sample_tokens", "sample_tokens and sample_temperature must be >= 0")
    if run.peak_flops is not None and not run.peak_flops > 0:
        fail("run.peak_flops", f"must be > 0 or null, got {run.peak_flops}")
    if not 0 <= data.validation_percent < 100:
        fail("data.validation_percent", f"must be in [0, 100), got {data.validation_percent}")
    if data.max_documents is not None and data.max_documents < 1:
        fail("data.max_documents", f"must be >= 1 or null, got {data.max_documents}")
    if data.bpe_vocab_size < 300:
        fail("data.bpe_vocab_size", f"must be >= 300 (256 bytes + specials), got {data.bpe_vocab_size}")


# --- command line -------------------------------------------------------------------------------------------

USAGE = "usage: python train.py [--preset NAME] [section.field=value ...] [--list-presets] [-h]"


def help_text(config: Config) -> str:
    lines = [USAGE, "",
             "Train a zoo model on a corpus (default: llama-tiny on the embedded corpus), sharded over a device",
             "mesh, checkpointed and resumable: rerun with the same run.dir to continue.", "",
             "options:",
             f"  --preset NAME      model and training recipe (default {DEFAULT_PRESET}; --list-presets)",
             "  -h, --help         this text; values shown are the chosen preset's", "",
             "overrides (section.field=value; defaults shown for the preset):"]
    notes = {"model": " (vocab_size follows the tokenizer unless set)",
             "train": " (the preset's training recipe)"}
    values = config.to_dict()
    for section, cls in SECTIONS.items():
        lines.append(f"\n{section}{notes.get(section, '')}:")
        docs = field_docs(cls)
        for name in _fields(cls):
            value = values[section][name]
            shown = ("null" if value is None else str(value).lower() if isinstance(value, bool)
                     else ",".join(value) if isinstance(value, list)
                     else repr(value) if isinstance(value, str) and value != value.strip() else value)
            lines.append(f"  {section}.{name}={shown}")
            lines += textwrap.wrap(docs.get(name, ""), 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is a one-line UserError rather than usage text and exit."""

    def error(self, message):
        raise UserError(f"{message}. {USAGE}")


def parse_args(argv: list[str]) -> tuple[Config | None, str | None]:
    """(config, None) to train, or (None, text) to print and exit 0 (--help, --list-presets)."""
    parser = _Parser(prog="train.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--preset", default=DEFAULT_PRESET)
    parser.add_argument("--list-presets", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.list_presets:
        from zoo.presets import list_presets
        return None, "\n".join(list_presets())
    config = resolve(args.preset, args.overrides)
    if args.help:
        return None, help_text(config)
    return config, None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config, text = parse_args(argv)
        if text is not None:
            print(text)
            return 0
        if config.run.distributed or os.environ.get("ZOO_DISTRIBUTED") == "1":
            import jax
            jax.distributed.initialize()  # coordinator, process count and id from the environment
        from zoo.train.loop import TrainingStopped, train

        try:
            train(config)
        except TrainingStopped as e:
            print(f"train.py: stopped: {_one_line(e)}", file=sys.stderr)
            return 1
    except UserError as e:
        print(f"train.py: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train.py: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


def load_run_config(run_dir: str | os.PathLike) -> Config:
    """The resolved config saved in a run directory."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    return Config.from_dict(json.loads(path.read_text()))
