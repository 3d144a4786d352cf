"""The run's own sections of a training Config (zoo/train/config.py): data.*, run.*, mesh.* and init.*, each a
frozen dataclass whose field docstrings are what `--help` prints and whose ``__post_init__`` checks it.

(model.* and train.* are ModelConfig and TrainConfig, from the preset.)
"""

from __future__ import annotations

import dataclasses

from zoo.fields import Replaceable, fail
from zoo.sharding import check_mesh_sizes
from zoo.train.data_sources import parse_sources


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
    allow_recipe_change: bool = False
    """Let a resumed run change its recipe (train.*, data.*, run.seed). false = refuse, naming the changed
    field; true = resume, recording each change in <run.dir>/history.jsonl."""
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
    """Device mesh (zoo/sharding.py): batch split over data x fsdp x expert, params over fsdp (embed), expert
    (a MoE layer's experts) and tensor (mlp, heads, vocab). One axis may be -1: all remaining devices."""

    data: int = -1
    """Pure data parallelism: params replicated."""
    fsdp: int = 1
    """Fully sharded data parallelism: params split along embed, batch split too."""
    tensor: int = 1
    """Tensor (Megatron) parallelism: mlp, heads and vocab split."""
    expert: int = 1
    """Expert parallelism (GShard): each MoE layer's model.num_experts experts split over `expert` groups of
    devices, num_experts / expert whole experts each; outside the MoE layers the batch is split over it too,
    as over data. Needs a MoE model (model.num_experts > 0) whose num_experts it divides."""

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
