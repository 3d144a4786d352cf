"""Multi-head latent attention (kv_latent_dim > 0; zoo/layers/latent.py): one layer against a numpy reference of
DeepSeek-V2 §2.1, decoding through the latent cache against the full forward, what the cache holds, that decoding
never expands it to per-head keys, and the refusals. HF parity: tests/test_hf_deepseek.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.layers.attention import Attention, cache_width
from zoo.presets import get_config

# Distinct sizes, so that a shape names what it holds: latent 16, RoPE part 8 of 28-wide query/key heads (no-RoPE
# part 20), 12-wide values, a 24-wide query bottleneck, 4 heads; sliding (window 12) and full layers.
MLA = dict(
    num_kv_heads=None,
    head_dim=28,
    kv_latent_dim=16,
    q_latent_dim=24,
    rope_head_dim=8,
    value_head_dim=12,
    rope_interleaved=True,
    attention_pattern=("local", "global"),
    sliding_window_size=12,
    num_layers=2,
)


def config(**changes):
    return get_config("llama-tiny").replace(**{**MLA, **changes})


def _rms(x, scale, eps):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * scale


def _rope_interleaved(x, positions, theta, dims):
    """Rotates the pairs (2i, 2i+1) of x's last `dims` dims (DeepSeek's complex-number RoPE)."""
    inv = 1.0 / theta ** (np.arange(0, dims, 2) / dims)
    angle = positions[:, None] * inv  # [T, dims/2]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    a, b = x[..., 0::2], x[..., 1::2]
    return np.stack([a * cos - b * sin, b * cos + a * sin], -1).reshape(x.shape)


def reference(cfg, p, x, window, rope_everything=False):
    """DeepSeek-V2 eqs. 9-19 in numpy, float64: one causal attention layer over x [T, d_model] with a window."""
    t, h, r, dr = x.shape[0], cfg.num_heads, cfg.kv_latent_dim, cfg.rope_head_dim
    nope, pos = cfg.head_dim - dr, np.arange(t, dtype=np.float64)
    kernel = lambda name: np.asarray(p[name]["kernel"], np.float64)  # noqa: E731
    scale = lambda name: np.asarray(p[name]["scale"], np.float64)  # noqa: E731
    q = _rms(x @ kernel("query_down"), scale("query_norm"), cfg.norm_eps)
    q = np.einsum("tl,lhd->thd", q, kernel("query_up"))
    both = x @ kernel("kv_down")
    latent, rope_key = _rms(both[:, :r], scale("kv_norm"), cfg.norm_eps), both[:, r:]
    kv = np.einsum("tr,rhd->thd", latent, kernel("kv_up"))
    k = np.concatenate([kv[..., :nope], np.broadcast_to(rope_key[:, None], (t, h, dr))], -1)
    v = kv[..., nope:]
    rotate = cfg.head_dim if rope_everything else dr
    q = np.concatenate(
        [q[..., : cfg.head_dim - rotate], _rope_interleaved(q[..., -rotate:], pos, cfg.rope_theta, rotate)], -1
    )
    k = np.concatenate(
        [k[..., : cfg.head_dim - rotate], _rope_interleaved(k[..., -rotate:], pos, cfg.rope_theta, rotate)], -1
    )
    logits = np.einsum("thd,shd->hts", q, k) * cfg.head_dim**-0.5
    delta = pos[:, None] - pos[None]
    logits = np.where((delta >= 0) & (delta < window), logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("hts,shd->thd", probs, v)
    return np.einsum("thd,hdm->tm", out, kernel("out"))


def test_a_layer_equals_deepseek_v2_equations():
    """Queries through the normed bottleneck, keys and values from the normed latent, RoPE on the last rope_head_dim
    dims of each query and on the shared key only, 1/sqrt(head_dim): equal to the numpy reference within 1e-5,
    and the reference that rotates every dim is 10^3 times farther."""
    cfg = config()
    layer = Attention(cfg, kind="local")
    x = jax.random.normal(jax.random.key(0), (1, 20, cfg.d_model))
    positions = jnp.arange(20)[None]
    params = nn.unbox(layer.init(jax.random.key(1), x, positions))["params"]
    params = jax.tree.map(lambda a: 8 * a, params)  # logits of order 1, not 1e-3: attention that is not uniform
    got = np.asarray(layer.apply({"params": params}, x, positions)[0], np.float64)
    x64 = np.asarray(x[0], np.float64)
    want = reference(cfg, params, x64, window=12)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=1e-5 * scale)
    wrong = reference(cfg, params, x64, window=12, rope_everything=True)
    assert np.abs(got - wrong).max() > 1e-2 * scale


def test_decoding_through_the_latent_cache_equals_the_full_forward():
    """A 7-token prefill then 25 single steps, past the sliding layers' window of 12 (their latent caches are ring
    buffers): every step's logits equal the full forward's at that position (absorbed decoding against expanded
    attention), and the last row's greedy tokens equal re-running the full forward."""
    cfg = config()
    params = zoo.init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 32), 0, cfg.vocab_size)
    full = zoo.build(cfg).apply({"params": params}, tokens)
    model = zoo.build(cfg.replace(scan_layers=False)).clone(decode_len=32)
    flat = zoo.model.unstack_layers(params)
    step = jax.jit(lambda v, tok: model.apply(v, tok, mutable=["cache"]))  # positions from the cache's count
    logits, state = step({"params": flat}, tokens[:, :7])
    outs = [logits]
    for t in range(7, 32):
        logits, state = step({"params": flat, "cache": state["cache"]}, tokens[:, t : t + 1])
        outs.append(logits)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=2e-5)


def test_the_cache_holds_the_latent_and_the_shared_key():
    """Per layer and token, kv_latent_dim + rope_head_dim numbers (24 here), a latent and one key whatever the
    heads; the same model with multi-head attention caches 2 x heads x head_dim (224)."""
    cfg = config(attention_pattern=("global",), sliding_window_size=None, dtype="bfloat16")
    length, batch = 40, 3
    model = zoo.build(cfg.replace(scan_layers=False)).clone(decode_len=length)
    tokens = jnp.zeros((batch, 1), jnp.int32)
    cache = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))["cache"]
    layer = cache["decoder"]["cycle_0"]["block_0"]["attention"]
    assert sorted(layer) == ["cached_latent", "cached_positions", "cached_rope_key"]
    assert layer["cached_latent"].shape == (batch, 1, length, 16) and layer["cached_rope_key"].shape == (
        batch,
        1,
        length,
        8,
    )
    stored = sum(
        a.size * a.dtype.itemsize
        for path, a in jax.tree_util.tree_leaves_with_path(cache)
        if "cached_" in str(path) and "positions" not in str(path)
    )
    assert stored == cfg.num_layers * batch * length * cache_width(cfg) * 2 == cfg.num_layers * batch * length * 24 * 2
    assert cache_width(config(kv_latent_dim=0, q_latent_dim=0, rope_head_dim=0, value_head_dim=None)) == 2 * 4 * 28


def _shapes(jaxpr):
    """Every intermediate's shape in a jaxpr and the jaxprs inside it (jit, scan, cond...)."""
    for eqn in jaxpr.eqns:
        yield from (v.aval.shape for v in eqn.outvars if hasattr(v.aval, "shape"))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    yield from _shapes(inner)


def test_a_decode_step_never_expands_the_cache_to_heads():
    """The absorbed matmuls: in a decode step over a 40-slot cache, no intermediate holds per-head keys or values
    for the cached tokens (B x 40 x heads x 20 or x 12); the largest per-slot array is the scores, heads wide."""
    cfg = config(attention_pattern=("global",), sliding_window_size=None)
    length, batch = 40, 2
    model = zoo.build(cfg.replace(scan_layers=False)).clone(decode_len=length)
    params = zoo.model.unstack_layers(zoo.init_params(cfg, jax.random.key(0)))
    tokens = jnp.zeros((batch, 1), jnp.int32)
    cache = model.init(jax.random.key(0), tokens)["cache"]
    step = lambda c: model.apply({"params": params, "cache": c}, tokens, mutable=["cache"])  # noqa: E731
    shapes = [s for s in _shapes(jax.make_jaxpr(step)(cache).jaxpr) if length in s]
    assert shapes, "the step reads the cache"
    widest = max(int(np.prod(s)) // (batch * length) for s in shapes)
    assert widest == max(cache_width(cfg), cfg.num_heads), shapes

    # The expanded path (a forward without the cache) does build them: the check can fail.
    def forward():
        return zoo.build(cfg).apply(
            {"params": zoo.init_params(cfg, jax.random.key(0))}, jnp.zeros((batch, length), jnp.int32)
        )

    expanded = [s for s in _shapes(jax.make_jaxpr(forward)().jaxpr) if length in s]
    assert max(int(np.prod(s)) // (batch * length) for s in expanded) >= cfg.num_heads * 20


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(num_kv_heads=2), "ModelConfig.num_kv_heads: latent attention expands"),
        (dict(rope_head_dim=28), "ModelConfig.rope_head_dim: must be even, below head_dim=28"),
        (dict(rope_head_dim=7), "ModelConfig.rope_head_dim: must be even"),
        (dict(position_embedding="alibi", rope_interleaved=False), "ModelConfig.position_embedding: latent attention"),
        (dict(qk_norm="per_head"), "ModelConfig.qk_norm: only applies with kv_latent_dim: 0"),
        (dict(kv_latent_dim=0), "ModelConfig.q_latent_dim: only applies with kv_latent_dim > 0"),
    ],
)
def test_refusals_name_the_field(changes, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        config(**changes)
