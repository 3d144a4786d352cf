"""Plots of an Experiment (zoo.experiments.run_variants): per-step curves, mean over seeds with a shaded band
(plot_curves, smoothed by smooth_curve), and each seed's final value per variant (plot_finals). They draw on a
matplotlib axes they are given; nothing here imports matplotlib.
"""

from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np


class _Experiment(Protocol):
    """What the plots read of a zoo.experiments.Experiment (a Protocol: that module imports this one)."""

    variants: list[str]
    seeds: list[int]

    def curve(self, variant: str, key: str = "loss") -> tuple[np.ndarray, np.ndarray]: ...

    def val_curve(self, variant: str) -> tuple[np.ndarray, np.ndarray]: ...

    def finals(self, variant: str, tail: int | None = None) -> dict[str, np.ndarray]: ...


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
    exp: _Experiment,
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
    exp: _Experiment,
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
