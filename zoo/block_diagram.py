"""Block diagrams drawn from a config: block_layout (the decoder block as data: norms, attention and MLP boxes
around each residual addition, two branches for parallel layers), draw_block (one on a matplotlib axes) and
draw_blocks (presets side by side); and the names of a config's MLP and attention that the diagrams share with
zoo.analysis's architecture table. matplotlib is imported inside the drawing functions only.
"""

from __future__ import annotations

import numpy as np

from zoo.config import ModelConfig
from zoo.presets import get_config

_GLU = {"relu": "reglu", "gelu": "geglu", "gelu_tanh": "geglu", "silu": "swiglu"}


def activation(cfg: ModelConfig) -> str:
    """The MLP's name: swiglu / geglu / reglu for gated units, else the activation (relu, gelu_tanh, ...)."""
    first = cfg.mlp_activations[0]
    if cfg.mlp_activations == (first, "linear"):
        return _GLU.get(first, f"{first}-glu")
    return "*".join(cfg.mlp_activations)


def attention_kind(cfg: ModelConfig) -> str:
    """MHA, GQA or MQA: as many key/value heads as query heads, fewer, or one; MLA: keys and values from a latent."""
    if cfg.kv_latent_dim:
        return "MLA"
    kv = cfg.num_kv_heads
    return "MHA" if kv == cfg.num_heads else "MQA" if kv == 1 else "GQA"


# -------------------------------------------------------------------------------------------- block diagram
def _norm_label(cfg: ModelConfig) -> str:
    label = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}[cfg.norm_type]
    return label + (" (1 + w)" if cfg.norm_scale_plus_one else "") + (" + bias" if cfg.norm_use_bias else "")


def _attention_label(cfg: ModelConfig, cross: bool = False) -> str:
    kind = attention_kind(cfg)
    heads = f"{cfg.num_heads} heads" if kind in ("MHA", "MLA") else f"{cfg.num_heads} q / {cfg.num_kv_heads} kv heads"
    if kind == "MLA":
        heads = f"latent {cfg.kv_latent_dim} + RoPE key {cfg.rope_head_dim}, {heads}"
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
