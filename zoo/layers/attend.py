"""What attention computes from q, k and v, with no parameters: scaled (soft-capped, biased) scores, masks from
absolute positions, and softmax(scores) . v, through jax.nn.dot_product_attention (XLA or cuDNN) or an exact
fallback when soft-capping, attention dropout or attention sinks sit inside the softmax; causal attention on the
XLA path runs in query blocks that skip the masked upper triangle. zoo.layers.attention (projections, positions,
KV cache) calls it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.config import ModelConfig


def scores(q, k, scale, soft_cap=None, bias=None):
    """Pre-softmax float32 logits [B, KV, H/KV, T, S]: scale * q.k, soft-capped, plus bias [B, H, T, S]."""
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    logits = (
        jnp.einsum("btkgd,bskd->bkgts", q.reshape(b, t, kv, h // kv, d), k, preferred_element_type=jnp.float32) * scale
    )
    if soft_cap is not None:
        logits = soft_cap * jnp.tanh(logits / soft_cap)  # Gemma 2: bounded logits, smooth gradient
    if bias is not None:
        logits = logits + jnp.broadcast_to(bias, (bias.shape[0], h, t, s)).reshape(bias.shape[0], kv, h // kv, t, s)
    return logits


def masked_scores(q, k, scale, soft_cap, bias, mask, is_causal, window, fill, chunk=None):
    """scores() with `fill` where `mask` (and the aligned causal / window / chunk mask is_causal, window and chunk
    describe) hides a key."""
    logits = scores(q, k, scale, soft_cap, bias)
    if is_causal or window is not None or chunk is not None:
        t, s = q.shape[1], k.shape[1]
        aligned = position_mask(jnp.arange(t)[None], jnp.arange(s)[None], causal=is_causal, window=window, chunk=chunk)
        mask = aligned if mask is None else mask & aligned
    if mask is not None:
        logits = jnp.where(mask[:, :, None], logits, fill)
    return logits


def attend(
    q,
    k,
    v,
    *,
    scale,
    mask=None,
    bias=None,
    soft_cap=None,
    is_causal=False,
    window=None,
    impl="xla",
    dropout=None,
    sinks=None,
    chunk=None,
):
    """softmax(scale * q.k (+ soft-cap) + bias, masked) . v

    q: [B, T, H, hd]; k, v: [B, S, KV, hd] (v may be narrower) with KV dividing H; mask: bool broadcastable to
    [B, 1, T, S]; bias: float broadcastable to [B, H, T, S]; is_causal/window (left, right)/chunk describe a mask on
    aligned positions as well (lets the blocked path and cuDNN skip masked blocks). `dropout(p)` drops attention
    probabilities. `sinks` [H]: one more logit per head in each softmax, for a key whose value is zero.
    """
    blocks = causal_blocks(q.shape[1]) if impl == "xla" and is_causal and q.shape[1] == k.shape[1] else 1
    if blocks > 1:
        return _blocked(
            q,
            k,
            v,
            blocks,
            scale=scale,
            mask=mask,
            bias=bias,
            soft_cap=soft_cap,
            window=window,
            impl=impl,
            dropout=dropout,
            sinks=sinks,
            chunk=chunk,
        )
    if chunk is not None:  # the fused call has no chunks: a mask from the aligned positions, built at trace time
        t, s = q.shape[1], k.shape[1]
        chunks = position_mask(jnp.arange(t)[None], jnp.arange(s)[None], causal=is_causal, chunk=chunk)
        mask = chunks if mask is None else mask & chunks
    if soft_cap is None and dropout is None and sinks is None:
        # The fused call takes one head width for q, k and v: narrower values (latent attention's) are zero-padded
        # to it, and the padding's zero outputs dropped; wider values pad q and k instead (zeros add nothing to q.k).
        width = v.shape[-1]
        if width < q.shape[-1]:
            v = jnp.pad(v, [(0, 0)] * 3 + [(0, q.shape[-1] - width)])
        elif width > q.shape[-1]:
            q, k = (jnp.pad(x, [(0, 0)] * 3 + [(0, width - x.shape[-1])]) for x in (q, k))
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            bias=bias,
            mask=mask,
            scale=scale,
            is_causal=is_causal,
            local_window_size=window,
            implementation=impl,
        )[..., :width]
    # Exact fallback: soft-capping, attention dropout or sinks sit inside the softmax, which the fused call hides.
    b, t, h, _ = q.shape
    logits = masked_scores(q, k, scale, soft_cap, bias, mask, is_causal, window, jnp.finfo(jnp.float32).min)
    if sinks is None:
        probs = jax.nn.softmax(logits, axis=-1)
    else:
        kv = k.shape[2]
        sink = jnp.broadcast_to(sinks.astype(jnp.float32).reshape(1, kv, h // kv, 1, 1), (*logits.shape[:-1], 1))
        probs = jax.nn.softmax(jnp.concatenate([logits, sink], axis=-1), axis=-1)[..., :-1]
    if dropout is not None:
        probs = dropout(probs)
    out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v)
    return out.reshape(b, t, h, v.shape[-1])


def causal_blocks(length: int) -> int:
    """Query blocks for causal attention on the XLA path: blocks of max(128, T/4) queries, so T >= 256 splits in
    2-4. Block i reads only the keys up to its last query (and back to its window), skipping the masked upper
    triangle: measured on 2 CPU cores, forward + backward of [4, 512] 1.6x and [1, 2048] 2.8x faster than one
    causal call over all T x T scores (benchmarks/RESULTS.md)."""
    return length // max(128, length // 4)


def _blocked(q, k, v, blocks, *, scale, mask, bias, soft_cap, window, impl, dropout, sinks, chunk):
    """Causal attention as `blocks` query blocks, each over the keys it can see: exactly attend()'s result."""
    t = q.shape[1]
    size = t // blocks
    outs = []
    for i in range(blocks):
        start, end = i * size, t if i == blocks - 1 else (i + 1) * size
        lo = 0 if window is None else max(0, start - window[0])
        lo = lo if chunk is None else max(lo, start // chunk * chunk)  # no query of the block sees an earlier chunk
        q_pos, k_pos = jnp.arange(start, end)[None], jnp.arange(lo, end)[None]
        block_mask = position_mask(q_pos, k_pos, causal=True, window=window, chunk=chunk)
        if mask is not None:
            block_mask = block_mask & mask[:, :, start:end, lo:end]
        outs.append(
            attend(
                q[:, start:end],
                k[:, lo:end],
                v[:, lo:end],
                scale=scale,
                mask=block_mask,
                bias=None if bias is None else bias[:, :, start:end, lo:end],
                soft_cap=soft_cap,
                impl=impl,
                dropout=dropout,
                sinks=sinks,
            )
        )
    return jnp.concatenate(outs, axis=1)


def position_mask(q_pos, k_pos, *, causal: bool, window=None, chunk=None):
    """Boolean [B, 1, T, S] mask from absolute positions q_pos [B, T], k_pos [B, S]; -1 marks an empty
    cache slot or a padding token. window (left, right) bounds q - k and k - q; chunk keeps the keys whose position
    // chunk is the query's (Llama 4's chunked attention: transformers masking_utils.chunked_overlay)."""
    q_pos, k_pos = q_pos[:, :, None], k_pos[:, None, :]
    keep = k_pos >= 0
    if causal:
        keep = keep & (k_pos <= q_pos)
    if window is not None:
        delta = q_pos - k_pos
        keep = keep & (delta <= window[0]) & (-delta <= window[1])
    if chunk is not None:
        keep = keep & (q_pos // chunk == k_pos // chunk)
    return keep[:, None]


FLASH_ABOVE = 512
"""auto runs flash attention for more queries than this: measured on 2 CPU cores (forward + backward, causal, 8 heads
of 64; 2026-12-07, not yet a section of benchmarks/RESULTS.md), flash is 1.2x the exact path's speed at 2048 and
2.0x at 4096, within noise at 128 and 512, where it costs more to compile."""


def resolve_impl(cfg: ModelConfig, length: int) -> str:
    """For `length` queries: cuDNN's flash attention on a GPU in 16-bit with no soft-cap; else zoo's flash attention
    past FLASH_ABOVE queries (it hands dropout and Transformer-XL's bias to the exact path), the exact path below."""
    if cfg.attention_impl != "auto":
        return cfg.attention_impl
    if jax.default_backend() == "gpu" and cfg.dtype != "float32" and cfg.attn_logits_soft_cap is None:
        return "cudnn"
    return "flash" if length > FLASH_ABOVE else "xla"


def dense_mask(q_pos, k_pos, aligned, causal, window, chunk, segments):
    """The exact path's boolean mask [B, 1, T, S] from positions (None when aligned: attend's is_causal, window and
    chunk then describe it from the token order) and segment ids [B, T] (keys of another segment hidden)."""
    mask = None if aligned else position_mask(q_pos, k_pos, causal=causal, window=window, chunk=chunk)
    if segments is not None:
        same = (segments[:, :, None] == segments[:, None, :])[:, None]
        mask = same if mask is None else mask & same
    return mask
