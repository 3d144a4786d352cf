"""Memory-efficient attention with its own backward pass, in plain JAX (any backend): queries in blocks, each
block's keys in blocks, an online softmax over them (Rabe & Staats 2021, "Self-attention does not need O(n^2)
memory"; Dao 2023, FlashAttention-2, Algorithms 1 and 2). The forward keeps only the output and each query's
log-sum-exp; the backward recomputes every block's probabilities from them instead of saving T x S of them,
so activation memory grows linearly with the sequence. Blocks that the causal, window or chunk mask hides
entirely are never visited.

Masks come from positions, never from a T x S array: a key at position -1 is hidden (padding, an empty cache
slot); causal / window / chunk compare query and key positions, or, when `aligned`, the tokens' order (keys
are the queries' own tokens: training and prefill), which lets the block ranges follow from the block index.
Biases that positions determine (T5's relative buckets, ALiBi) are computed per block by `bias_fn(params,
q_pos, k_pos)`, and their parameters get gradients. zoo.layers.attention calls it; zoo.layers.attend holds the
exact path, which also serves attention dropout and biases that depend on the queries (Transformer-XL).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.layers.attend import position_mask


def block_size(length: int) -> int:
    """Queries (and keys) per block: max(128, min(512, T / 4)). Measured on 2 CPU cores (2026-12-07, forward + backward
    of causal attention with 8 heads of 64; not yet a section of benchmarks/RESULTS.md): 128 is fastest at T = 512,
    512 at 2048 and 4096."""
    return max(128, min(512, length // 4))


def flash_attention(
    q,
    k,
    v,
    *,
    scale,
    q_pos,
    k_pos,
    causal=False,
    window=None,
    chunk=None,
    aligned=False,
    q_segments=None,
    k_segments=None,
    soft_cap=None,
    sinks=None,
    bias_fn=None,
    bias_params=None,
    block=512,
):
    """softmax(scale * q.k (soft-capped) + bias, masked) . v, equal to zoo.layers.attend.attend's.

    q: [B, T, H, hd]; k: [B, S, KV, hd]; v: [B, S, KV, hd_v] with KV dividing H. q_pos [B or 1, T], k_pos
    [B or 1, S]: int positions (a key at -1 is hidden); they place the bias, and the mask unless `aligned`.
    window: (left, right); chunk: keys in the query's chunk only; q_segments / k_segments [B, T] / [B, S]: keys of
    another segment hidden. sinks [H]: one more logit per head whose value is zero. bias_fn(bias_params,
    q_pos, k_pos) -> float [B or 1, H, T', S'] for any blocks of positions. A query that sees no key returns zeros.
    """
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    bq, bk = min(block, t), min(block, s)
    nq, nk = -(-t // bq), -(-s // bk)
    if aligned and t != s:
        raise ValueError(f"aligned attention needs keys of the queries' own tokens; got {t} queries and {s} keys")

    def pad(x, n, value=0):
        return jnp.pad(x, [(0, 0), (0, n - x.shape[1])] + [(0, 0)] * (x.ndim - 2), constant_values=value)

    def blocks(x, n, size):
        """[B, n * size, ...] -> [n, B, size, ...]"""
        return jnp.moveaxis(x.reshape(x.shape[0], n, size, *x.shape[2:]), 1, 0)

    qp = blocks(pad(jnp.broadcast_to(q_pos, (b, t)).astype(jnp.int32), nq * bq), nq, bq)
    kp = blocks(pad(jnp.broadcast_to(k_pos, (b, s)).astype(jnp.int32), nk * bk, -1), nk, bk)
    qs = ks = None
    if q_segments is not None:
        qs = blocks(pad(q_segments.astype(jnp.int32), nq * bq), nq, bq)
        ks = blocks(pad(k_segments.astype(jnp.int32), nk * bk), nk, bk)
    group = h // kv

    def key_range(i):
        if not aligned:
            return 0, nk
        return key_block_range(i, length=t, q_block=bq, k_block=bk, causal=causal, window=window, chunk=chunk)

    def visible(i, j, qpos, kpos, qseg, kseg):
        """[B, 1, 1, bq, bk]: which keys of block j each query of block i sees."""
        if aligned:  # the tokens' order; keys past the end are padding
            qpos = (i * bq + jnp.arange(bq))[None]
            index = j * bk + jnp.arange(bk)
            kpos = jnp.where(index < s, index, -1)[None]
        keep = position_mask(qpos, kpos, causal=causal, window=window, chunk=chunk)
        if qseg is not None:
            keep &= (qseg[:, :, None] == kseg[:, None, :])[:, None]
        return keep[:, :, None]

    def logits(params, qb, kb, qpos, kpos):
        """Float32 [B, KV, G, bq, bk] and the soft-capped scores before the bias (for the cap's derivative)."""
        raw = jnp.einsum("bkgqd,bksd->bkgqs", qb, kb, preferred_element_type=jnp.float32) * scale
        capped = raw if soft_cap is None else soft_cap * jnp.tanh(raw / soft_cap)
        if bias_fn is None:
            return capped, capped
        return capped + bias_block(params, qpos, kpos), capped

    def bias_block(params, qpos, kpos):
        bias = bias_fn(params, qpos, kpos).astype(jnp.float32)
        return jnp.broadcast_to(bias, (b, h, *bias.shape[2:])).reshape(b, kv, group, *bias.shape[2:])

    def sink_logits(sinks):
        return jnp.broadcast_to(sinks.astype(jnp.float32).reshape(1, kv, group, 1), (b, kv, group, bq))

    # Blocks heads-major ([n, B, KV, (G,) block, width], the layout the batched matmuls read), transposed once.
    def query_blocks(x):
        x = pad(x, nq * bq).reshape(b, nq, bq, kv, group, x.shape[-1])
        return x.transpose(1, 0, 3, 4, 2, 5)

    def key_blocks(x):
        return pad(x, nk * bk).reshape(b, nk, bk, kv, x.shape[-1]).transpose(1, 0, 3, 2, 4)

    def from_query_blocks(x):
        return x.transpose(1, 0, 4, 2, 3, 5).reshape(b, nq * bq, h, x.shape[-1])[:, :t]

    def from_key_blocks(x):
        return x.transpose(1, 0, 3, 2, 4).reshape(b, nk * bk, kv, x.shape[-1])[:, :s]

    def forward(q, k, v, sinks_, params, qp, kp, qs, ks):
        qb_all, kb_all, vb_all = query_blocks(q), key_blocks(k), key_blocks(v)

        def query_block(i):
            qb, qpos = qb_all[i], qp[i]
            qseg = None if qs is None else qs[i]

            def step(j, carry):
                m, total, acc = carry
                kseg = None if ks is None else ks[j]
                z, _ = logits(params, qb, kb_all[j], qpos, kp[j])
                z = jnp.where(visible(i, j, qpos, kp[j], qseg, kseg), z, -jnp.inf)
                m_new = jnp.maximum(m, z.max(-1))
                m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
                p = jnp.exp(z - m_safe[..., None])
                alpha = jnp.exp(m - m_safe)
                pv = jnp.einsum("bkgqs,bksd->bkgqd", p.astype(v.dtype), vb_all[j], preferred_element_type=jnp.float32)
                return m_new, alpha * total + p.sum(-1), alpha[..., None] * acc + pv

            shape = (b, kv, group, bq)
            if sinks_ is None:
                init = (jnp.full(shape, -jnp.inf), jnp.zeros(shape), jnp.zeros((*shape, v.shape[-1])))
            else:  # the sink is a key whose value is zero: it adds exp(sink) to the denominator only
                init = (sink_logits(sinks_), jnp.ones(shape), jnp.zeros((*shape, v.shape[-1])))
            m, total, acc = jax.lax.fori_loop(*key_range(i), step, init)
            seen = total > 0  # a query that sees no key: log-sum-exp +inf, so that its recomputed probabilities are 0
            lse = jnp.where(seen, jnp.where(jnp.isfinite(m), m, 0.0) + jnp.log(jnp.where(seen, total, 1.0)), jnp.inf)
            out = acc / jnp.where(seen, total, 1.0)[..., None]
            return out.astype(v.dtype), lse

        out, lse = jax.lax.map(query_block, jnp.arange(nq))
        out = from_query_blocks(out)
        return out, (q, k, v, sinks_, params, qp, kp, qs, ks, out, lse)

    def backward(res, d_out):
        q, k, v, sinks_, params, qp, kp, qs, ks, out, lse = res
        qb_all, kb_all, vb_all = query_blocks(q), key_blocks(k), key_blocks(v)
        do_all = query_blocks(d_out)
        # delta_i = sum_j p_ij dp_ij = d_out_i . out_i (FlashAttention-2, Algorithm 2, line 4)
        delta_all = jnp.sum(do_all.astype(jnp.float32) * query_blocks(out).astype(jnp.float32), axis=-1)

        def query_block(carry, i):
            dk, dv, d_sinks, d_params = carry
            qb, qpos, do, delta, lse_i = qb_all[i], qp[i], do_all[i], delta_all[i], lse[i]
            qseg = None if qs is None else qs[i]

            def step(j, inner):
                dq, dk, dv, d_params = inner
                kb, vb = kb_all[j], vb_all[j]
                kseg = None if ks is None else ks[j]
                z, capped = logits(params, qb, kb, qpos, kp[j])
                keep = visible(i, j, qpos, kp[j], qseg, kseg)
                p = jnp.where(keep, jnp.exp(z - lse_i[..., None]), 0.0)
                dp = jnp.einsum("bkgqd,bksd->bkgqs", do, vb, preferred_element_type=jnp.float32)
                dz = p * (dp - delta[..., None])
                if bias_fn is not None:
                    _, pull = jax.vjp(lambda prm: bias_block(prm, qpos, kp[j]), params)
                    d_params = jax.tree.map(jnp.add, d_params, pull(dz)[0])
                d_raw = dz if soft_cap is None else dz * (1.0 - jnp.square(capped / soft_cap))
                dq = dq + jnp.einsum("bkgqs,bksd->bkgqd", d_raw, kb.astype(jnp.float32)) * scale
                dk = dk.at[j].add(jnp.einsum("bkgqs,bkgqd->bksd", d_raw, qb.astype(jnp.float32)) * scale)
                dv = dv.at[j].add(jnp.einsum("bkgqs,bkgqd->bksd", p, do.astype(jnp.float32)))
                return dq, dk, dv, d_params

            dq0 = jnp.zeros(qb.shape, jnp.float32)
            dq, dk, dv, d_params = jax.lax.fori_loop(*key_range(i), step, (dq0, dk, dv, d_params))
            if sinks_ is not None:  # d logit_sink = p_sink (0 - delta): its value is zero
                d_sinks = d_sinks - jnp.sum(jnp.exp(sink_logits(sinks_) - lse_i) * delta, axis=(0, 3))
            return (dk, dv, d_sinks, d_params), dq

        init = (
            jnp.zeros(kb_all.shape, jnp.float32),
            jnp.zeros(vb_all.shape, jnp.float32),
            jnp.zeros((kv, group), jnp.float32),
            jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params),
        )
        (dk, dv, d_sinks, d_params), dq = jax.lax.scan(query_block, init, jnp.arange(nq))
        dq = from_query_blocks(dq).astype(q.dtype)
        dk, dv = from_key_blocks(dk).astype(k.dtype), from_key_blocks(dv).astype(v.dtype)
        d_sinks = None if sinks_ is None else d_sinks.reshape(h).astype(sinks_.dtype)
        d_params = jax.tree.map(lambda g, x: g.astype(x.dtype), d_params, params)
        return dq, dk, dv, d_sinks, d_params, None, None, None, None

    @jax.custom_vjp
    def attention(q, k, v, sinks_, params, qp, kp, qs, ks):
        return forward(q, k, v, sinks_, params, qp, kp, qs, ks)[0]

    attention.defvjp(forward, backward)
    return attention(q, k, v, sinks, bias_params, qp, kp, qs, ks)


def key_block_range(i, *, length, q_block, k_block, causal, window, chunk):
    """[lo, hi): the key blocks that query block i of aligned attention over `length` tokens can see, from its
    first and last query's reach (causal: no later key; window: within (left, right); chunk: the same chunk)."""
    first, last = i * q_block, jnp.minimum((i + 1) * q_block, length) - 1
    lo, hi = 0, length - 1
    if causal:
        hi = jnp.minimum(hi, last)
    if window is not None:
        lo, hi = jnp.maximum(lo, first - window[0]), jnp.minimum(hi, last + window[1])
    if chunk is not None:
        lo, hi = jnp.maximum(lo, first // chunk * chunk), jnp.minimum(hi, (last // chunk + 1) * chunk - 1)
    return lo // k_block, hi // k_block + 1
