"""What the notebooks share: the run scale, the architecture table computed from the presets, parameter
breakdowns and trees, block diagrams drawn from a config (zoo.block_diagram's draw_blocks, importable from here as
the notebooks do), and plotting defaults.

Everything here reads shapes only (jax.eval_shape), so it works for 540B presets on a laptop. matplotlib is
imported inside the functions that draw: `import zoo` never needs it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from zoo.block_diagram import activation, attention_kind, draw_blocks  # the notebooks call draw_blocks through here
from zoo.config import ModelConfig
from zoo.flops import flops_per_step
from zoo.model import abstract_params, count_params, is_buffer, logical_axes, path_names
from zoo.presets import get_config, list_families, preset_family, published

__all__ = [
    "CATEGORIES",
    "SCALES",
    "SEQ_LEN",
    "architecture_row",
    "category",
    "family_colors",
    "flops_per_token",
    "markdown_table",
    "param_breakdown",
    "param_tree",
    "published_count",
    "save_figure",
    "scale",
    "setup_plots",
    # re-exported from zoo.block_diagram for the notebooks
    "draw_blocks",
]

# ------------------------------------------------------------------------------------------------ scale
SCALES = ("ci", "laptop", "accelerator")


def scale() -> str:
    """How big a notebook's experiments are: $ZOO_NOTEBOOK_SCALE, one of SCALES (default laptop)."""
    value = os.environ.get("ZOO_NOTEBOOK_SCALE", "laptop")
    if value not in SCALES:
        raise ValueError(f"ZOO_NOTEBOOK_SCALE={value!r}: allowed values are {', '.join(SCALES)}")
    return value


# ------------------------------------------------------------------------------------ published counts
def published_count(name: str) -> float | None:
    """The size a preset's source prints (its `published.label`, e.g. "6.7B", "117M (paper) / 124M": the
    first figure) as a number; None for presets of our own size."""
    record = published(name)
    match = re.search(r"([\d.]+)\s*([MB])", record.label) if record is not None else None
    return float(match.group(1)) * {"M": 1e6, "B": 1e9}[match.group(2)] if match else None


# -------------------------------------------------------------------------------------- parameter trees
def _leaves(cfg: ModelConfig) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """(path names, shape) of every parameter, from shapes alone."""
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract_params(cfg)))[0]
    return [(path_names(path), tuple(leaf.shape)) for path, leaf in flat]


CATEGORIES = ("embeddings", "attention", "mlp", "norms", "other")


def category(names: tuple[str, ...]) -> str:
    """The CATEGORIES entry of a parameter path: norms (QK-norms included) first; embeddings are the token
    and position tables and the output head; other is what remains (T5's relative-bias tables)."""
    if any(name.endswith("norm") for name in names):
        return "norms"
    if names[0] in ("token_embed", "position_embed", "lm_head"):
        return "embeddings"
    if "attention" in names or "cross_attention" in names:
        return "attention"
    return "mlp" if "mlp" in names else "other"


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters per CATEGORIES entry; the values sum to count_params(cfg) (buffers left out, as it does)."""
    out = dict.fromkeys(CATEGORIES, 0)
    for names, shape in _leaves(cfg):
        if not is_buffer(names):
            out[category(names)] += int(np.prod(shape, dtype=np.int64))
    return out


def param_tree(cfg: ModelConfig) -> str:
    """An indented text tree of the parameters (a module and its tensor, e.g. query/kernel, on one line): shape,
    logical axes (zoo.logical_axes) and size per leaf."""
    axes = jax.tree_util.tree_leaves(logical_axes(cfg))
    lines: list[str] = []
    parent: tuple[str, ...] = ()
    for (names, shape), spec in zip(_leaves(cfg), axes, strict=True):
        group = names[:-2]
        shared = 0
        while shared < min(len(parent), len(group)) and parent[shared] == group[shared]:
            shared += 1
        lines += ["  " * depth + group[depth] + "/" for depth in range(shared, len(group))]
        leaf = "  " * len(group) + "/".join(names[-2:])
        lines.append(
            f"{leaf:<34} {str(list(shape)):<22} {', '.join(map(str, spec)):<34} "
            f"{int(np.prod(shape, dtype=np.int64)):>16,}"
        )
        parent = group
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- architecture table
SEQ_LEN = 2048  # tokens per sequence for FLOPs per token (the attention term grows with it)


def _tricks(cfg: ModelConfig) -> list[str]:
    """The stability tricks of the lecture's last section that a config switches on."""
    tricks = [f"z-loss {cfg.z_loss_multiplier:g}"] if cfg.z_loss_multiplier else []
    tricks += [f"qk-norm ({cfg.qk_norm})"] if cfg.qk_norm != "none" else []
    tricks += [f"attn soft-cap {cfg.attn_logits_soft_cap:g}"] if cfg.attn_logits_soft_cap else []
    return tricks + ([f"logit soft-cap {cfg.final_logits_soft_cap:g}"] if cfg.final_logits_soft_cap else [])


def flops_per_token(cfg: ModelConfig, seq_len: int = SEQ_LEN) -> float:
    """Training FLOPs (forward + backward) per token at seq_len; for encoder-decoder presets a token is one
    encoder plus one decoder token."""
    return flops_per_step(cfg, batch_size=1, seq_len=seq_len) / seq_len


def architecture_row(name: str) -> dict:
    """One preset's row of the lecture's "architecture variations" table, computed from its config."""
    cfg = get_config(name)
    params = count_params(cfg)
    published = published_count(name)
    flops = flops_per_token(cfg)
    window = f" (window {cfg.sliding_window_size})" if cfg.sliding_window_size else ""
    return {
        "preset": name,
        "family": preset_family(name),
        "norm": cfg.norm_type,
        "norm position": cfg.norm_position,
        "activation": activation(cfg),
        "GLU": cfg.is_gated,
        "positions": cfg.position_embedding,
        "parallel": cfg.parallel_layers,
        "attention": "/".join(cfg.attention_pattern) + window,
        "tied": cfg.tie_word_embeddings,
        "bias": cfg.attention_bias or cfg.mlp_bias or cfg.norm_use_bias,
        "tricks": ", ".join(_tricks(cfg)),
        "heads": cfg.num_heads,
        "KV heads": cfg.num_kv_heads,
        "kind": attention_kind(cfg),
        "head_dim": cfg.head_dim,
        "d_model": cfg.d_model,
        "layers": cfg.num_layers,
        "d_ff": cfg.d_ff,
        "d_ff/d_model": cfg.d_ff / cfg.d_model,
        "heads*head_dim/d_model": cfg.num_heads * cfg.head_dim / cfg.d_model,
        "d_model/layers": cfg.d_model / cfg.num_layers,
        "vocab": cfg.vocab_size,
        "params": params,
        "published": published,
        "params/published": params / published if published else None,
        "GFLOP/token": flops / 1e9,
        "FLOPs/6N": flops / (6 * params),
    }


def _cell(value) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and abs(value) >= 1e6:
        for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
            if abs(value) >= div:
                return f"{value / div:.3g}{unit}"
    if isinstance(value, int) or (isinstance(value, float) and abs(value) >= 1000):
        return f"{value:,.0f}"
    return f"{value:#.3g}".rstrip(".") if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of `columns` of `rows`: numbers >= 1e6 as 6.74B, other floats to 3 significant digits."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows])


# ---------------------------------------------------------------------------------------------- plotting
def setup_plots() -> None:
    """Plotting defaults shared by the notebooks."""
    import matplotlib as mpl

    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "figure.constrained_layout.use": True,
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.fontsize": 8,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


def family_colors() -> dict[str, tuple]:
    """One colour per preset family, the same in every plot."""
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10"]
    return {family: cmap(i % cmap.N) for i, family in enumerate(list_families())}


def save_figure(fig, name: str) -> Path | None:
    """Write figures/<name>.png (relative to the notebook) unless the scale is ci: the committed figures come
    from full-size runs, and a CI run leaves the checkout as it found it."""
    if scale() == "ci":
        return None
    path = Path("figures") / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path)
    return path
