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
the stop (from its metrics.jsonl) and the reason. The sizes per scale and `base_overrides` are zoo.scales', the
plots zoo.experiment_plots'; both are importable from here too, as the notebooks do.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np

from zoo.experiment_plots import plot_curves, plot_finals, smooth_curve  # the notebooks call these through here
from zoo.model import build, count_params
from zoo.scales import SIZES, base_overrides, glu_d_ff, sizes  # the notebooks call these through here
from zoo.train import data_setup
from zoo.train.config import Config, load_run_config, resolve
from zoo.train.data import pack
from zoo.train.loop import TrainingStopped, train
from zoo.train.objectives import token_nll
from zoo.train.setup import get_tokenizer

__all__ = [
    "CURVE_KEYS",
    "Experiment",
    "Probe",
    "Run",
    "position_losses",
    "run_variants",
    "validation_tokens",
    # re-exported from zoo.scales and zoo.experiment_plots for the notebooks
    "SIZES",
    "base_overrides",
    "glu_d_ff",
    "plot_curves",
    "plot_finals",
    "sizes",
    "smooth_curve",
]

CURVE_KEYS = ("loss", "nll", "grad_norm", "lr", "step_time_s", "tokens_per_s")


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
