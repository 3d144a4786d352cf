"""Position information: sinusoidal and learned tables, RoPE, T5 relative bias, ALiBi, Transformer-XL terms.

Everything but the parameters (the T5 table; Transformer-XL's W_r, u, v) is a function of integer
positions, so the same code serves training (positions 0..T-1, or restarting at each packed document),
decoding (a KV cache at offset `index`, left-padded rows) and ring-buffer caches (slots hold older positions).
Positions carry a batch axis, [B, T] (or [1, T], shared by every row).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.layers.init import dtype_of, initializer


def sinusoidal_table(positions, d_model: int):
    """Vaswani 2017 §3.5: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same). positions [...] ->
    [..., d]."""
    i = jnp.arange(d_model // 2, dtype=jnp.float32)
    angles = positions[..., None].astype(jnp.float32) / jnp.power(10000.0, 2.0 * i / d_model)
    # Interleave sin (even dims) and cos (odd dims) as the paper writes it.
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(positions.shape + (d_model,))


# ------------------------------------------------------------------------------------------------- RoPE
def rope_frequencies(cfg: ModelConfig, theta: float, scaled: bool = True) -> np.ndarray:
    """Inverse frequencies of the rotated pairs (Su 2021), with optional context-extension scaling (none when
    not `scaled`: the local layers under rope_scaling_local false)."""
    rotary_dim = cfg.rotary_dim
    inv_freq = 1.0 / theta ** (np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)
    scaling = cfg.rope_scaling if scaled else "none"
    if scaling == "linear":
        # Position interpolation (Chen 2023): positions / factor.
        inv_freq = inv_freq / cfg.rope_scaling_factor
    elif scaling == "llama3":
        # Llama 3.1: long wavelengths are stretched by `factor`, short ones kept, a smooth blend between.
        factor, old = cfg.rope_scaling_factor, cfg.rope_original_max_len
        low_wavelen = old / cfg.rope_low_freq_factor
        high_wavelen = old / cfg.rope_high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        # Equal factors (Llama 4 Scout: 1 and 1) leave no band to blend across: the two cases above cover every dim.
        span = max(cfg.rope_high_freq_factor - cfg.rope_low_freq_factor, 1e-12)
        smooth = (old / wavelen - cfg.rope_low_freq_factor) / span
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = np.where(
            wavelen > low_wavelen, inv_freq / factor, np.where(wavelen < high_wavelen, inv_freq, blended)
        )
    elif scaling == "yarn":
        inv_freq = _yarn_frequencies(cfg, inv_freq, theta, rotary_dim)
    return inv_freq.astype(np.float32)


def _yarn_frequencies(cfg: ModelConfig, inv_freq: np.ndarray, theta: float, rotary_dim: int) -> np.ndarray:
    """YaRN's "NTK-by-parts" frequencies (Peng 2023 §3.2): dimension pairs that turn more than beta_fast times over
    the original context keep their frequency, those turning fewer than beta_slow times are interpolated (divided
    by the factor), a linear ramp in between; as huggingface/transformers src/transformers/modeling_rope_utils.py
    _compute_yarn_parameters computes them (the ramp's ends rounded outward unless rope_yarn_truncate is false)."""

    def dim_of(rotations: float) -> float:  # the (fractional) dimension index turning `rotations` times
        return rotary_dim * math.log(cfg.rope_original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_of(cfg.rope_yarn_beta_fast), dim_of(cfg.rope_yarn_beta_slow)
    if cfg.rope_yarn_truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    high = high + 0.001 if low == high else high  # transformers' guard against a zero-width ramp
    ramp = np.clip((np.arange(rotary_dim // 2, dtype=np.float32) - low) / (high - low), 0.0, 1.0)
    keep = 1.0 - ramp  # 1: extrapolate (the original frequency), 0: interpolate
    return inv_freq / cfg.rope_scaling_factor * (1.0 - keep) + inv_freq * keep


def rope_attention_factor(cfg: ModelConfig, scaled: bool = True) -> float:
    """What YaRN multiplies cos and sin by (1 without yarn scaling): rope_attention_factor, by default
    0.1 ln(factor) + 1 (Peng 2023 §3.4; transformers' yarn_get_mscale)."""
    if not scaled or cfg.rope_scaling != "yarn":
        return 1.0
    if cfg.rope_attention_factor is not None:
        return cfg.rope_attention_factor
    return 0.1 * math.log(cfg.rope_scaling_factor) + 1.0 if cfg.rope_scaling_factor > 1 else 1.0


def apply_rope(x, positions, inv_freq, interleaved: bool = False, scale: float = 1.0):
    """Rotates the first 2*len(inv_freq) dims of each head by position-dependent angles (and multiplies them by
    `scale`: YaRN's attention factor).

    x: [B, T, heads, head_dim]; positions: [B or 1, T] int. Pairs are (i, i + rotary_dim/2) ("rotate half"
    layout, as in HF transformers and GPT-NeoX), or (2i, 2i+1) when `interleaved` (GPT-J, Cohere); the
    remaining dims pass through (partial rotary).
    """
    rotary_dim = 2 * inv_freq.shape[0]
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, rot/2]
    cos = jnp.cos(angles)[:, :, None, :] * scale
    sin = jnp.sin(angles)[:, :, None, :] * scale
    rot, rest = x[..., :rotary_dim].astype(jnp.float32), x[..., rotary_dim:]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rotated = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(rot.shape).astype(x.dtype)
    else:
        x1, x2 = jnp.split(rot, 2, axis=-1)
        rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
    return jnp.concatenate([rotated, rest], axis=-1) if rest.shape[-1] else rotated


# ------------------------------------------------------------------------------------- T5 relative bias
def relative_bucket(relative_position, bidirectional: bool, *, num_buckets: int, max_distance: int):
    """T5's bucketing of (key - query) distances (Raffel 2020 §2.1; mesh_tensorflow's
    `_relative_position_bucket`): half the buckets are exact small distances, the rest log-spaced up
    to max_distance; bidirectional attention spends half the buckets on each direction."""
    n = num_buckets
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        n //= 2
        bucket = bucket + (relative_position > 0).astype(relative_position.dtype) * n
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = n // 2
    is_small = distance < max_exact
    # float32 log as in the reference implementations, so bucket edges agree exactly.
    scaled = (
        jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
        / math.log(max_distance / max_exact)
        * (n - max_exact)
    )
    large = jnp.minimum(max_exact + scaled.astype(relative_position.dtype), n - 1)
    return bucket + jnp.where(is_small, distance, large)


def relative_table(module: nn.Module, cfg: ModelConfig):
    """The T5 bias table [num_buckets, heads], a parameter of `module`."""
    return module.param(
        "relative_bias",
        nn.with_logical_partitioning(initializer(cfg, "relative"), ("relpos_buckets", "heads")),
        (cfg.relative_num_buckets, cfg.num_heads),
        dtype_of(cfg.param_dtype),
    )


def relative_bias(cfg: ModelConfig, table, q_pos, k_pos, *, bidirectional: bool):
    """Bias [B, heads, T, S] added to attention scores; table: [num_buckets, heads]; q_pos [B, T], k_pos [B, S]."""
    buckets = relative_bucket(
        k_pos[:, None, :] - q_pos[:, :, None],
        bidirectional,
        num_buckets=cfg.relative_num_buckets,
        max_distance=cfg.relative_max_distance,
    )
    return jnp.transpose(table[buckets], (0, 3, 1, 2)).astype(jnp.float32)


# ------------------------------------------------------------------------------------------------ ALiBi
def alibi_slopes(num_heads: int) -> np.ndarray:
    """Per-head slopes of Press 2022: a geometric sequence starting at 2^(-8/n); for head counts that are
    not a power of two, the closest power's slopes plus every other slope of the next power."""

    def powers(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = powers(closest)
    if closest < num_heads:
        slopes += powers(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(slopes, dtype=np.float32)


def alibi_bias(num_heads: int, q_pos, k_pos):
    """Bias [B, heads, T, S] = -slope * |q - k| (a linear penalty on distance); q_pos [B, T], k_pos [B, S]."""
    distance = jnp.abs(q_pos[:, :, None] - k_pos[:, None, :]).astype(jnp.float32)
    return -jnp.asarray(alibi_slopes(num_heads))[None, :, None, None] * distance[:, None]


# ------------------------------------------------------------------------------------- Transformer-XL
def relative_sinusoids(cfg: ModelConfig, causal: bool):
    """R_{i-j} of Dai 2019 §3.3 for every distance a query can have to a key: the sinusoidal table of the
    distances lo..max_seq_len-1 (lo = 0 under causal masking, where later keys are masked anyway; else
    -(max_seq_len-1)). Returns (lo, [N, d_model]). Dai's code concatenates sin and cos where this table
    interleaves them: a fixed permutation of W_r's input rows, so the same family of functions."""
    lo = 0 if causal else 1 - cfg.max_seq_len
    return lo, sinusoidal_table(jnp.arange(lo, cfg.max_seq_len), cfg.d_model)


def transformer_xl_bias(q, k, r, u, v, q_pos, k_pos, lo: int):
    """Terms (b), (c), (d) of Dai 2019 §3.3, added to the content term (a) q.k:
    u.k_j + (q_i + v).r_{i-j}, unscaled, float32 [B, H, T, S].

    q: [B, T, H, hd]; k: [B, S, H, hd] (groups already repeated); r: W_r R for distances lo.. [N, H, hd];
    u, v: [H, hd]; q_pos [B, T], k_pos [B, S] absolute positions (cache slots included), so the distance is
    always i - j, clipped into the table (clipped entries are masked: later keys, empty cache slots)."""
    f32 = jnp.float32
    content = jnp.einsum("hd,bshd->bhs", u.astype(f32), k.astype(f32))[:, :, None, :]
    per_distance = jnp.einsum("bthd,nhd->bhtn", (q.astype(f32) + v.astype(f32)), r.astype(f32))
    index = jnp.clip(q_pos[:, :, None] - k_pos[:, None, :] - lo, 0, r.shape[0] - 1)  # [B, T, S] rows of r
    index = jnp.broadcast_to(index[:, None], per_distance.shape[:3] + index.shape[-1:])
    return content + jnp.take_along_axis(per_distance, index, axis=-1)
