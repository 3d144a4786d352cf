"""How big the notebooks' ablations are at each scale: Sizes (the model every variant starts from, its recipe and
token budget), one per scale in SIZES, and base_overrides(sz), that model and recipe as the `base` overrides of
zoo.experiments.run_variants. Which scale runs is zoo.analysis.scale() ($ZOO_NOTEBOOK_SCALE).

    sz = sizes()                                   # SIZES[zoo.analysis.scale()]: ci, laptop or accelerator
    base = base_overrides(sz)                      # llama-tiny's block at sz's widths, sz's recipe
"""

from __future__ import annotations

import dataclasses

from zoo.analysis import scale


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big one scale's experiments are: the model every variant starts from and the token budget."""

    steps: int
    seeds: int
    d_model: int
    num_layers: int
    num_heads: int
    batch_size: int
    seq_len: int
    warmup_steps: int
    learning_rate: float
    eval_interval: int
    max_documents: int | None
    """Documents of the embedded corpus used (the first N; None = all ~800)."""

    @property
    def tokens(self) -> int:
        """Training tokens per run."""
        return self.steps * self.batch_size * self.seq_len

    def replace(self, **changes) -> Sizes:
        return dataclasses.replace(self, **changes)


SIZES = {
    # a few steps of a very small model: every notebook in about a minute or two in CI
    "ci": Sizes(
        steps=12,
        seeds=2,
        d_model=32,
        num_layers=2,
        num_heads=2,
        batch_size=8,
        seq_len=32,
        warmup_steps=3,
        learning_rate=3e-3,
        eval_interval=6,
        max_documents=200,
    ),
    # what fits in 5-10 minutes per notebook on 2 CPU cores: 102k tokens per run
    "laptop": Sizes(
        steps=200,
        seeds=3,
        d_model=64,
        num_layers=4,
        num_heads=4,
        batch_size=8,
        seq_len=64,
        warmup_steps=20,
        learning_rate=3e-3,
        eval_interval=50,
        max_documents=400,
    ),
    # the same model at 20x the tokens (2.0M per run)
    "accelerator": Sizes(
        steps=1000,
        seeds=3,
        d_model=64,
        num_layers=4,
        num_heads=4,
        batch_size=32,
        seq_len=64,
        warmup_steps=100,
        learning_rate=3e-3,
        eval_interval=100,
        max_documents=None,
    ),
}


def sizes(name: str | None = None) -> Sizes:
    """SIZES[name], name defaulting to zoo.analysis.scale() ($ZOO_NOTEBOOK_SCALE)."""
    return SIZES[name or scale()]


def glu_d_ff(d_model: int) -> int:
    """8/3 d_model: a gated MLP's three matrices hold as many parameters as a plain 4 d_model MLP's two."""
    return round(8 * d_model / 3)


def base_overrides(sz: Sizes, max_len_factor: int = 4) -> list[str]:
    """The shared model and recipe: llama-tiny's block (pre-RMSNorm, SwiGLU at d_ff = 8/3 d_model, RoPE, no biases,
    multi-head attention) at sz's widths, the run's cosine schedule ending at sz.steps, and model.max_seq_len =
    max_len_factor x seq_len (room to evaluate at longer lengths)."""
    return [
        f"model.d_model={sz.d_model}",
        f"model.num_layers={sz.num_layers}",
        f"model.num_heads={sz.num_heads}",
        f"model.num_kv_heads={sz.num_heads}",
        f"model.d_ff={glu_d_ff(sz.d_model)}",
        f"model.max_seq_len={max_len_factor * sz.seq_len}",
        f"train.batch_size={sz.batch_size}",
        f"train.seq_len={sz.seq_len}",
        f"train.warmup_steps={sz.warmup_steps}",
        f"train.total_steps={sz.steps}",
        f"train.learning_rate={sz.learning_rate}",
        f"run.steps={sz.steps}",
        f"run.eval_interval={sz.eval_interval}",
        f"data.max_documents={sz.max_documents if sz.max_documents else 'null'}",
    ]
