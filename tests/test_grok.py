"""Grok-1 (configs/grok.yaml) against the released reference code, xai-org/grok-1 @ 7050ed2 (model.py, run.py).

Grok-1 has no Hugging Face class, so its ground truth is the release's Haiku forward pass. Haiku is not a
dependency here: `_release_logits` below is a float64 numpy transcription of that forward pass, function by
function, every step citing its lines of model.py (or run.py). zoo's fp32 logits must match it to 1e-4 on
random tokens, with every parameter redrawn so that each one matters: norm gains away from 1, query/key
kernels large enough that the 30 * tanh(x / 30) soft-cap bends the attention logits, router logits of order
one so that the top-2 choice and the gate values both vary from token to token.

What the transcription leaves out, on purpose:
  - 8-bit weights. The release's kernels come as QuantizedWeight8bit (weight, scales), multiplied back,
    `weight * scales`, before any matmul (model.py lines 333, 353, 561-575): a storage format. The MoE layer
    computes only with them (with plain kernels it returns its input, lines 359 and 394-396). The
    transcription takes the product, a plain float kernel, as zoo stores it.
  - bfloat16. The release runs in fprop_dtype bfloat16 (model.py line 1160) and casts the MoE gates to
    bfloat16 (line 391); float64 here is the model those casts round.
  - 8 experts. The release's expert matmuls hard-code one_hot(index, 8) (lines 334, 354), so they only run
    with 8 experts; with fewer the einsum shapes disagree. The transcription one-hots over num_experts, the
    same computation for 8, so that grok-tiny's 4 experts can be compared.
  - the KV cache (memory) and sharding constraints, which do not change the values.
  - pad masking. The release hides every key whose token id is <= pad_token = 0 (run.py line 27, model.py
    lines 1225 and 1336-1343); zoo has no pad token id (padding is marked by positions), so the tokens here are
    drawn from 1..vocab-1.

A property of Grok's block that the tests document: the RMSNorm after the MoE (model.py line 1095) divides
each token's expert mixture by its own RMS, so any per-token factor on the gates, such as renormalising the
top-2 probabilities to sum to one, cancels except through the norm's eps (1e-5). At ordinary scales the
renormalised router is indistinguishable (< 1e-3); the test that it disagrees therefore shrinks the expert
output kernels until the MoE output's mean square is of the order of eps, where the gates' scale shows.
"""

import math

import jax
import numpy as np
import pytest

import zoo
from zoo.model import path_names

# The release's constants, as run.py and model.py write them (not derived from zoo's config).
EMBEDDING_MULTIPLIER_SCALE = 78.38367176906169  # run.py line 32
OUTPUT_MULTIPLIER_SCALE = 0.5773502691896257  # run.py line 31
ATTN_OUTPUT_MULTIPLIER = 0.08838834764831845  # run.py line 40 (key_size 128, line 36)
MAX_ATTN_VAL = 30.0  # model.py line 864: fixed in MultiHeadAttention, not a config field
RMS_NORM_EPS = 1e-5  # model.py line 592 (RMSNorm's default; hk_rms_norm, line 495, passes none)
ROPE_BASE_EXPONENT = int(1e4)  # model.py line 801
PAD_TOKEN = 0  # run.py line 27

TOL = 1e-4  # fp32 zoo vs float64 transcription
BATCH, LENGTH = 2, 24


# ------------------------------------------------------------------------ the release, transcribed to numpy
def _rms_norm(x, scale):
    """RMSNorm.__call__ (model.py lines 600-624): scale * x * rsqrt(mean(x^2) + eps), no +1 on the scale."""
    mean_squared = np.mean(np.square(x), axis=-1, keepdims=True)  # line 617
    normed_inputs = x / np.sqrt(mean_squared + RMS_NORM_EPS)  # line 620
    return scale * normed_inputs  # line 622


def _rotate_half(x):
    """model.py lines 627-632."""
    x1, x2 = np.split(x, 2, axis=-1)
    return np.concatenate((-x2, x1), axis=-1)


def _rotary(x):
    """RotaryEmbedding.__call__ (model.py lines 655-691) on x [B, T, heads, dim], offset 0 (no memory,
    line 802): frequencies base^-(2i/dim) over the first half, the phase tiled to both halves, rotate-half."""
    dim = x.shape[-1]
    exponents = np.arange(0, dim, 2, dtype=np.float64)  # line 665
    inv_freq = 1.0 / (ROPE_BASE_EXPONENT ** (exponents / dim))  # lines 666-668
    t = np.arange(x.shape[1], dtype=np.float64)[None, :] + 0.0  # line 684, offset 0
    phase = np.einsum("bi,j->bij", t, inv_freq)  # line 685
    phase = np.tile(phase, reps=(1, 2))[:, :, None, :]  # line 686: [f_0..f_{d/2-1}, f_0..f_{d/2-1}]
    return x * np.cos(phase) + _rotate_half(x) * np.sin(phase)  # line 688


def _softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _gelu(x):
    """jax.nn.gelu with its default approximate=True (model.py lines 374 and 988 call it without arguments)."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _attention(x, mha, mask, num_q_heads, num_kv_heads, key_size, attn_output_multiplier, stats):
    """MHABlock -> MultiHeadAttention.__call__ (model.py lines 926-960, 720-891), self-attention, no memory."""
    b, t, _ = x.shape
    # _linear_projection (lines 893-911): bias-free Linear, then reshape to [B, T, heads, head size].
    query_heads = (x @ mha["query"]).reshape(b, t, num_q_heads, key_size)  # lines 774-781
    key_heads = (x @ mha["key"]).reshape(b, t, num_kv_heads, key_size)  # lines 784-791
    value_heads = (x @ mha["value"]).reshape(b, t, num_kv_heads, key_size)  # lines 792-799
    key_heads = _rotary(key_heads)  # line 802
    query_heads = _rotary(query_heads)  # line 803
    # Grouped query heads: query head i reads kv head i // (num_q_heads / num_kv_heads) (line 853).
    query_heads = query_heads.reshape(b, t, num_kv_heads, num_q_heads // num_kv_heads, key_size)
    attn_logits = np.einsum("...thHd,...Thd->...hHtT", query_heads, key_heads)  # line 860
    attn_logits = attn_logits * attn_output_multiplier  # line 863
    stats["max_abs_attn_logit"] = max(stats.get("max_abs_attn_logit", 0.0), float(np.abs(attn_logits).max()))
    attn_logits = MAX_ATTN_VAL * np.tanh(attn_logits / MAX_ATTN_VAL)  # lines 864-865
    attn_logits = np.where(mask[:, :, None, :, :], attn_logits, -1e30)  # lines 867, 875
    attn_weights = _softmax(attn_logits)  # line 876 (fp32 there, float64 here)
    attn = np.einsum("...hHtT,...Thd->...thHd", attn_weights, value_heads)  # line 879
    attn = attn.reshape(b, t, -1)  # line 882
    return attn @ mha["linear"]  # lines 885-891: bias-free Linear back to model_size


def _moe(x, layer, num_selected_experts, stats):
    """Router + MoELayer._inference_call (model.py lines 230-269, 293-397) with DenseBlock experts
    (lines 972-1007): softmax over all experts, top-k of the probabilities as gates, not renormalised."""
    num_experts = layer["router"].shape[-1]
    routing_logits = x @ layer["router"]  # lines 241, 268 (fp32 in the release, line 238)
    routing_probs = _softmax(routing_logits)  # line 243; the padding_mask is not passed (line 400)
    # jax.lax.top_k (line 298): the k largest, ties to the lower index.
    expert_index = np.argsort(-routing_probs, axis=-1, kind="stable")[..., :num_selected_experts]
    expert_gate = np.take_along_axis(routing_probs, expert_index, axis=-1)
    ranked = np.sort(routing_probs, axis=-1)[..., ::-1]
    if num_selected_experts < num_experts:  # how far fp32 is from choosing other experts
        gap = float(np.min(ranked[..., num_selected_experts - 1] - ranked[..., num_selected_experts]))
        stats["min_routing_gap"] = min(stats.get("min_routing_gap", 1.0), gap)
    # broad_inputs (lines 299-303): each token once per chosen expert; moe_slow_matmul1/2 (lines 332-357) apply
    # the chosen expert's kernel to each copy (one_hot over 8 there, over num_experts here: see the docstring).
    one_hot = np.eye(num_experts)[expert_index][..., None]  # [B, T, k, E, 1]

    def expert_matmul(h, kernels):  # h [B, T, k, in], kernels [E, in, out]: each copy through its expert
        return sum(one_hot[..., e, :] * (h @ kernels[e]) for e in range(num_experts))

    broad_inputs = np.repeat(x[:, :, None, :], num_selected_experts, axis=2)
    h_v = expert_matmul(broad_inputs, layer["moe"]["linear_v"])  # lines 360-366 (DenseBlock linear_v, line 978)
    h_w1 = _gelu(expert_matmul(broad_inputs, layer["moe"]["linear"]))  # lines 367-374 (DenseBlock linear, line 988)
    out = expert_matmul(h_w1 * h_v, layer["moe"]["linear_1"])  # lines 375-381 (DenseBlock linear_1, line 999)
    out = expert_gate[..., None] * out  # line 391
    return np.sum(out, axis=2)  # line 392


def _decoder_layer(h, layer, mask, cfg, attn_output_multiplier, stats):
    """DecoderLayer.__call__ (model.py lines 1030-1102): four RMSNorms, before and after each sublayer, the
    "after" one on the sublayer's output before the residual add."""
    attn = _attention(
        _rms_norm(h, layer["rms_norm"]),  # line 1056
        layer["multi_head_attention"],
        mask,
        cfg["num_q_heads"],
        cfg["num_kv_heads"],
        cfg["key_size"],
        attn_output_multiplier,
        stats,
    )
    h = h + _rms_norm(attn, layer["rms_norm_1"])  # lines 1059-1060
    h_dense = _moe(_rms_norm(h, layer["rms_norm_2"]), layer, cfg["num_selected_experts"], stats)  # 1083-1091
    return h + _rms_norm(h_dense, layer["rms_norm_3"])  # lines 1095-1096


def _release_logits(
    tokens, weights, cfg, *, embedding_multiplier_scale, output_multiplier_scale, attn_output_multiplier
):
    """LanguageModel.__call__ (model.py lines 1211-1279) -> Transformer.__call__ (lines 1326-1398).
    Returns (logits [B, T, vocab] float64, stats: the largest |attention logit| before the soft-cap and the
    smallest gap between the k-th and (k+1)-th routing probability)."""
    stats = {}
    tokens = np.asarray(tokens)
    input_mask = tokens > PAD_TOKEN  # line 1225
    embeddings = weights["embeddings"]  # InOutEmbed (lines 1110-1143): one table for input and output
    h = embeddings[tokens] * embedding_multiplier_scale  # lines 1233, 1237
    seq_len = tokens.shape[1]
    mask = input_mask[:, None, None, :]  # line 1337
    causal_mask = np.tril(np.ones((1, 1, seq_len, seq_len)))  # lines 1340-1342
    mask = (mask * causal_mask).astype(bool)  # line 1343
    for layer in weights["layers"]:  # lines 1380-1393
        h = _decoder_layer(h, layer, mask, cfg, attn_output_multiplier, stats)
    h = _rms_norm(h, weights["rms_norm"])  # line 1252
    out = h @ embeddings.T  # decode (line 1143), line 1267: tied weights
    return out * output_multiplier_scale, stats  # line 1269


# ------------------------------------------------------------------------------------------- zoo's side
def _redraw(cfg, seed=0, expert_out_scale=1.0):
    """zoo.init_params' tree (its shapes, through jax.eval_shape, since every value is replaced) with each
    parameter drawn in float32 at a scale where it matters: norm gains U(0.5, 1.5); query/key kernels
    2 / sqrt(d_model), so that the largest attention logits reach the soft-cap's bend; the rest 1 / sqrt(fan-in),
    the expert output kernels times `expert_out_scale`; the embedding 1 / sqrt(d_model), so that the embedding
    times the multiplier sqrt(d_model) is of the order of the normed sublayer outputs it is added to."""
    params = jax.eval_shape(lambda: zoo.init_params(cfg, jax.random.key(0)))
    rng = np.random.default_rng(seed)
    d, hidden = cfg.d_model, cfg.num_heads * cfg.head_dim

    def draw(path, leaf):
        names = path_names(path)
        std = {
            "scale": None,
            "embedding": 1 / math.sqrt(d),
            "query": 2 / math.sqrt(d),
            "key": 2 / math.sqrt(d),
            "value": 1 / math.sqrt(d),
            "out": 1 / math.sqrt(hidden),
            "router": 1 / math.sqrt(d),
            "wi_0": 1 / math.sqrt(d),
            "wi_1": 1 / math.sqrt(d),
            "wo": expert_out_scale / math.sqrt(cfg.d_expert),
        }[names[-1] if names[-1] in ("scale", "embedding") else names[-2]]
        if std is None:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, params)


def _release_weights(cfg, params):
    """zoo's param tree as the release's tensors (Haiku names; the four norms of a layer are created in the
    order rms_norm, rms_norm_1, rms_norm_2, rms_norm_3, model.py lines 137-140 and 1039-1095), in float64.
    The scanned stack holds layer i at index i of each leaf's leading [cycles] axis (cycle_length 1 here)."""
    assert cfg.cycle_length == 1
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    blocks = params["decoder"]["cycles"]["block_0"]
    attention, moe = blocks["attention"], blocks["moe"]
    layers = []
    for i in range(cfg.num_layers):
        d, h, kv, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        layers.append(
            {
                "rms_norm": f64(blocks["attn_norm"]["scale"][i]),
                "multi_head_attention": {
                    "query": f64(attention["query"]["kernel"][i]).reshape(d, h * hd),  # [D, H, hd] -> [D, H*hd]
                    "key": f64(attention["key"]["kernel"][i]).reshape(d, kv * hd),
                    "value": f64(attention["value"]["kernel"][i]).reshape(d, kv * hd),
                    "linear": f64(attention["out"]["kernel"][i]).reshape(h * hd, d),  # [H, hd, D] -> [H*hd, D]
                },
                "rms_norm_1": f64(blocks["attn_post_norm"]["scale"][i]),
                "rms_norm_2": f64(blocks["mlp_norm"]["scale"][i]),
                "router": f64(moe["router"]["kernel"][i]),  # [D, E]
                "moe": {
                    "linear": f64(moe["wi_0"]["kernel"][i]),  # [E, D, F]: the gelu branch, DenseBlock's "linear"
                    "linear_v": f64(moe["wi_1"]["kernel"][i]),  # [E, D, F]: the linear branch
                    "linear_1": f64(moe["wo"]["kernel"][i]),  # [E, F, D]
                },
                "rms_norm_3": f64(blocks["mlp_post_norm"]["scale"][i]),
            }
        )
    return {
        "embeddings": f64(params["token_embed"]["embedding"]),  # [vocab, D]
        "layers": layers,
        "rms_norm": f64(params["decoder"]["final_norm"]["scale"]),
    }


def _tokens(cfg, seed=1):
    """[BATCH, LENGTH] ids in 1..vocab-1: none is the release's pad token 0 (see the module docstring)."""
    return np.random.default_rng(seed).integers(PAD_TOKEN + 1, cfg.vocab_size, (BATCH, LENGTH)).astype(np.int32)


_JITTED = {}


def _zoo_logits(cfg, params, tokens):
    """zoo's logits, float64 for the comparison: one compiled apply per config."""
    if cfg not in _JITTED:
        _JITTED[cfg] = jax.jit(zoo.build(cfg).apply)
    return np.asarray(_JITTED[cfg]({"params": params}, tokens), np.float64)


def _ffn_size(emb_size, widening_factor):
    """model.py lines 85-89: the expert width of a TransformerConfig."""
    size = int(widening_factor * emb_size) * 2 // 3
    return size + (8 - size) % 8


# The release's TransformerConfig for each model compared (model.py lines 420-443). grok-1 is run.py's (lines
# 33-48). grok-tiny: its widening factor 4.5 gives zoo's d_ff 384. "release-width": grok-tiny at grok-1's width
# 6144 and head size 128, where run.py's three multipliers apply as written; 4 query and 2 kv heads, and widening
# 1/64 (64 hidden units per expert), so that it stays small.
RELEASE_CONFIGS = {
    "grok-1": dict(
        emb_size=48 * 128,
        widening_factor=8,
        key_size=128,
        num_q_heads=48,
        num_kv_heads=8,
        num_layers=64,
        num_experts=8,
        num_selected_experts=2,
        vocab_size=128 * 1024,  # run.py line 26
        sequence_len=8192,  # run.py line 29
    ),
    "grok-tiny": dict(
        emb_size=128,
        widening_factor=4.5,
        key_size=32,
        num_q_heads=4,
        num_kv_heads=2,
        num_layers=2,
        num_experts=4,
        num_selected_experts=2,
        vocab_size=512,
    ),
    "release-width": dict(
        emb_size=6144,
        widening_factor=1 / 64,
        key_size=128,
        num_q_heads=4,
        num_kv_heads=2,
        num_layers=2,
        num_experts=4,
        num_selected_experts=2,
        vocab_size=512,
    ),
}


def _zoo_config(name):
    if name == "release-width":
        return zoo.get_config("grok-tiny").replace(d_model=6144, head_dim=128, d_ff=64)
    return zoo.get_config(name)


def _assert_shapes_match(cfg, release):
    assert (cfg.d_model, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads) == (
        release["emb_size"],
        release["key_size"],
        release["num_q_heads"],
        release["num_kv_heads"],
    )
    assert (cfg.num_layers, cfg.num_experts, cfg.experts_per_token, cfg.vocab_size) == (
        release["num_layers"],
        release["num_experts"],
        release["num_selected_experts"],
        release["vocab_size"],
    )
    assert cfg.d_expert == _ffn_size(release["emb_size"], release["widening_factor"])


# Multipliers passed to the transcription. run.py's values are sqrt(emb_size), 1/sqrt(key_size) and 1/sqrt(3) at
# grok-1's sizes (test_run_py_multipliers); at grok-tiny's width the first two follow that reading (zoo's
# scale_embeddings and default query scale), while "release-width" uses run.py's literals as they are.
MULTIPLIERS = {
    "grok-tiny": dict(
        embedding_multiplier_scale=math.sqrt(128),
        output_multiplier_scale=OUTPUT_MULTIPLIER_SCALE,
        attn_output_multiplier=32**-0.5,
    ),
    "release-width": dict(
        embedding_multiplier_scale=EMBEDDING_MULTIPLIER_SCALE,
        output_multiplier_scale=OUTPUT_MULTIPLIER_SCALE,
        attn_output_multiplier=ATTN_OUTPUT_MULTIPLIER,
    ),
}

_CASES = {}


def _case(name, expert_out_scale=1.0):
    """(zoo config, params, tokens, release logits, stats), built once per (model, scale)."""
    key = (name, expert_out_scale)
    if key not in _CASES:
        cfg = _zoo_config(name)
        release = RELEASE_CONFIGS[name]
        _assert_shapes_match(cfg, release)
        params = _redraw(cfg, expert_out_scale=expert_out_scale)
        tokens = _tokens(cfg)
        ref, stats = _release_logits(tokens, _release_weights(cfg, params), release, **MULTIPLIERS[name])
        _CASES[key] = cfg, params, tokens, ref, stats
    return _CASES[key]


# ----------------------------------------------------------------------------------------------------- tests
def test_grok1_preset_is_run_py_config():
    """grok-1's shapes are run.py's TransformerConfig, the expert width model.py's ffn_size(6144, 8) = 32768;
    every knob the forward pass reads is the release's."""
    cfg = zoo.get_config("grok-1")
    release = RELEASE_CONFIGS["grok-1"]
    _assert_shapes_match(cfg, release)
    assert cfg.d_expert == 32768 and cfg.max_seq_len == release["sequence_len"]
    assert (cfg.norm_position, cfg.norm_type, cfg.norm_eps, cfg.norm_scale_plus_one) == (
        "double",
        "rmsnorm",
        1e-5,
        False,
    )
    assert cfg.final_norm and cfg.tie_word_embeddings and cfg.position_embedding == "rope"
    assert (cfg.rope_theta, cfg.rope_fraction, cfg.rope_interleaved, cfg.rope_scaling) == (1e4, 1.0, False, "none")
    assert not (cfg.attention_bias or cfg.mlp_bias or cfg.router_bias or cfg.qk_norm != "none")
    assert cfg.mlp_activations == ("gelu_tanh", "linear") and cfg.shared_expert_d_ff == 0
    assert (cfg.router, cfg.router_renormalize, cfg.moe_pattern) == ("softmax_topk", False, ("moe",))
    assert cfg.capacity_factor is None and cfg.eval_capacity_factor is None  # the release drops no token
    assert cfg.attn_logits_soft_cap == MAX_ATTN_VAL and cfg.final_logits_soft_cap is None


def test_run_py_multipliers():
    """run.py's three multipliers are, to the last bit, sqrt(6144), 128^-0.5 and 3^-0.5: the values zoo's
    scale_embeddings, default query scale and logits_scale give at grok-1's d_model 6144 and head_dim 128
    (the release-width comparison below runs them through zoo's forward pass)."""
    cfg = zoo.get_config("grok-1")
    assert math.sqrt(cfg.d_model) == EMBEDDING_MULTIPLIER_SCALE
    assert cfg.head_dim**-0.5 == ATTN_OUTPUT_MULTIPLIER and cfg.query_scale is None
    assert cfg.logits_scale == OUTPUT_MULTIPLIER_SCALE == 3**-0.5


@pytest.mark.parametrize("name, expert_out_scale", [("grok-tiny", 1.0), ("grok-tiny", 0.01), ("release-width", 1.0)])
def test_matches_release(name, expert_out_scale):
    """zoo's fp32 logits = the float64 transcription of the release to 1e-4, with expert outputs at their
    ordinary scale and at one where the post-MoE RMSNorm's eps matters (see the module docstring)."""
    cfg, params, tokens, ref, stats = _case(name, expert_out_scale)
    # The comparison means something: the soft-cap bends the largest attention logits (30 tanh(x / 30) is
    # 7% below x at x = 15), and no top-2 choice is near enough a tie for fp32 to choose other experts.
    assert stats["max_abs_attn_logit"] > MAX_ATTN_VAL / 2, stats
    assert stats["min_routing_gap"] > 1e-4, stats
    assert np.abs(ref).max() > 1.0
    diff = np.abs(_zoo_logits(cfg, params, tokens) - ref).max()
    assert diff < TOL, f"{name}: max |zoo - release| = {diff:.2e}"


def test_renormalised_gates_disagree():
    """Renormalising the top-2 gates (as Mixtral does) is not the release's router (model.py lines 243, 298):
    where the MoE output's mean square is of the order of the RMSNorm's eps it changes the logits by far more
    than the tolerance. At ordinary scales the post-MoE RMSNorm cancels the gates' per-token sum (only eps
    keeps it), and the difference is below 1e-3: the detail binds only through eps in Grok's block."""
    cfg, params, tokens, ref, _ = _case("grok-tiny", 0.01)
    renormalised = cfg.replace(router_renormalize=True)
    assert np.abs(_zoo_logits(renormalised, params, tokens) - ref).max() > 1e-2
    cfg, params, tokens, ref, _ = _case("grok-tiny", 1.0)
    assert np.abs(_zoo_logits(renormalised, params, tokens) - ref).max() < 1e-3


@pytest.mark.parametrize(
    "change, threshold",
    [
        (dict(experts_per_token=1), 1e-2),  # top-1 routing (Switch) instead of the release's top-2
        (dict(attn_logits_soft_cap=None), 1e-2),  # no soft-cap (model.py lines 864-865)
        (dict(rope_interleaved=True), 1e-2),  # GPT-J's pairs instead of rotate-half (lines 627-632, 688)
        (dict(norm_eps=1e-6), 1e-2),  # RMSNorm's eps (line 592)
        (dict(scale_embeddings=False), 1e-2),  # no embedding_multiplier_scale (line 1237)
        # erf GELU instead of jax.nn.gelu's tanh approximation: a small change (~5e-4 here), still 3x TOL.
        (dict(mlp_activations=("gelu", "linear")), 3 * TOL),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else "",
)
def test_knob_binds(change, threshold):
    """Each detail of the release matters in this comparison: zoo with it changed misses the transcription."""
    cfg, params, tokens, ref, _ = _case("grok-tiny", 0.01)
    diff = np.abs(_zoo_logits(cfg.replace(**change), params, tokens) - ref).max()
    assert diff > threshold, f"{change}: {diff:.2e}"
