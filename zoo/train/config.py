"""A training run's configuration: six sections, each a frozen dataclass that validates itself.

    model.*   ModelConfig (zoo/config.py), from the preset; vocab_size follows the tokenizer unless set
    train.*   TrainConfig (zoo/recipe.py), the preset's published recipe
    data.*    DataConfig: corpus, tokenizer
    run.*     RunConfig: run dir, steps, seed, intervals, logging
    mesh.*    MeshConfig: device mesh axis sizes
    init.*    InitConfig: start from a Hugging Face checkpoint or another run's parameters

    config = resolve("gpt3-tiny", ["model.num_layers=2", "train.learning_rate=1e-3", "mesh.fsdp=2"])

Overrides are `section.field=value` strings (read like a preset's YAML values, see zoo.fields.parse) or a
dict of typed values. Any bad value is a UserError: one line naming the key, where its value came from
(the preset file or the command line) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from zoo import presets
from zoo.config import ModelConfig
from zoo.fields import Replaceable, defaults, fail, field_names, parse, suggest, value_origins
from zoo.recipe import TrainConfig
from zoo.sharding import check_mesh_sizes
from zoo.train.data_sources import parse_sources

DEFAULT_PRESET = "llama-tiny"
COMMAND_LINE = "the command line"


class UserError(Exception):
    """Bad input: reported as one line, exit status 2, no traceback."""


@dataclasses.dataclass(frozen=True)
class DataConfig(Replaceable):
    """Corpus and tokenizer."""

    path: str | None = None
    """Training text: a UTF-8 file (one document), a folder (every file below it), a .jsonl / .jsonl.gz /
    .jsonl.zst file (one document per line, in text_field) or a .parquet file (column text_field). null = the
    embedded default corpus (this Python's standard library sources, see zoo/train/data.py)."""
    sources: tuple[str, ...] = ()
    """A weighted mixture instead of path: PATH:WEIGHT items, e.g. a.jsonl:0.7,b/:0.3 (each row of a batch
    comes from a source with probability weight / sum of weights)."""
    text_field: str = "text"
    """Field holding the text in JSONL records and Parquet files."""
    cache_dir: str | None = None
    """Where tokenized corpora are cached (memory-mapped; reused by later runs and resumes). null =
    $ZOO_DATA_CACHE, else ~/.cache/zoo/data."""
    tokenizer: str = "byte"
    """byte (UTF-8 bytes, ByT5 ids), bpe (byte-level BPE trained on the train split), or a path to a
    tokenizer.json (or a directory holding one)."""
    bpe_vocab_size: int = 4096
    """Vocabulary of the trained BPE (tokenizer: bpe), special and sentinel tokens included."""
    validation_percent: int = 2
    """Share of documents (by content hash) held out for validation."""
    max_documents: int | None = None
    """Use only the first N documents of the corpus (quick experiments, tests). null = all."""

    def __post_init__(self):
        if not 0 <= self.validation_percent < 100:
            fail(self, "validation_percent", f"must be in [0, 100), got {self.validation_percent}")
        if self.max_documents is not None and self.max_documents < 1:
            fail(self, "max_documents", f"must be >= 1 or null, got {self.max_documents}")
        if self.bpe_vocab_size < 300:
            fail(self, "bpe_vocab_size", f"must be >= 300 (256 bytes + specials), got {self.bpe_vocab_size}")
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.sources and self.path is not None:
            fail(self, "sources", f"and data.path={self.path!r} both name the training text; give one")
        try:
            parse_sources(self.sources)
        except ValueError as e:
            fail(self, "sources", f"{e}; expected PATH:WEIGHT items, e.g. a.jsonl:0.7,b/:0.3")


@dataclasses.dataclass(frozen=True)
class RunConfig(Replaceable):
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
    memory_check: bool = True
    """Before the first step, refuse a train step whose compiled memory (XLA's analysis, per device) exceeds
    the device's memory (zoo/train/memory.py). false = skip the check."""
    memory_limit_gb: float | None = None
    """Memory per device (GiB) the check compares against. null = the device's own figure (GPU/TPU
    bytes_limit; CPU: the host's available RAM divided among its emulated devices)."""
    profile: str | None = None
    """START:END writes a jax.profiler trace of steps START+1 .. END to <run.dir>/profile (TensorBoard's
    profile plugin or Perfetto read it). null = no trace."""
    wandb: bool = False
    """Also log metrics to Weights & Biases (pip install -e ".[wandb]"; project $WANDB_PROJECT or zoo, run
    name the run directory's; WANDB_MODE=offline logs locally)."""
    export: str | None = None
    """At the end of the run, export it as a Hugging Face checkpoint (python -m zoo.export) to this
    directory; true = <run.dir>/hf. Only train.py exports (the zoo.export application sits above the
    trainer). null = no export."""

    def __post_init__(self):
        if self.memory_limit_gb is not None and not self.memory_limit_gb > 0:
            fail(self, "memory_limit_gb", f"must be > 0 (GiB) or null, got {self.memory_limit_gb}")
        if self.profile is not None:
            self.profile_window  # noqa: B018  (validates START:END)
        if self.export is not None and not self.export.strip():
            fail(self, "export", "must be a directory, true (<run.dir>/hf) or null, got an empty string")
        if self.steps is not None and self.steps < 1:
            fail(self, "steps", f"must be >= 1 or null, got {self.steps}")
        for name in ("checkpoint_interval", "keep", "log_interval", "eval_batches"):
            if getattr(self, name) < 1:
                fail(self, name, f"must be >= 1, got {getattr(self, name)}")
        if self.eval_interval < -1:
            fail(self, "eval_interval", f"must be >= 0, or -1 for never, got {self.eval_interval}")
        for name in ("sample_tokens", "sample_temperature"):
            if getattr(self, name) < 0:
                fail(self, name, f"must be >= 0, got {getattr(self, name)}")
        if self.peak_flops is not None and not self.peak_flops > 0:
            fail(self, "peak_flops", f"must be > 0 or null, got {self.peak_flops}")

    @property
    def profile_window(self) -> tuple[int, int] | None:
        """run.profile as (start, end) steps: the trace covers steps start+1 .. end."""
        if self.profile is None:
            return None
        start, colon, end = self.profile.partition(":")
        try:
            window = int(start), int(end)
        except ValueError:
            window = (0, 0)
        if not colon or not 0 <= window[0] < window[1]:
            fail(self, "profile", f"expected START:END steps with 0 <= START < END (e.g. 10:15), got {self.profile!r}")
        return window


@dataclasses.dataclass(frozen=True)
class MeshConfig(Replaceable):
    """Device mesh (zoo/sharding.py): batch split over data x fsdp, params over fsdp (embed) and tensor
    (mlp, heads, vocab). One axis may be -1: all remaining devices."""

    data: int = -1
    """Pure data parallelism: params replicated."""
    fsdp: int = 1
    """Fully sharded data parallelism: params split along embed, batch split too."""
    tensor: int = 1
    """Tensor (Megatron) parallelism: mlp, heads and vocab split."""

    def __post_init__(self):
        check_mesh_sizes(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class InitConfig(Replaceable):
    """Where a new run's parameters come from (default: a fresh init). A run that already has a checkpoint
    resumes from it instead."""

    hf: str | None = None
    """A Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json): its parameters,
    its model config (a preset field that disagrees is refused, naming it) and its tokenizer."""
    run: str | None = None
    """Another zoo run directory: the parameters of its latest checkpoint, its model config (checked like
    init.hf's) and its tokenizer."""

    def __post_init__(self):
        if self.hf is not None and self.run is not None:
            fail(self, "run", "init.hf and init.run both name the starting parameters; give one")


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
        raise UserError(str(e)) from None


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
