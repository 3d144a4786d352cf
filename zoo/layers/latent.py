"""Multi-head latent attention's projections (MLA; DeepSeek-V2, DeepSeek-AI 2024, §2.1), called from
zoo.layers.attention.Attention when kv_latent_dim > 0.

Each token's keys and values come from one latent c = norm(x W_dkv) of kv_latent_dim dims: per head,
k_nope = c W_uk and v = c W_uv. The positions travel in rope_head_dim more dims per head: the query's own, and one
RoPE key per token that every head shares (a RoPE'd key cannot come from the latent: the rotation would stand
between W_uk and the query when decoding). The KV cache holds c and that key, kv_latent_dim + rope_head_dim
numbers per token and layer, whatever the heads.

Training and a forward without a cache expand the latent to full keys and values. Decoding never does: since
q_nope . (c W_uk) = (q_nope W_uk^T) . c, the queries move into the latent space ("absorbed"), and every head
attends over the cache itself as one shared key [c, k_rope] and value c; the per-head values come after the
softmax, out = (probs . c) W_uv. Both orders compute the same logits and outputs (tests/test_latent_attention.py).
"""

from __future__ import annotations

import jax.numpy as jnp

from zoo.config import ModelConfig
from zoo.layers.dense import Kernel, dense
from zoo.layers.norms import Norm


def queries(cfg: ModelConfig, x):
    """[B, T, d_model] -> [B, T, heads, head_dim], the last rope_head_dim dims of each head to be rotated.
    Through the normed q_latent_dim bottleneck when there is one (biased with attention_bias, as DeepSeek's
    q_a_proj), else one bias-free projection."""
    up = ("heads", "head_dim")
    if not cfg.q_latent_dim:
        return dense(
            cfg, features=(cfg.num_heads, cfg.head_dim), axes=("embed", *up), role="q", use_bias=False, name="query"
        )(x)
    down = dense(
        cfg,
        features=cfg.q_latent_dim,
        axes=("embed", "latent"),
        role="q",
        use_bias=cfg.attention_bias,
        name="query_down",
    )(x)
    down = Norm(cfg, axes=("latent",), name="query_norm")(down)
    return dense(
        cfg, features=(cfg.num_heads, cfg.head_dim), axes=("latent", *up), role="q", use_bias=False, name="query_up"
    )(down)


def latent_keys(cfg: ModelConfig, x):
    """[B, T, d_model] -> the normed latent [B, T, 1, kv_latent_dim] and the shared key [B, T, 1, rope_head_dim]
    before its rotation: one projection, as DeepSeek's kv_a_proj_with_mqa, with one "head" so that the KV cache
    stores them as it stores a single key/value head."""
    both = dense(
        cfg,
        features=cfg.kv_latent_dim + cfg.rope_head_dim,
        axes=("embed", "latent"),
        role="k",
        use_bias=cfg.attention_bias,
        name="kv_down",
    )(x)
    latent, rope_key = jnp.split(both[:, :, None], [cfg.kv_latent_dim], axis=-1)
    return Norm(cfg, axes=("latent",), name="kv_norm")(latent), rope_key


def up_kernel(cfg: ModelConfig):
    """W_uk and W_uv side by side, [kv_latent_dim, heads, head_dim - rope_head_dim + value_head_dim]."""
    nope = cfg.head_dim - cfg.rope_head_dim
    shape = (cfg.kv_latent_dim, cfg.num_heads, nope + cfg.value_head_dim)
    return Kernel(cfg, shape, ("latent", "heads", "head_dim"), "k", name="kv_up")()


def expand(cfg: ModelConfig, kernel, latent, rope_key):
    """Full keys [B, S, heads, head_dim] ([no-RoPE part, shared RoPE key]) and values [B, S, heads, value_head_dim]
    from the latent [B, S, 1, r] and the rotated shared key [B, S, 1, rope_head_dim]."""
    nope = cfg.head_dim - cfg.rope_head_dim
    kv = jnp.einsum("bsr,rhd->bshd", latent[:, :, 0], kernel)
    k_nope, v = kv[..., :nope], kv[..., nope:]
    rope_key = jnp.broadcast_to(rope_key, (*k_nope.shape[:-1], cfg.rope_head_dim))
    return jnp.concatenate([k_nope, rope_key.astype(k_nope.dtype)], axis=-1), v


def absorb(cfg: ModelConfig, kernel, q, latent, rope_key):
    """Decoding's operands: queries [B, T, heads, r + rope] (q_nope W_uk^T, then the rotated part), one key head
    [B, S, 1, r + rope] (the latent, then the shared key) and one value head, the latent [B, S, 1, r]."""
    nope = cfg.head_dim - cfg.rope_head_dim
    q_latent = jnp.einsum("bthd,rhd->bthr", q[..., :nope], kernel[..., :nope])
    q = jnp.concatenate([q_latent, q[..., nope:].astype(q_latent.dtype)], axis=-1)
    return q, jnp.concatenate([latent, rope_key.astype(latent.dtype)], axis=-1), latent


def values_from_latent(cfg: ModelConfig, kernel, out):
    """Absorbed attention's output [B, T, heads, r] (probabilities . latent) -> [B, T, heads, value_head_dim]."""
    nope = cfg.head_dim - cfg.rope_head_dim
    return jnp.einsum("bthr,rhd->bthd", out, kernel[..., nope:])
