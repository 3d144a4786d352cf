"""Each knob against its math: positions, norms, MLP forms, norm placement, serial vs parallel, caps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.config import ModelConfig
from zoo.layers import positions as P
from zoo.layers.attend import attend
from zoo.layers.attention import Attention
from zoo.layers.block import Block
from zoo.layers.mlp import Mlp
from zoo.layers.norms import Norm

BASE = dict(vocab_size=64, d_model=16, num_layers=2, num_heads=4, d_ff=32, max_seq_len=64)


def cfg(**kw):
    return ModelConfig(**{**BASE, **kw})


def init_apply(module, *args):
    params = module.init(jax.random.key(0), *args)["params"]
    return params, module.apply({"params": params}, *args)


# ------------------------------------------------------------------------------------------ positions
def test_rope_scores_depend_only_on_relative_position():
    c = cfg(head_dim=8)
    inv = P.rope_frequencies(c, 10000.0)
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 8))

    def score(m, n):
        return float(jnp.sum(P.apply_rope(q, jnp.array([[m]]), inv) * P.apply_rope(k, jnp.array([[n]]), inv)))

    assert score(7, 3) == pytest.approx(score(107, 103), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)
    # Position 0 is the identity rotation.
    np.testing.assert_allclose(P.apply_rope(q, jnp.array([[0]]), inv), q, atol=1e-7)


def test_partial_rope_leaves_the_tail_untouched():
    c = cfg(head_dim=8, rope_fraction=0.5)
    inv = P.rope_frequencies(c, 10000.0)
    assert inv.shape == (2,)
    x = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
    y = P.apply_rope(x, jnp.array([[5]]), inv)
    np.testing.assert_array_equal(y[..., 4:], x[..., 4:])
    assert not np.allclose(y[..., :4], x[..., :4])


def test_llama3_scaling_bands():
    c = cfg(head_dim=64, rope_scaling="llama3", rope_scaling_factor=8.0, rope_original_max_len=8192)
    plain = P.rope_frequencies(cfg(head_dim=64), 500000.0)
    scaled = P.rope_frequencies(c, 500000.0)
    wavelen = 2 * math.pi / plain
    high = wavelen < 8192 / 4  # short wavelengths: untouched
    low = wavelen > 8192 / 1  # long wavelengths: stretched by the factor
    np.testing.assert_allclose(scaled[high], plain[high])
    np.testing.assert_allclose(scaled[low], plain[low] / 8, rtol=1e-6)
    mid = ~high & ~low
    assert mid.any() and np.all((scaled[mid] < plain[mid]) & (scaled[mid] > plain[mid] / 8))


def test_rope_scaling_local_false_scales_global_layers_only():
    """Gemma 3: linear x8 on global layers (every inverse frequency / 8), plain RoPE at its own base on local ones."""
    c = cfg(
        head_dim=8,
        attention_pattern=("local", "global"),
        sliding_window_size=8,
        rope_local_theta=100.0,
        rope_scaling="linear",
        rope_scaling_factor=8.0,
        rope_scaling_local=False,
        init_std=0.5,
    )
    plain = c.replace(rope_scaling="none", rope_scaling_factor=1.0, rope_scaling_local=True)
    np.testing.assert_allclose(P.rope_frequencies(c, 1e4), P.rope_frequencies(plain, 1e4) / 8, rtol=1e-6)
    np.testing.assert_allclose(P.rope_frequencies(c, 100.0, scaled=False), P.rope_frequencies(plain, 100.0))
    x, pos = jax.random.normal(jax.random.key(0), (1, 6, 16)), jnp.arange(6)[None]

    def run(config, kind):
        return Attention(config, kind).apply({"params": params}, x, pos)

    params, local = init_apply(Attention(c, "local"), x, pos)
    np.testing.assert_allclose(local, run(plain, "local"), atol=1e-6)  # local layers: no scaling
    np.testing.assert_allclose(run(c, "global"), run(c.replace(rope_scaling_local=True), "global"), atol=1e-6)
    assert np.abs(np.asarray(run(c, "global")) - np.asarray(run(plain, "global"))).max() > 1e-4
    assert np.abs(np.asarray(local) - np.asarray(run(c.replace(rope_scaling_local=True), "local"))).max() > 1e-4
    with pytest.raises(ValueError, match="rope_scaling_local"):
        cfg(rope_scaling_local=False)  # nothing to scale


def test_sinusoidal_matches_the_paper_formula():
    table = np.asarray(P.sinusoidal_table(jnp.arange(50), 16))
    pos, i = 37, 3
    assert table[pos, 2 * i] == pytest.approx(math.sin(pos / 10000 ** (2 * i / 16)), abs=1e-5)
    assert table[pos, 2 * i + 1] == pytest.approx(math.cos(pos / 10000 ** (2 * i / 16)), abs=1e-5)


# Buckets by hand from the T5 rule: half exact, half log-spaced up to max_distance, capped.
@pytest.mark.parametrize(
    "relative, bidirectional, bucket",
    [
        (0, True, 0),
        (-3, True, 3),
        (3, True, 19),
        (-7, True, 7),
        (-8, True, 8),
        (-16, True, 10),
        (-32, True, 12),
        (-64, True, 14),
        (-127, True, 15),
        (-1000, True, 15),
        (1000, True, 31),
        (0, False, 0),
        (5, False, 0),
        (-15, False, 15),
        (-16, False, 16),
        (-32, False, 21),
        (-1000, False, 31),
    ],
)
def test_t5_relative_buckets(relative, bidirectional, bucket):
    got = P.relative_bucket(jnp.array([relative]), bidirectional, num_buckets=32, max_distance=128)
    assert int(got[0]) == bucket


def test_alibi_slopes_published_values():
    np.testing.assert_allclose(P.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    # 12 heads: the 8-head slopes, then every other slope of the 16-head sequence (Press 2022 code).
    expected = [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -(0.5 + i) for i in range(4)]
    np.testing.assert_allclose(P.alibi_slopes(12), expected, rtol=1e-6)
    bias = P.alibi_bias(8, jnp.arange(4)[None], jnp.arange(4)[None])
    assert float(bias[0, 0, 3, 0]) == pytest.approx(-0.5 * 3)


@pytest.mark.parametrize("causal, kv_heads", [(True, 4), (True, 2), (False, 4)])
def test_transformer_xl_four_terms(causal, kv_heads):
    """Dai 2019 §3.3: score(i, j) = scale * (q_i.k_j + q_i.W_r R_{i-j} + u.k_j + v.W_r R_{i-j}), R the sinusoids
    of the distance i - j (negative ones too without a causal mask); W_r, u, v are this layer's parameters."""
    from flax.linen import meta

    c = cfg(position_embedding="transformer_xl", num_kv_heads=kv_heads, max_seq_len=8)
    x = jax.random.normal(jax.random.key(0), (1, 6, 16))
    pos = jnp.arange(6)[None]
    params = Attention(c, causal=causal).init(jax.random.key(0), x, pos)["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), params)
    y = np.asarray(Attention(c, causal=causal).apply({"params": params}, x, pos))
    p = jax.tree_util.tree_map(np.asarray, meta.unbox(params))
    assert p["position_key"]["kernel"].shape == (16, 4, 4) and "bias" not in p["position_key"]
    assert p["content_bias"].shape == p["position_bias"].shape == (4, 4)  # per layer, per head
    xs, group = np.asarray(x)[0], 4 // kv_heads
    q = np.einsum("td,dhk->thk", xs, p["query"]["kernel"])  # [T, 4, 4]
    k = np.repeat(np.einsum("td,dhk->thk", xs, p["key"]["kernel"]), group, axis=1)
    v = np.repeat(np.einsum("td,dhk->thk", xs, p["value"]["kernel"]), group, axis=1)
    dist = np.arange(6)[:, None] - np.arange(6)[None, :]  # i - j
    freq = 10000.0 ** (-np.arange(0, 16, 2) / 16)
    R = np.zeros((6, 6, 16))
    R[..., 0::2], R[..., 1::2] = np.sin(dist[..., None] * freq), np.cos(dist[..., None] * freq)
    r = np.einsum("tsd,dhk->tshk", R, p["position_key"]["kernel"])  # W_r R_{i-j}
    u, w = p["content_bias"], p["position_bias"]
    a = np.einsum("thk,shk->hts", q, k)
    b = np.einsum("thk,tshk->hts", q, r)
    c_ = np.einsum("hk,shk->hs", u, k)[:, None, :]
    d = np.einsum("hk,tshk->hts", w, r)
    scores = (a + b + c_ + d) / 2.0  # 1 / sqrt(4)
    if causal:
        scores = np.where(dist >= 0, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    heads = np.einsum("hts,shk->thk", probs, v)
    np.testing.assert_allclose(y[0], np.einsum("thk,hkd->td", heads, p["out"]["kernel"]), rtol=1e-4, atol=1e-5)
    for term in (b, c_, d):  # each term matters
        assert np.abs(term).max() > 1e-2
    with pytest.raises(ValueError, match="even d_model"):
        cfg(position_embedding="transformer_xl", d_model=15, num_heads=3, head_dim=4)


# ----------------------------------------------------------------------------------------- norms
@pytest.mark.parametrize(
    "kw",
    [
        dict(norm_type="layernorm", norm_use_bias=True),
        dict(norm_type="rmsnorm"),
        dict(norm_type="rmsnorm", norm_scale_plus_one=True),
        # Nemotron's LayerNorm1P: (x - mean) / std * (1 + w) + b
        dict(norm_type="layernorm", norm_use_bias=True, norm_scale_plus_one=True),
    ],
)
def test_norm_formulas(kw):
    c = cfg(norm_eps=1e-6, **kw)
    x = jax.random.normal(jax.random.key(0), (3, 16)) * 3 + 1
    params = Norm(c).init(jax.random.key(0), x)["params"]
    params = jax.tree_util.tree_map(lambda p: p + jax.random.normal(jax.random.key(1), p.shape), params)
    y = Norm(c).apply({"params": params}, x)
    xn = np.asarray(x)
    if c.norm_type == "layernorm":
        xn = xn - xn.mean(-1, keepdims=True)
    xn = xn / np.sqrt((xn**2).mean(-1, keepdims=True) + 1e-6)
    scale = np.asarray(params["scale"].unbox() if hasattr(params["scale"], "unbox") else params["scale"])
    xn = xn * ((1 + scale) if c.norm_scale_plus_one else scale)
    if c.norm_use_bias:
        xn = xn + np.asarray(jax.tree_util.tree_leaves(params["bias"])[0])
    np.testing.assert_allclose(y, xn, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------------- MLP
@pytest.mark.parametrize(
    "acts, fn",
    [
        (("relu",), None),
        (("gelu",), None),
        (("squared_relu",), None),
        (("relu", "linear"), lambda a, b: np.maximum(a, 0) * b),  # ReGLU
        (("gelu_tanh", "linear"), lambda a, b: jax.nn.gelu(a, approximate=True) * b),  # GeGLU
        (("silu", "linear"), lambda a, b: a / (1 + np.exp(-a)) * b),  # SwiGLU
    ],
)
def test_mlp_forms(acts, fn):
    c = cfg(mlp_activations=acts)
    x = jax.random.normal(jax.random.key(0), (1, 3, 16))
    params, y = init_apply(Mlp(c), x)

    def k(n):
        return np.asarray(jax.tree_util.tree_leaves(params[n])[0])

    xs = np.asarray(x)
    if len(acts) == 1:
        h = xs @ k("wi")
        h = {
            "relu": np.maximum(h, 0),
            "gelu": np.asarray(jax.nn.gelu(h, approximate=False)),
            "squared_relu": np.maximum(h, 0) ** 2,
        }[acts[0]]
    else:
        h = np.asarray(fn(xs @ k("wi_0"), xs @ k("wi_1")))
    np.testing.assert_allclose(y, h @ k("wo"), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ block formulas
def block_parts(c, x):
    """Run a Block, then recompute it from its own sub-modules' outputs."""
    block = Block(c)
    pos = jnp.arange(x.shape[1])[None]
    params = block.init(jax.random.key(0), x, pos)["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
    out = block.apply({"params": params}, x, pos)

    def attn(h):
        return Attention(c).apply({"params": params["attention"]}, h, pos)

    def mlp(h):
        return Mlp(c).apply({"params": params["mlp"]}, h)

    def norm(name, h):
        return Norm(c).apply({"params": params[name]}, h)

    return out, attn, mlp, norm


X = jax.random.normal(jax.random.key(7), (1, 5, 16))


@pytest.mark.parametrize("position", ["pre", "post", "double", "output"])
def test_norm_placement_formulas(position):
    c = cfg(norm_position=position, final_norm=position != "post")
    out, attn, mlp, norm = block_parts(c, X)
    if position == "pre":
        h = X + attn(norm("attn_norm", X))
        ref = h + mlp(norm("mlp_norm", h))
    elif position == "post":
        h = norm("attn_norm", X + attn(X))
        ref = norm("mlp_norm", h + mlp(h))
    elif position == "double":
        h = X + norm("attn_post_norm", attn(norm("attn_norm", X)))
        ref = h + norm("mlp_post_norm", mlp(norm("mlp_norm", h)))
    else:
        h = X + norm("attn_norm", attn(X))
        ref = h + norm("mlp_norm", mlp(h))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_parallel_layers_formula(shared):
    c = cfg(parallel_layers=True, parallel_shared_norm=shared)
    out, attn, mlp, norm = block_parts(c, X)
    ref = X + attn(norm("attn_norm", X)) + mlp(norm("attn_norm" if shared else "mlp_norm", X))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    serial, *_ = block_parts(cfg(), X)
    assert np.abs(np.asarray(serial) - np.asarray(out)).max() > 1e-3


# --------------------------------------------------------------------------- attention details
def test_attention_soft_cap_bounds_and_fallback_is_exact():
    q = jax.random.normal(jax.random.key(0), (1, 6, 4, 8)) * 30
    k = jax.random.normal(jax.random.key(1), (1, 6, 2, 8)) * 30
    v = jax.random.normal(jax.random.key(2), (1, 6, 2, 8))
    fused = attend(q, k, v, scale=0.3, is_causal=True, window=(2, 0))
    manual = attend(q, k, v, scale=0.3, is_causal=True, window=(2, 0), dropout=lambda p: p)
    np.testing.assert_allclose(fused, manual, atol=1e-5)  # the fallback is the same math
    # With a cap, probabilities are softmax(cap * tanh(s / cap)): the largest logit gap is < 2 * cap.
    capped = attend(q, k, v, scale=0.3, soft_cap=1.0, is_causal=True)
    reference = attend(jnp.zeros_like(q), k, v, scale=0.3, is_causal=True)
    assert np.abs(np.asarray(capped) - np.asarray(fused)).max() > 1e-2
    assert np.isfinite(np.asarray(capped)).all() and np.isfinite(np.asarray(reference)).all()


def test_final_logit_soft_cap_bounds_logits():
    from zoo.model import build, init_params

    c = cfg(final_logits_soft_cap=0.5, init_std=1.0)
    params = init_params(c, jax.random.key(0))
    logits = build(c).apply({"params": params}, jnp.arange(10)[None])
    assert float(jnp.max(jnp.abs(logits))) <= 0.5  # tanh saturates to exactly the cap in fp32
    assert float(jnp.max(jnp.abs(logits))) > 0.45  # the cap binds: big logits sit near it


def test_lm_head_bias_is_added_to_the_logits():
    """GPT-J: logits = h W + b with the untied head's own bias (vocab parameters more)."""
    from zoo.model import build, count_params, init_params

    c = cfg(tie_word_embeddings=False, lm_head_bias=True)
    assert count_params(c) == count_params(c.replace(lm_head_bias=False)) + c.vocab_size
    params = init_params(c, jax.random.key(0))
    bias = jax.random.normal(jax.random.key(1), (c.vocab_size,))
    tokens = jnp.arange(10)[None]
    zero = build(c).apply({"params": params}, tokens)
    params["lm_head"]["bias"] = bias
    np.testing.assert_allclose(build(c).apply({"params": params}, tokens), zero + bias, atol=1e-5)
    with pytest.raises(ValueError, match="lm_head_bias"):
        cfg(lm_head_bias=True)  # tied: no head of its own


def test_sliding_window_hides_distant_keys():
    """A local layer's output at position t ignores values at positions <= t - window."""
    c = cfg(attention_pattern=("local",), sliding_window_size=3)
    x = jax.random.normal(jax.random.key(0), (1, 10, 16))
    pos = jnp.arange(10)[None]
    params, y = init_apply(Attention(c, "local"), x, pos)
    y2 = Attention(c, "local").apply({"params": params}, x.at[:, :5].set(0.0), pos)
    np.testing.assert_allclose(y[:, 7:], y2[:, 7:], atol=1e-6)  # 7 - 3 >= 4: never sees 0..4
    assert np.abs(np.asarray(y[:, 5:7]) - np.asarray(y2[:, 5:7])).max() > 1e-4


def test_query_scale_none_means_inverse_sqrt_head_dim():
    x = jax.random.normal(jax.random.key(0), (1, 4, 16))
    pos = jnp.arange(4)[None]
    params, default = init_apply(Attention(cfg()), x, pos)
    explicit = Attention(cfg(query_scale=4**-0.5)).apply({"params": params}, x, pos)
    np.testing.assert_allclose(default, explicit, atol=1e-6)
    unscaled = Attention(cfg(query_scale=1.0)).apply({"params": params}, x, pos)
    assert np.abs(np.asarray(unscaled) - np.asarray(default)).max() > 1e-4


def test_attention_out_bias_apart_from_qkv_bias():
    """attention_out_bias: false under attention_bias: true (Qwen2) biases q, k, v but not the output:
    out = softmax((x Wq + bq)(x Wk + bk)^T / sqrt(hd)) (x Wv + bv) Wo, with no + bo. None follows attention_bias."""
    from flax.linen import meta

    assert cfg(attention_bias=True).attention_out_bias and not cfg().attention_out_bias
    assert cfg(attention_bias=True).replace(attention_bias=False).attention_out_bias is False  # derived again
    c = cfg(attention_bias=True, attention_out_bias=False, num_kv_heads=1, position_embedding="none")
    x = jax.random.normal(jax.random.key(0), (1, 5, 16))
    pos = jnp.arange(5)[None]
    params, y = init_apply(Attention(c), x, pos)
    assert "bias" not in params["out"] and all("bias" in params[n] for n in ("query", "key", "value"))
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
    y = np.asarray(Attention(c).apply({"params": params}, x, pos))
    p = jax.tree_util.tree_map(np.asarray, meta.unbox(params))
    xs = np.asarray(x)[0]
    q = np.einsum("td,dhk->thk", xs, p["query"]["kernel"]) + p["query"]["bias"]  # [T, 4, 4]
    k = np.einsum("td,dhk->thk", xs, p["key"]["kernel"]) + p["key"]["bias"]  # [T, 1, 4]
    v = np.einsum("td,dhk->thk", xs, p["value"]["kernel"]) + p["value"]["bias"]
    scores = np.einsum("thk,shk->hts", q, np.broadcast_to(k, q.shape)) / 2.0  # 1 / sqrt(4)
    scores = np.where(np.tril(np.ones((5, 5), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    heads = np.einsum("hts,shk->thk", probs, np.broadcast_to(v, q.shape))
    np.testing.assert_allclose(y[0], np.einsum("thk,hkd->td", heads, p["out"]["kernel"]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="attention_out_bias"):
        cfg(attention_out_bias=1)


# ------------------------------------------------------------------ OPT, BLOOM, Cohere knobs
def test_interleaved_rope_rotates_adjacent_pairs():
    """GPT-J / Cohere: dims (2i, 2i+1) rotate by angle p * inv_freq[i], i.e. the half-split rotation of the
    dims reordered evens-then-odds."""
    inv = P.rope_frequencies(cfg(head_dim=8), 10000.0)
    x = jax.random.normal(jax.random.key(0), (1, 1, 2, 8))
    y = np.asarray(P.apply_rope(x, jnp.array([[3]]), inv, interleaved=True))
    angle = 3 * inv
    xe, xo = np.asarray(x[..., 0::2]), np.asarray(x[..., 1::2])
    np.testing.assert_allclose(y[..., 0::2], xe * np.cos(angle) - xo * np.sin(angle), atol=1e-6)
    np.testing.assert_allclose(y[..., 1::2], xo * np.cos(angle) + xe * np.sin(angle), atol=1e-6)
    order = np.r_[0:8:2, 1:8:2]
    np.testing.assert_allclose(y[..., order], P.apply_rope(x[..., order], jnp.array([[3]]), inv), atol=1e-6)
    with pytest.raises(ValueError, match="rope_interleaved"):
        cfg(position_embedding="alibi", rope_interleaved=True)


def _logits(c, params):
    from zoo.model import build

    return np.asarray(build(c).apply({"params": params}, jnp.arange(12)[None]))


def test_position_offset_reads_row_p_plus_offset():
    """OPT: a max_seq_len + 2 row table whose row p + 2 holds position p."""
    from zoo.model import count_params, init_params

    c = cfg(position_embedding="learned", position_offset=2)
    assert count_params(c) == count_params(c.replace(position_offset=0)) + 2 * c.d_model
    params = init_params(c, jax.random.key(0))
    plain = {**params, "position_embed": {"embedding": params["position_embed"]["embedding"][2:]}}
    np.testing.assert_allclose(_logits(c, params), _logits(c.replace(position_offset=0), plain), atol=1e-5)
    with pytest.raises(ValueError, match="position_offset"):
        cfg(position_offset=2)  # RoPE has no table


def test_embedding_dim_projects_in_and_out():
    """OPT-350m: tokens E[t] P_in enter the stream, the head reads h P_out. The same model with d_model-wide
    embeddings E P_in and head P_out W gives the same logits (untied, so the two can be folded)."""
    from zoo.model import count_params, init_params

    c = cfg(embedding_dim=8, tie_word_embeddings=False)
    wide = c.replace(embedding_dim=None)
    v, d, e = c.vocab_size, c.d_model, 8
    assert count_params(c) == count_params(wide) - 2 * v * d + 2 * v * e + 2 * d * e
    params = init_params(c, jax.random.key(0))
    folded = {k: p for k, p in params.items() if k not in ("project_in", "project_out")}
    folded["token_embed"] = {"embedding": params["token_embed"]["embedding"] @ params["project_in"]["kernel"]}
    folded["lm_head"] = {"kernel": params["project_out"]["kernel"] @ params["lm_head"]["kernel"]}
    np.testing.assert_allclose(_logits(c, params), _logits(wide, folded), rtol=1e-4, atol=1e-5)


def test_embedding_norm_normalises_the_embeddings():
    """BLOOM: the stream starts from norm(E[t]) (here LayerNorm with a perturbed gain and bias)."""
    from zoo.model import init_params

    c = cfg(embedding_norm=True, norm_type="layernorm", norm_use_bias=True, tie_word_embeddings=False)
    params = init_params(c, jax.random.key(0))
    gain = 1 + 0.3 * jax.random.normal(jax.random.key(1), (c.d_model,))
    params["embed_norm"] = {"scale": gain, "bias": 0.1 * gain}
    table = np.asarray(params["token_embed"]["embedding"])
    mean, var = table.mean(-1, keepdims=True), table.var(-1, keepdims=True)
    normed = (table - mean) / np.sqrt(var + c.norm_eps) * np.asarray(gain) + 0.1 * np.asarray(gain)
    plain = {**{k: p for k, p in params.items() if k != "embed_norm"}, "token_embed": {"embedding": normed}}
    np.testing.assert_allclose(_logits(c, params), _logits(c.replace(embedding_norm=False), plain), atol=1e-5)


def test_logits_scale_multiplies_the_logits():
    """Cohere: logits = logit_scale * h E^T."""
    from zoo.model import init_params

    c = cfg(logits_scale=0.25)
    params = init_params(c, jax.random.key(0))
    np.testing.assert_allclose(_logits(c, params), 0.25 * _logits(c.replace(logits_scale=None), params), atol=1e-6)
    with pytest.raises(ValueError, match="logits_scale"):
        cfg(logits_scale=0.0)


def test_qk_norm_per_head_untied():
    """Command R+: each head normalised over head_dim by its own statistics, then a gain per (head, dim)."""
    c = cfg(norm_type="layernorm", qk_norm="per_head_untied")
    norm = Norm(c, axes=("heads", "head_dim"), stat_axes=1)
    x = jax.random.normal(jax.random.key(0), (1, 3, 4, 8))
    params = {"scale": 1 + jax.random.normal(jax.random.key(1), (4, 8))}
    y = np.asarray(norm.apply({"params": params}, x))
    xs = np.asarray(x)
    ref = (xs - xs.mean(-1, keepdims=True)) / np.sqrt(xs.var(-1, keepdims=True) + c.norm_eps)
    np.testing.assert_allclose(y, ref * np.asarray(params["scale"]), rtol=1e-5, atol=1e-5)
    p = jax.eval_shape(lambda: Attention(c.replace(num_kv_heads=2)).init(jax.random.key(0), X, jnp.arange(5)[None]))
    assert p["params"]["query_norm"]["scale"].value.shape == (4, 4)
    assert p["params"]["key_norm"]["scale"].value.shape == (2, 4)


@pytest.mark.slow  # ~9 s
def test_mlp_hidden_and_final_norm_dropout():
    """mlp_hidden_dropout drops the MLP's hidden units (inverted dropout: unbiased on average), and
    final_norm_dropout the stack's output after its final norm; without a dropout rng both are the identity."""
    cfg = ModelConfig(
        vocab_size=64,
        d_model=32,
        num_layers=2,
        num_heads=4,
        d_ff=64,
        max_seq_len=16,
        mlp_activations=("relu",),
        mlp_hidden_dropout=0.5,
    )
    mlp = Mlp(cfg)
    x = jax.random.normal(jax.random.key(0), (2, 8, 32))
    params = mlp.init(jax.random.key(1), x)
    plain = mlp.apply(params, x)
    dropped = [Mlp(cfg, deterministic=False).apply(params, x, rngs={"dropout": jax.random.key(i)}) for i in range(300)]
    assert not np.allclose(dropped[0], plain)
    np.testing.assert_allclose(np.mean(dropped, axis=0), plain, atol=0.15 * float(jnp.abs(plain).max()))
    model_cfg = cfg.replace(mlp_hidden_dropout=0.0, final_norm_dropout=0.5)
    model = zoo.build(model_cfg)
    tokens = jnp.zeros((1, 8), jnp.int32)
    variables = model.init(jax.random.key(0), tokens)
    a = model.apply(variables, tokens, rngs={"dropout": jax.random.key(0)})
    b = model.apply(variables, tokens, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(a, b) and np.allclose(model.apply(variables, tokens), model.apply(variables, tokens))


@pytest.mark.parametrize(
    "extra",
    [
        "plain",
        *(
            pytest.param(e, marks=pytest.mark.slow)  # ~4-7 s each
            for e in ("window", "soft_cap", "bias", "segments")
        ),
    ],
)
def test_blocked_causal_attention_equals_one_call(extra):
    """On the XLA path, causal attention over T >= 256 runs as query blocks that skip the masked upper triangle
    (zoo.layers.attend.causal_blocks): the same output as one call over all T x T scores with the causal
    mask given explicitly, with a window, soft-cap, bias or segment mask too."""
    from zoo.layers.attend import attend, causal_blocks, position_mask

    t = 520  # 4 blocks of 130, the last one uneven
    assert causal_blocks(t) == 4 and causal_blocks(128) == 1
    q, k, v = (jax.random.normal(jax.random.key(i), (2, t, 4, 8)) for i in range(3))
    k, v = k[:, :, :2], v[:, :, :2]  # grouped: 2 KV heads for 4 query heads
    kw = {"window": (99, 0)} if extra == "window" else {"soft_cap": 5.0} if extra == "soft_cap" else {}
    if extra == "bias":
        kw["bias"] = jax.random.normal(jax.random.key(4), (1, 4, t, t))
    pos = jnp.arange(t)[None]
    mask = position_mask(pos, pos, causal=True, window=kw.get("window"))
    if extra == "segments":
        seg = jnp.repeat(jnp.arange(2 * 13).reshape(2, 13), t // 13, axis=1)
        kw["mask"] = (seg[:, :, None] == seg[:, None, :])[:, None]
        mask = mask & kw["mask"]
    blocked = attend(q, k, v, scale=0.3, is_causal=True, impl="xla", **kw)
    whole = attend(q, k, v, scale=0.3, impl="xla", **{**kw, "window": None, "mask": mask})
    np.testing.assert_allclose(blocked, whole, atol=2e-6)
