"""Llama 4's attention knobs against direct references (issue 19 point 6; HF parity in test_hf_llama4.py): chunked
attention's mask (a query sees its own chunk up to itself: the first query of a chunk sees only itself), the
temperature on NoPE layers' queries (1 until the floor, then 1 + scale ln(1 + floor((p + 1) / floor))), and the
gainless per-head RMS QK-norm (no parameters; skipped on NoPE layers when asked)."""

import math

import jax
import jax.numpy as jnp
import numpy as np

import zoo
from zoo.layers.attend import position_mask
from zoo.layers.attention import cache_size, temperature
from zoo.presets import get_config


def test_a_chunked_mask_is_causal_within_each_chunk():
    pos = jnp.arange(20)[None]
    got = np.asarray(position_mask(pos, pos, causal=True, chunk=7))[0, 0]
    q, k = np.arange(20)[:, None], np.arange(20)[None, :]
    np.testing.assert_array_equal(got, (k <= q) & (q // 7 == k // 7))
    assert got[7].sum() == 1 and got[7, 7] and got[6, :7].all() and got[13, 7:14].all() and not got[14, 13]
    cfg = get_config("llama4-tiny")
    assert cache_size(cfg, "chunked", 100) == 16 and cache_size(cfg, "global_nope", 100) == 100


def test_temperature_is_one_until_the_floor_then_grows_with_the_log():
    cfg = get_config("llama4-tiny")  # floor 8, scale 0.1
    got = np.asarray(temperature(cfg, jnp.arange(40)[None]))[0, :, 0, 0]
    want = [1 + 0.1 * math.log(1 + (p + 1) // 8) for p in range(40)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (got[:7] == 1).all() and got[7] > 1 and got[39] > got[31] > got[23]


def test_the_gainless_qk_norm_has_no_parameters_and_skips_the_nope_layers():
    cfg = get_config("llama4-tiny").replace(qk_norm="per_head_no_gain", qk_norm_nope_layers=False)
    params = zoo.init_params(cfg, jax.random.key(0))
    names = {
        "/".join(str(getattr(k, "key", k)) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    assert not any("query_norm" in n or "key_norm" in n for n in names)
    tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, cfg.vocab_size)
    model = zoo.build(cfg)
    on_every_layer = zoo.build(cfg.replace(qk_norm_nope_layers=True))
    plain = zoo.build(cfg.replace(qk_norm="none", qk_norm_nope_layers=True))
    logits = [np.asarray(m.apply({"params": params}, tokens)) for m in (model, on_every_layer, plain)]
    assert np.abs(logits[0] - logits[1]).max() > 1e-4 and np.abs(logits[0] - logits[2]).max() > 1e-4


def test_chunked_attention_in_query_blocks_equals_the_masked_call():
    """300 aligned tokens run the blocked causal path (query blocks that skip the keys before their first query's
    chunk) and must equal one call under the explicit chunk mask; both differ from plain causal attention."""
    from zoo.layers.attend import attend

    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, 300, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(2, 300, 2, 8)), jnp.float32) for _ in range(2))
    pos = jnp.arange(300)[None]
    blocked = attend(q, k, v, scale=8**-0.5, is_causal=True, chunk=70)
    masked = attend(q, k, v, scale=8**-0.5, mask=position_mask(pos, pos, causal=True, chunk=70))
    np.testing.assert_allclose(blocked, masked, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(blocked) - np.asarray(attend(q, k, v, scale=8**-0.5, is_causal=True))).max() > 1e-2
