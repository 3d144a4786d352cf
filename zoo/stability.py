"""The two softmaxes of lecture 3's stability section, measured over a run (notebook 04): the output softmax's
log-normaliser log Z (what z-loss pulls to 0) and the largest attention logit (what QK-norm and soft-capping
bound), read from a run's checkpoints so that the training loop stays the trainer's own.

    probe = SoftmaxProbe(every=10)                      # a checkpoint every 10 steps, each one measured
    exp = experiments.run_variants(variants, base=base, seeds=3, probe=probe)
    steps, log_z = exp.probe_curve("none", "log_z")     # [seeds, checkpoints]

Every measurement runs the model (no dropout) on the same first `rows` validation rows of the run's length.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from zoo.experiments import validation_tokens
from zoo.model import build
from zoo.train.config import load_run_config
from zoo.train.data import pack
from zoo.train.restore import checkpoint_steps, load_params

PROBE_KEYS = ("log_z", "log_z_abs_max", "max_output_logit", "max_attn_logit")


def checkpoint_params(run_dir: str | Path) -> Iterator[tuple[int, dict]]:
    """(step, params) of every checkpoint in a run directory, oldest first, restored onto one device."""
    config = load_run_config(run_dir)
    for step in checkpoint_steps(run_dir):
        yield step, load_params(run_dir, config, step)


@functools.lru_cache(maxsize=16)
def _stats_program(cfg):
    """Jitted softmax statistics of one model config on a batch of token rows."""
    model = build(cfg)

    @jax.jit
    def stats(params, tokens):
        logits, state = model.apply({"params": params}, tokens, mutable=["intermediates"])
        log_z = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
        sown = [
            leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(state.get("intermediates", {}))[0]
            if any(getattr(p, "key", None) == "max_logit" for p in path)
        ]
        attn = jnp.max(jnp.stack([jnp.max(x) for x in sown])) if sown else jnp.float32(jnp.nan)
        return {
            "log_z": log_z.mean(),
            "log_z_abs_max": jnp.abs(log_z).max(),
            "max_output_logit": logits.max().astype(jnp.float32),
            "max_attn_logit": attn,
        }

    return stats


def softmax_stats(cfg, params, tokens) -> dict[str, float]:
    """PROBE_KEYS of a model on tokens [rows, T]: log Z = logsumexp of the output logits, mean over tokens (and
    its largest magnitude), the largest output logit, and the largest pre-softmax attention logit over every
    layer, batch row, head, query and key (after any soft-cap, masked positions excluded; NaN if the model sows
    no `max_logit`)."""
    return {k: float(v) for k, v in jax.device_get(_stats_program(cfg)(params, tokens)).items()}


@dataclasses.dataclass(frozen=True)
class SoftmaxProbe:
    """What run_variants(probe=...) calls on each finished run's directory: checkpoints every `every` steps
    (and the last), each measured with softmax_stats on the first `rows` validation rows."""

    every: int
    rows: int = 8

    def tokens(self, config) -> np.ndarray:
        """int32 [rows, seq_len]: the first validation rows of a run's Config."""
        seq_len = config.train.seq_len
        return np.asarray(pack(validation_tokens(config)[: self.rows * seq_len], seq_len))

    def __call__(self, run_dir: str | Path) -> list[dict]:
        """One row per checkpoint: step and PROBE_KEYS."""
        config = load_run_config(run_dir)
        tokens = self.tokens(config)
        return [
            {"step": step, **softmax_stats(config.model, params, tokens)} for step, params in checkpoint_params(run_dir)
        ]


def plot_probe(
    ax, exp, key: str, variants: list[str] | None = None, *, colors: dict | None = None, labels: dict | None = None
) -> None:
    """Mean over seeds of a probe key per checkpoint for each variant, min-max band over seeds shaded; a stopped
    run contributes until its last good checkpoint."""
    import warnings

    for i, variant in enumerate(variants or exp.variants):
        steps, values = exp.probe_curve(variant, key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)
        color = (colors or {}).get(variant, f"C{i % 10}")
        ax.plot(
            steps,
            mean,
            color=color,
            lw=1.3,
            marker=".",
            ms=3,
            label=f"{(labels or {}).get(variant, variant)} (n={values.shape[0]})",
        )
        ax.fill_between(steps, lo, hi, color=color, alpha=0.18, lw=0)
