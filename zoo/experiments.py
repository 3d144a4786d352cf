"""Ablations on the trainer's public API: named variants x seeds, each a real `zoo.train.loop.train` run in its
own temporary run directory, returned as tidy per-step curves, a summary over seeds and a shaded plot.

    sz = sizes()                                   # SIZES[zoo.analysis.scale()]: ci, laptop or accelerator
    exp = run_variants({"pre": [], "post": ["model.norm_position=post", "model.final_norm=false"]},
                       base=base_overrides(sz), seeds=sz.seeds)
    exp.summary()                                  # per variant: final train / val loss, mean and std over seeds
    plot_curves(ax, exp, smooth=10)                # mean curve per variant, min-max band over seeds

A variant is a list of `section.field=value` overrides applied after `base` (later keys win), so it names only
what it changes. Runs go seed by seed, each seed through every variant, so variants share the machine's load
over time and their step times compare fairly. A run that stops on a non-finite loss is kept: its curve up to
the stop (from its metrics.jsonl) and the reason. matplotlib is imported inside `plot_curves` only.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np

from zoo.analysis import scale
from zoo.model import build, count_params
from zoo.train import data_setup
from zoo.train.config import Config, load_run_config, resolve
from zoo.train.data import pack
from zoo.train.loop import TrainingStopped, train
from zoo.train.objectives import token_nll
from zoo.train.setup import get_tokenizer

CURVE_KEYS = ("loss", "nll", "grad_norm", "lr", "step_time_s", "tokens_per_s")


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


@dataclasses.dataclass
class Run:
    """One finished (or stopped) training run."""

    variant: str
    seed: int
    config: Config
    """The resolved config as the run saved it (model.vocab_size fitted to the tokenizer)."""
    history: list[dict]
    evals: list[dict]
    params: dict | None
    """Final parameters; None if the run stopped."""
    stopped: str | None
    """Why the run stopped early (a non-finite loss), else None."""
    seconds: float
    """Wall time of train(), compilation and data loading included."""
    probes: list[dict] = dataclasses.field(default_factory=list)
    """run_variants(probe=...)'s rows (step and measurements), one per checkpoint; else empty."""


@dataclasses.dataclass
class Experiment:
    """Every run of run_variants, with views over seeds: curves, finals, summary, markdown."""

    runs: list[Run]
    variants: list[str]
    seeds: list[int]

    def run(self, variant: str, seed: int) -> Run:
        return next(r for r in self.runs if r.variant == variant and r.seed == seed)

    @property
    def rows(self) -> list[dict]:
        """Tidy per-step rows: variant, seed, step and CURVE_KEYS."""
        return [
            {"variant": r.variant, "seed": r.seed, "step": h["step"], **{k: h[k] for k in CURVE_KEYS}}
            for r in self.runs
            for h in r.history
        ]

    @property
    def eval_rows(self) -> list[dict]:
        """Tidy validation rows: variant, seed, step, val_loss."""
        return [
            {"variant": r.variant, "seed": r.seed, "step": e["step"], "val_loss": e["val_loss"]}
            for r in self.runs
            for e in r.evals
        ]

    def curve(self, variant: str, key: str = "loss") -> tuple[np.ndarray, np.ndarray]:
        """(steps [n], values [seeds, n]) of one variant; NaN after a run stopped."""
        runs = [self.run(variant, s) for s in self.seeds]
        steps = np.arange(1, max(r.config.steps for r in runs) + 1)
        values = np.full((len(runs), len(steps)), np.nan)
        for i, r in enumerate(runs):
            for h in r.history:
                values[i, h["step"] - 1] = h[key]
        return steps, values

    def val_curve(self, variant: str) -> tuple[np.ndarray, np.ndarray]:
        """(eval steps [n], val_loss [seeds, n]) of one variant; NaN where a run had stopped."""
        runs = [self.run(variant, s) for s in self.seeds]
        steps = sorted({e["step"] for r in runs for e in r.evals})
        values = np.full((len(runs), len(steps)), np.nan)
        for i, r in enumerate(runs):
            for e in r.evals:
                values[i, steps.index(e["step"])] = e["val_loss"]
        return np.asarray(steps), values

    def probe_curve(self, variant: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(probed steps [n], `key` of the probe rows [seeds, n]) of one variant; NaN where a run had stopped."""
        runs = [self.run(variant, s) for s in self.seeds]
        steps = sorted({p["step"] for r in runs for p in r.probes})
        values = np.full((len(runs), len(steps)), np.nan)
        for i, r in enumerate(runs):
            for p in r.probes:
                values[i, steps.index(p["step"])] = p[key]
        return np.asarray(steps), values

    def finals(self, variant: str, tail: int | None = None) -> dict[str, np.ndarray]:
        """Per seed: train loss (mean of the last `tail` steps, default a tenth of the run), final val loss
        (NaN for a stopped run) and median step time (the first tenth of the steps left out)."""
        steps, loss = self.curve(variant, "loss")
        _, step_time = self.curve(variant, "step_time_s")
        tail = tail or max(1, len(steps) // 10)
        val = [
            r.evals[-1]["val_loss"] if r.evals and r.stopped is None else np.nan
            for r in (self.run(variant, s) for s in self.seeds)
        ]
        with np.errstate(all="ignore"):
            return {
                "train_loss": loss[:, -tail:].mean(axis=1),
                "val_loss": np.asarray(val, float),
                "step_time_s": np.nanmedian(step_time[:, len(steps) // 10 :], axis=1),
            }

    def summary(self, tail: int | None = None, variants: list[str] | None = None) -> list[dict]:
        """One row per variant: params, seeds, stopped runs, and mean / std (ddof=1) over seeds of finals()."""
        out = []
        for variant in variants or self.variants:
            finals = self.finals(variant, tail)
            runs = [self.run(variant, s) for s in self.seeds]
            row = {
                "variant": variant,
                "params": count_params(runs[0].config.model),
                "seeds": len(runs),
                "stopped": sum(r.stopped is not None for r in runs),
            }
            for key, values in finals.items():
                row[key] = float(np.mean(values))
                row[key + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out.append(row)
        return out

    def markdown(self, variants: list[str] | None = None, baseline: str | None = None, tail: int | None = None) -> str:
        """summary() as a markdown table (mean ± std over seeds); with `baseline`, each variant's val loss
        difference to it."""
        rows = self.summary(tail, variants)
        base = self.summary(tail, [baseline])[0] if baseline else None
        head = (
            ["variant", "params", "seeds", "stopped", "train loss", "val loss"]
            + ([f"val − {baseline}"] if base else [])
            + ["step time (ms)"]
        )
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [
                r["variant"],
                f"{r['params']:,}",
                str(r["seeds"]),
                str(r["stopped"]),
                f"{r['train_loss']:.3f} ± {r['train_loss_std']:.3f}",
                f"{r['val_loss']:.3f} ± {r['val_loss_std']:.3f}",
            ]
            cells += [f"{r['val_loss'] - base['val_loss']:+.3f}"] if base else []
            cells += [f"{1e3 * r['step_time_s']:.1f} ± {1e3 * r['step_time_s_std']:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _metrics_file(run_dir: Path) -> list[dict]:
    """The per-step rows of a run's metrics.jsonl (what a stopped run leaves)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r]


class Probe(Protocol):
    """What run_variants(probe=...) takes (zoo.stability.SoftmaxProbe): rows measured on a finished run's
    directory, whose checkpoints were saved every `every` steps."""

    every: int

    def __call__(self, run_dir: Path) -> list[dict]: ...


def run_variants(
    variants: dict[str, list[str]],
    *,
    base: list[str],
    seeds: int | list[int] = 3,
    preset: str = "llama-tiny",
    devices=None,
    log: Callable[[str], None] | None = print,
    probe: Probe | None = None,
) -> Experiment:
    """Train every variant with every seed (seeds: a count, meaning 0..n-1, or a list) on one device (default the
    first local one) and return the Experiment. `log` gets one line per finished run. `probe` (with an `every`
    attribute, e.g. zoo.stability.SoftmaxProbe): the runs checkpoint every probe.every steps, keeping all, and
    each Run.probes is probe(run directory), also for a stopped run (its checkpoints before the stop)."""
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    devices = devices or jax.local_devices()[:1]
    runs = []
    for seed in seeds:
        for name, overrides in variants.items():
            with tempfile.TemporaryDirectory(prefix="zoo-exp-") as run_dir:
                every, keep = (probe.every, 1000000) if probe is not None else (1000000, 1)
                config = resolve(
                    preset,
                    [
                        *base,
                        *overrides,
                        f"run.seed={seed}",
                        f"run.dir={run_dir}",
                        "run.sample_tokens=0",
                        "run.progress=false",
                        f"run.keep={keep}",
                        f"run.checkpoint_interval={every}",
                        "run.async_checkpoint=false",
                    ],
                )
                t0 = time.perf_counter()
                try:
                    result = train(config, devices=devices, echo=lambda _: None)
                    history, evals, params, stopped = result.history, result.evals, result.state["params"], None
                except TrainingStopped as e:
                    history, evals, params, stopped = _metrics_file(Path(run_dir)), [], None, str(e)
                seconds = time.perf_counter() - t0
                probes = probe(Path(run_dir)) if probe is not None else []
                runs.append(Run(name, seed, load_run_config(run_dir), history, evals, params, stopped, seconds, probes))
            if log is not None:
                last = f"loss {history[-1]['loss']:.3f}" if history else "no steps"
                val = f", val {evals[-1]['val_loss']:.3f}" if evals else ""
                log(
                    f"{name:>16s} seed {seed}: {last}{val} after {len(history)} steps, {seconds:.1f}s"
                    + (" (stopped: non-finite loss)" if stopped else "")
                )
    return Experiment(runs, list(variants), seeds)


# ------------------------------------------------------------------------------------------ longer contexts
def validation_tokens(config: Config) -> np.ndarray:
    """The run's validation split as one token stream: its sources' cached validation tokens (the cache, split
    and tokenizer its training read), one source after another."""
    tokenizer = get_tokenizer(config, data_setup.train_texts(config.data), None)
    corpora = data_setup.open_sources(config.data, tokenizer, progress=False)
    return np.concatenate([np.asarray(c.validation.tokens, np.int32) for _, _, c in corpora])


@functools.lru_cache(maxsize=16)
def _nll_program(cfg):
    """Jitted per-position next-token loss summed over rows, one per model config (reused across seeds)."""
    model = build(cfg)

    @jax.jit
    def nll(params, rows):
        return token_nll(model.apply({"params": params}, rows[:, :-1]), rows[:, 1:]).sum(axis=0)

    return nll


def position_losses(run: Run, lengths: list[int], max_rows: int = 32, batch: int = 8) -> dict[int, Any]:
    """{length: next-token loss (nats) at each position 0..length-1, averaged over rows}: how the run's model does
    on contexts longer than it trained on (up to model.max_seq_len). Every length reads the same text, the first
    max_rows x max(lengths) validation tokens, cut into rows of that length (more rows for shorter lengths)."""
    cfg = run.config.model
    if max(lengths) > cfg.max_seq_len:
        raise ValueError(f"length {max(lengths)} exceeds model.max_seq_len={cfg.max_seq_len}")
    tokens = validation_tokens(run.config)[: max_rows * max(lengths) + 1]
    nll, out = _nll_program(cfg), {}
    for length in lengths:
        rows = pack(tokens, length + 1, length)
        if len(rows) == 0:
            raise ValueError(f"the validation split has fewer than {length + 1} tokens")
        total = sum(np.asarray(nll(run.params, rows[i : i + batch])) for i in range(0, len(rows), batch))
        out[length] = total / len(rows)
    return out


# ---------------------------------------------------------------------------------------------- plotting
def smooth_curve(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis (the first window-1 points average what exists)."""
    if window <= 1:
        return values
    cumsum = np.cumsum(np.nan_to_num(values), axis=-1)
    shifted = np.concatenate([np.zeros_like(cumsum[..., :window]), cumsum[..., :-window]], axis=-1)
    counts = np.minimum(np.arange(1, values.shape[-1] + 1), window)
    out = (cumsum - shifted) / counts
    return np.where(np.isnan(values), np.nan, out)


def plot_curves(
    ax,
    exp: Experiment,
    variants: list[str] | None = None,
    key: str = "loss",
    *,
    band: str = "minmax",
    smooth: int = 1,
    colors: dict | None = None,
    labels: dict | None = None,
    val: bool = False,
) -> None:
    """Mean over seeds of `key` per step (or validation loss, val=True) for each variant, with the min-max band
    (band="minmax") or mean +- std (band="std") shaded; `smooth` is a moving-average window applied per seed."""
    for i, variant in enumerate(variants or exp.variants):
        steps, values = exp.val_curve(variant) if val else exp.curve(variant, key)
        values = values if val else smooth_curve(values, smooth)
        with warnings.catch_warnings():  # all-NaN columns (every seed stopped) plot as gaps
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=0)
            if band == "std":
                lo, hi = mean - np.nanstd(values, axis=0), mean + np.nanstd(values, axis=0)
            else:
                lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        color = (colors or {}).get(variant, f"C{i % 10}")
        ax.plot(
            steps,
            mean,
            color=color,
            lw=1.3,
            marker="o" if val else None,
            ms=3,
            label=f"{(labels or {}).get(variant, variant)} (n={values.shape[0]})",
        )
        ax.fill_between(steps, lo, hi, color=color, alpha=0.18, lw=0)


def plot_finals(
    ax,
    exp: Experiment,
    variants: list[str] | None = None,
    key: str = "val_loss",
    *,
    colors: dict | None = None,
    labels: dict | None = None,
) -> None:
    """One row per variant: each seed's final `key` (a finals() entry) as a dot, the mean +- std (ddof=1) as a
    diamond with error bar; stopped runs are left out and counted in the label."""
    variants = variants or exp.variants
    for i, variant in enumerate(variants):
        values = exp.finals(variant)[key]
        kept = values[np.isfinite(values)]
        color = (colors or {}).get(variant, f"C{i % 10}")
        ax.scatter(kept, np.full(len(kept), i), s=14, color=color, alpha=0.55, zorder=3)
        if len(kept):
            ax.errorbar(
                kept.mean(),
                i,
                xerr=kept.std(ddof=1) if len(kept) > 1 else 0,
                fmt="D",
                ms=5,
                capsize=3,
                color=color,
                zorder=4,
            )
    names = [(labels or {}).get(v, v) for v in variants]
    stopped = [len(exp.seeds) - int(np.isfinite(exp.finals(v)[key]).sum()) for v in variants]
    ticks = [n + (f" ({k} stopped)" if k else "") for n, k in zip(names, stopped, strict=True)]
    ax.set_yticks(range(len(variants)), ticks)
    ax.set_ylim(len(variants) - 0.5, -0.5)
