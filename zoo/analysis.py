"""What the notebooks share: the run scale, the architecture table computed from the presets, parameter
breakdowns and trees, block diagrams drawn from a config, and plotting defaults.

Everything here reads shapes only (jax.eval_shape), so it works for 540B presets on a laptop. matplotlib is
imported inside the drawing functions: `import zoo` never needs it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from zoo.config import ModelConfig
from zoo.flops import flops_per_step
from zoo.model import abstract_params, count_params, logical_axes, path_names
from zoo.presets import get_config, list_families, preset_family, published

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
    """Parameters per CATEGORIES entry; the values sum to count_params(cfg)."""
    out = dict.fromkeys(CATEGORIES, 0)
    for names, shape in _leaves(cfg):
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
_GLU = {"relu": "reglu", "gelu": "geglu", "gelu_tanh": "geglu", "silu": "swiglu"}


def activation(cfg: ModelConfig) -> str:
    """The MLP's name: swiglu / geglu / reglu for gated units, else the activation (relu, gelu_tanh, ...)."""
    first = cfg.mlp_activations[0]
    if cfg.mlp_activations == (first, "linear"):
        return _GLU.get(first, f"{first}-glu")
    return "*".join(cfg.mlp_activations)


def _attention_kind(cfg: ModelConfig) -> str:
    kv = cfg.num_kv_heads
    return "MHA" if kv == cfg.num_heads else "MQA" if kv == 1 else "GQA"


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
        "kind": _attention_kind(cfg),
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


# -------------------------------------------------------------------------------------------- block diagram
def _norm_label(cfg: ModelConfig) -> str:
    label = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}[cfg.norm_type]
    return label + (" (1 + w)" if cfg.norm_scale_plus_one else "") + (" + bias" if cfg.norm_use_bias else "")


def _attention_label(cfg: ModelConfig, cross: bool = False) -> str:
    kind = _attention_kind(cfg)
    heads = f"{cfg.num_heads} heads" if kind == "MHA" else f"{cfg.num_heads} q / {cfg.num_kv_heads} kv heads"
    lines = ["Cross-attention" if cross else "Causal self-attention", f"{kind}: {heads} x {cfg.head_dim}"]
    if not cross:
        positions = {
            "rope": f"RoPE (theta {cfg.rope_theta:g})",
            "alibi": "ALiBi",
            "none": "NoPE",
            "relative_bias": "relative position bias",
            "transformer_xl": "Transformer-XL relative",
        }
        lines += [positions[cfg.position_embedding]] if cfg.position_embedding in positions else []
        lines += (
            [f"{'/'.join(cfg.attention_pattern)}, window {cfg.sliding_window_size}"] if cfg.sliding_window_size else []
        )
        lines += [f"QK-norm ({cfg.qk_norm})"] if cfg.qk_norm != "none" else []
        lines += [f"soft-cap {cfg.attn_logits_soft_cap:g}"] if cfg.attn_logits_soft_cap else []
    return "\n".join(lines + (["+ bias"] if cfg.attention_bias else []))


def _mlp_label(cfg: ModelConfig) -> str:
    lines = [f"MLP: {activation(cfg)}", f"d_ff {cfg.d_ff} = {cfg.d_ff / cfg.d_model:.2f} x d_model"]
    return "\n".join(lines + (["+ bias"] if cfg.mlp_bias else []))


def block_layout(cfg: ModelConfig) -> list[dict]:
    """The (decoder) block as data: one dict per residual addition, with `shared` boxes before the branches
    split, one box list per `branch` (two for parallel layers) and the boxes `after` the addition. A box is
    (kind, label), kind one of norm, attention, mlp."""
    norm = ("norm", _norm_label(cfg))
    attn, mlp = ("attention", _attention_label(cfg)), ("mlp", _mlp_label(cfg))
    if cfg.parallel_layers:  # norm_position is pre or double
        post = [norm] if cfg.norm_position == "double" else []
        if cfg.parallel_shared_norm:
            return [{"shared": [norm], "branches": [[attn] + post, [mlp] + post], "after": []}]
        return [{"shared": [], "branches": [[norm, attn] + post, [norm, mlp] + post], "after": []}]
    cores = [attn] + ([("attention", _attention_label(cfg, cross=True))] if cfg.is_encoder_decoder else []) + [mlp]
    wrap = {
        "pre": lambda f: [norm, f],
        "post": lambda f: [f],
        "double": lambda f: [norm, f, norm],
        "output": lambda f: [f, norm],
    }[cfg.norm_position]
    after = [norm] if cfg.norm_position == "post" else []
    return [{"shared": [], "branches": [wrap(core)], "after": after} for core in cores]


def _io_boxes(cfg: ModelConfig) -> tuple[tuple[str, str], list[tuple[str, str]]]:
    """The embedding box below the stack and the boxes above it (final norm, output head)."""
    embed = "Token embedding" + (" x sqrt(d_model)" if cfg.scale_embeddings else "")
    if cfg.position_embedding in ("learned", "sinusoidal"):
        embed += f"\n+ {cfg.position_embedding} positions"
    head = [f"LM head ({'tied' if cfg.tie_word_embeddings else 'untied'}), vocab {cfg.vocab_size:,}"]
    head += ["x d_model^-1/2"] if cfg.scale_logits_by_inv_sqrt_d_model else []
    head += [f"soft-cap {cfg.final_logits_soft_cap:g}"] if cfg.final_logits_soft_cap else []
    head += [f"z-loss {cfg.z_loss_multiplier:g}"] if cfg.z_loss_multiplier else []
    return ("io", embed), ([("norm", _norm_label(cfg))] if cfg.final_norm else []) + [("io", "\n".join(head))]


_COLORS = {"norm": "#f7e08a", "attention": "#9fcbe8", "mlp": "#a9dba0", "io": "#dddddd"}


def draw_block(cfg: ModelConfig, ax, title: str = "") -> float:
    """Draw the block diagram of `cfg` on `ax`, bottom (embedding) to top (logits); returns the top y."""
    from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

    width, gap, radius = 2.8, 0.3, 0.17

    def arrow(start, end):
        ax.annotate("", end, start, arrowprops=dict(arrowstyle="-|>", color="0.35", lw=0.9, shrinkA=0, shrinkB=0))

    def column(start, x, boxes):
        """Boxes stacked at x, the first fed from point `start`; returns the top centre of the last."""
        for kind, label in boxes:
            y, height = start[1] + gap, 0.42 + 0.2 * label.count("\n")
            arrow(start, (x, y))
            ax.add_patch(
                FancyBboxPatch(
                    (x - width / 2, y),
                    width,
                    height,
                    boxstyle="round,pad=0,rounding_size=0.08",
                    fc=_COLORS[kind],
                    ec="0.35",
                    lw=0.8,
                )
            )
            ax.text(x, y + height / 2, label, ha="center", va="center", fontsize=6.3, linespacing=1.1)
            start = (x, y + height)
        return start

    embed, top_boxes = _io_boxes(cfg)
    ax.text(0, -gap, "tokens", ha="center", va="top", fontsize=7)
    point = column((0, -gap), 0, [embed])
    stack_bottom = point[1] + gap / 2
    for sub in block_layout(cfg):
        split_y = point[1] + gap / 2  # where the residual stream leaves the column
        point = column(point, 0, sub["shared"])
        two = len(sub["branches"]) == 2
        xs = (-0.55 * width, 0.55 * width) if two else (0,)
        tops = [column(point, x, boxes) for x, boxes in zip(xs, sub["branches"], strict=True)]
        add_y = max(y for _, y in tops) + gap + radius
        for top in tops:
            arrow(top, (0, add_y - radius))
        lane = -(1.05 * width if two else 0.5 * width) - 0.35
        ax.plot([0, lane, lane], [split_y, split_y, add_y], color="0.35", lw=0.9)
        arrow((lane, add_y), (-radius, add_y))
        ax.add_patch(Circle((0, add_y), radius, fc="white", ec="0.35", lw=0.9))
        ax.text(0, add_y, "+", ha="center", va="center", fontsize=9)
        point = column((0, add_y + radius), 0, sub["after"])
    stack_top = point[1] + gap / 2
    layers = cfg.num_decoder_layers if cfg.is_encoder_decoder else cfg.num_layers
    ax.add_patch(
        Rectangle(
            (-1.25 * width, stack_bottom), 2.5 * width, stack_top - stack_bottom, fill=False, ls="--", ec="0.5", lw=0.8
        )
    )
    ax.text(1.27 * width, (stack_bottom + stack_top) / 2, f"x {layers}\nlayers", va="center", fontsize=8)
    point = column(point, 0, top_boxes)
    arrow(point, (0, point[1] + gap))
    ax.text(0, point[1] + gap, "logits", ha="center", va="bottom", fontsize=7)
    ax.set_title(title or _summary(cfg), fontsize=9)
    ax.set_xlim(-1.35 * width, 1.6 * width)
    ax.set_aspect("equal")
    ax.axis("off")
    return point[1] + 2 * gap


def _summary(cfg: ModelConfig) -> str:
    serial = "parallel" if cfg.parallel_layers else "serial"
    return f"{cfg.norm_position}-{cfg.norm_type}, {activation(cfg)}, {cfg.position_embedding}, {serial}"


def draw_blocks(names: list[str]):
    """Block diagrams of presets side by side, drawn from their configs; returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 7.5))
    axes = np.atleast_1d(axes)
    configs = [get_config(name) for name in names]
    tops = [draw_block(cfg, ax, f"{name}\n{_summary(cfg)}") for name, cfg, ax in zip(names, configs, axes, strict=True)]
    for ax in axes:
        ax.set_ylim(-0.7, max(tops))
    if any(cfg.is_encoder_decoder for cfg in configs):
        fig.supxlabel(
            "encoder-decoder presets: the decoder block is drawn (the encoder's lacks cross-attention)", fontsize=8
        )
    return fig
