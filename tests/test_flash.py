"""zoo.layers.flash (memory-efficient attention with its own backward) equals the exact path, values and gradients,
for every attention feature and their combinations; it skips the blocks masks hide; its activation memory grows
linearly with the sequence."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.layers import flash
from zoo.layers import positions as pos_lib
from zoo.layers.attend import attend, dense_mask, position_mask
from zoo.layers.flash import flash_attention
from zoo.presets import get_config

B, T, H, D = 2, 300, 4, 16
T5 = get_config("t5-tiny").replace(num_heads=H)


def alibi(_, q_pos, k_pos):
    return pos_lib.alibi_bias(H, q_pos, k_pos)


def relative(table, q_pos, k_pos):
    return pos_lib.relative_bias(T5, table, q_pos, k_pos, bidirectional=True)


CASES = {
    "causal GQA": dict(causal=True),
    "causal MQA, narrow values": dict(causal=True, kv=1, dv=8),
    "causal, wide values": dict(causal=True, dv=24),
    "sliding window": dict(causal=True, window=(40, 0)),
    "chunks of 100": dict(causal=True, chunk=100),
    "bidirectional window": dict(window=(30, 30)),
    "bidirectional, no mask": dict(),
    "packed documents": dict(causal=True, segments=True),
    "soft-cap": dict(causal=True, soft_cap=2.0),
    "sinks and window": dict(causal=True, window=(50, 0), sinks=True),
    "ALiBi": dict(causal=True, bias=alibi),
    "T5 relative buckets": dict(bias=relative, params=True),
    "cross-attention, padded keys": dict(queries=40, padded_keys=True),
    "cache positions": dict(causal=True, window=(60, 0), queries=20, positions=True),
    "everything": dict(causal=True, window=(70, 0), segments=True, soft_cap=3.0, sinks=True, bias=alibi, kv=1),
}


def _inputs(case):
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    t, kv, dv = case.get("queries", T), case.get("kv", 2), case.get("dv", D)
    q = jax.random.normal(keys[0], (B, t, H, D))
    k = jax.random.normal(keys[1], (B, T, kv, D))
    v = jax.random.normal(keys[2], (B, T, kv, dv))
    sinks = jax.random.normal(keys[3], (H,)) if case.get("sinks") else None
    params = 0.3 * jax.random.normal(keys[4], (T5.relative_num_buckets, H)) if case.get("params") else None
    q_pos, k_pos = jnp.arange(t)[None], jnp.arange(T)[None]
    if case.get("positions"):  # a decode step's cache: queries at 400.., keys at slots with empty (-1) ones
        q_pos = 400 + jnp.arange(t)[None] + jnp.array([[0], [7]])
        k_pos = jnp.where(jax.random.uniform(keys[5], (B, T)) < 0.2, -1, jnp.arange(T)[None] + 150)
    if case.get("padded_keys"):
        k_pos = jnp.where(jnp.arange(T)[None] < jnp.array([[T], [123]]), jnp.arange(T)[None], -1)
    segments = None
    if case.get("segments"):
        segments = jnp.cumsum(jax.random.uniform(keys[6], (B, T)) < 0.01, axis=1)
    return q, k, v, sinks, params, q_pos, k_pos, segments


def _both(case, block=128):
    """(flash, exact) as functions of (q, k, v, sinks, params)."""
    _, _, _, _, _, q_pos, k_pos, segments = _inputs(case)
    aligned = "queries" not in case
    kw = dict(causal=case.get("causal", False), window=case.get("window"), chunk=case.get("chunk"))
    soft_cap, bias_fn = case.get("soft_cap"), case.get("bias")

    def flash(q, k, v, sinks, params):
        return flash_attention(
            q, k, v, scale=0.3, q_pos=q_pos, k_pos=k_pos, aligned=aligned, q_segments=segments, k_segments=segments,
            soft_cap=soft_cap, sinks=sinks, bias_fn=bias_fn, bias_params=params, block=block, **kw,
        )  # fmt: skip

    def exact(q, k, v, sinks, params):
        mask = dense_mask(q_pos, k_pos, False, kw["causal"], kw["window"], kw["chunk"], segments)
        bias = None if bias_fn is None else bias_fn(params, q_pos, k_pos)
        # dropout=identity: the exact softmax path
        return attend(q, k, v, scale=0.3, mask=mask, bias=bias, soft_cap=soft_cap, sinks=sinks, dropout=lambda p: p)

    return flash, exact, position_mask(q_pos, k_pos, **kw).any(-1)[:, 0]  # [B, T]: queries that see a key


@pytest.mark.parametrize("name", list(CASES))
def test_flash_equals_the_exact_path_values_and_gradients(name):
    case = CASES[name]
    q, k, v, sinks, params, *_ = _inputs(case)
    flash, exact, seen = _both(case)
    cotangent = jax.random.normal(jax.random.PRNGKey(1), (*q.shape[:3], v.shape[-1])) * seen[:, :, None, None]

    def loss(fn, *args):
        return jnp.sum(fn(*args) * cotangent)

    argnums = (0, 1, 2) + ((3,) if sinks is not None else ()) + ((4,) if params is not None else ())
    args = (q, k, v, sinks, params)
    out_f, grads_f = jax.jit(jax.value_and_grad(functools.partial(loss, flash), argnums))(*args)
    out_e, grads_e = jax.jit(jax.value_and_grad(functools.partial(loss, exact), argnums))(*args)
    values_f, values_e = jax.jit(flash)(*args), jax.jit(exact)(*args)
    np.testing.assert_allclose(values_f * seen[:, :, None, None], values_e * seen[:, :, None, None], atol=1e-5)
    np.testing.assert_allclose(out_f, out_e, rtol=1e-5, atol=1e-4)
    for g_f, g_e in zip(grads_f, grads_e, strict=True):
        # Relative to the largest entry: each entry of T5's bucket table sums ~10^4 products, and the exact path's
        # own float32 gradient is 0.7e-5 of that entry away from its float64 value (flash's 1.3e-5).
        np.testing.assert_allclose(g_f, g_e, atol=2e-5 * max(1.0, float(np.abs(g_e).max())), rtol=1e-5)


@pytest.mark.parametrize(
    "mask",
    [dict(causal=True), dict(causal=True, window=(200, 0)), dict(causal=True, chunk=300), dict(window=(150, 150))],
)
def test_visits_exactly_the_blocks_with_a_visible_key(mask):
    """key_block_range: query block i of 1000 aligned tokens (blocks of 128 queries, 96 keys) visits a key block if and
    only if the mask leaves some query of the block a key in it: nothing needed skipped, nothing hidden computed."""
    length, bq, bk = 1000, 128, 96
    window, chunk = mask.get("window"), mask.get("chunk")
    seen = np.asarray(position_mask(jnp.arange(length)[None], jnp.arange(length)[None], **{"causal": False, **mask}))
    for i in range(-(-length // bq)):
        rows = seen[0, 0, i * bq : (i + 1) * bq]
        needed = [j for j in range(-(-length // bk)) if rows[:, j * bk : (j + 1) * bk].any()]
        lo, hi = flash.key_block_range(
            i, length=length, q_block=bq, k_block=bk, causal=mask.get("causal", False), window=window, chunk=chunk
        )
        assert list(range(int(lo), int(hi))) == needed, i


def _temp_bytes(fn, length, heads=4, kv=2, width=64):
    """The compiled program's scratch memory (XLA's memory analysis), for forward and backward at `length`."""
    q = jax.ShapeDtypeStruct((1, length, heads, width), jnp.float32)
    k = jax.ShapeDtypeStruct((1, length, kv, width), jnp.float32)
    grad = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), argnums=(0, 1, 2))
    return jax.jit(grad).lower(q, k, k).compile().memory_analysis().temp_size_in_bytes


def test_activation_memory_grows_linearly_with_the_sequence():
    """Forward + backward at 2k, 8k and 32k tokens, compiled, not run: flash's scratch memory grows at most 4x per 4x
    the length (measured: 25, 31, 74 MiB, the fixed blocks' scratch plus the length's q, k, v and their gradients);
    the exact path's ~16x (its T x T probabilities: 155 MiB at 2k, 1,944 MiB at 8k)."""
    positions = lambda n: jnp.arange(n)[None]  # noqa: E731
    flash_fn = lambda q, k, v: flash_attention(  # noqa: E731
        q, k, v, scale=0.125, q_pos=positions(q.shape[1]), k_pos=positions(q.shape[1]), causal=True, aligned=True
    )
    exact = lambda q, k, v: attend(q, k, v, scale=0.125, is_causal=True, dropout=lambda p: p)  # noqa: E731
    lengths = (2048, 8192, 32768)
    grown = [b / a for a, b in itertools.pairwise([_temp_bytes(flash_fn, n) for n in lengths])]
    assert all(g < 4.4 for g in grown), grown
    exact_grown = _temp_bytes(exact, 8192) / _temp_bytes(exact, 2048)
    assert exact_grown > 12, exact_grown


MODELS = {
    "llama-tiny": {},  # causal, GQA, RoPE
    "gemma2-tiny": dict(sliding_window_size=100),  # soft-cap, local/global layers
    "gpt-oss-tiny": dict(sliding_window_size=100),  # sinks, windows, latent-free MoE
    "bloom-tiny": {},  # ALiBi
    "llama4-tiny": dict(attention_chunk_size=96),  # chunks, NoPE layers, temperature
    "deepseek-v2-lite-tiny": {},  # latent attention: values narrower than queries
    "t5-tiny": {},  # relative buckets (a learned table), bidirectional encoder, cross-attention
}


@pytest.mark.parametrize("name", list(MODELS))
def test_models_with_flash_attention_equal_the_exact_path(name):
    """A preset's logits and every parameter's gradient are the same with attention_impl flash as with xla (the
    exact path), on 300 tokens in blocks of 128, past every window and chunk; packed documents where the model
    is a decoder."""
    cfg = get_config(name, max_seq_len=512, **MODELS[name])
    params = jax.jit(functools.partial(zoo.init_params, cfg))(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 300), 0, cfg.vocab_size)
    if cfg.is_encoder_decoder:
        inputs = dict(tokens=(jax.random.randint(jax.random.key(2), (2, 260), 0, cfg.vocab_size), tokens))
    else:
        inputs = dict(
            tokens=(tokens,), segment_ids=jnp.cumsum(jax.random.uniform(jax.random.key(3), (2, 300)) < 0.01, 1)
        )

    def loss(impl, params):
        model = zoo.build(cfg.replace(attention_impl=impl))
        kw = {} if cfg.is_encoder_decoder else {"segment_ids": inputs["segment_ids"]}
        logits = model.apply({"params": params}, *inputs["tokens"], **kw)
        return jnp.mean(jax.nn.logsumexp(logits, -1)), logits

    (_, logits_f), grads_f = jax.jit(jax.value_and_grad(functools.partial(loss, "flash"), has_aux=True))(params)
    (_, logits_e), grads_e = jax.jit(jax.value_and_grad(functools.partial(loss, "xla"), has_aux=True))(params)
    np.testing.assert_allclose(logits_f, logits_e, atol=1e-4, rtol=1e-4)
    for path, g_f in jax.tree_util.tree_leaves_with_path(grads_f):
        g_e = functools.reduce(lambda t, k: t[k.key], path, grads_e)
        np.testing.assert_allclose(g_f, g_e, atol=1e-5 * max(1.0, float(np.abs(g_e).max())), err_msg=str(path))
