"""DBRX (DbrxForCausalLM: databricks/dbrx-base, dbrx-instruct): a pre-LayerNorm decoder (LayerNorms with a gain
and no bias, eps 1e-5), GQA with q, k and v fused in one Wqkv and clamped to [-clip_qkv, clip_qkv] before RoPE, and
in every layer a mixture of 16 SwiGLU experts, 4 per token (Databricks 2024, "Introducing DBRX";
transformers models/dbrx/{configuration,modeling}_dbrx.py, the same layout as databricks/dbrx model/).

Config: nested. attn_config {clip_qkv, kv_n_heads, attn_pdrop, rope_theta (transformers 4.x and DBRX's own code)},
ffn_config {ffn_hidden_size, moe_num_experts, moe_top_k, ffn_act_fn {name}, moe_normalize_expert_weights,
moe_jitter_eps, moe_loss_weight}. RoPE: transformers 5 reads only the top-level rope_parameters, and builds the
released config.json (which has none: attn_config.rope_theta 500000) with the class default base 10000, not the
base DBRX was trained with; this converter reads rope_parameters when present, else attn_config.rope_theta, and
refuses a config whose two differ. It writes both.

Router (DbrxFFN.route_tokens_to_experts): softmax over every expert, the top k, divided by their L_p norm with
p = moe_normalize_expert_weights. The weights are positive, so p = 1 is division by their sum (the zoo's
softmax_topk with router_renormalize) and null is no division; any other p is refused.

Experts, as stored: ffn.experts.mlp.{w1, v1, w2}, each [E * f, d] with expert e in rows e f .. (e + 1) f; the
expert computes (silu(x w1_e^T) * x v1_e^T) w2_e, so w1 (gate) and v1 (up) are transposed Linear weights and w2
(down) is already [f, d], the zoo's wo kernel as it is.

Training-only: moe_loss_weight is load_balancing_multiplier (HF 5 adds it with output_router_logits);
moe_jitter_eps is router_jitter (DBRX's code jitters the router's input only, as the zoo does; transformers 5's
DbrxRouter scales its input in place, so the experts see the noise too).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.hf import llama
from zoo.hf.core import (
    DECODER,
    HF_ACTIVATIONS,
    TRANSPOSE,
    Family,
    HFConfig,
    Weights,
    embedding_rules,
    hf_activation,
    linear_in,
    norm_rules,
    rule,
)
from zoo.hf.mixtral import MOE_FIXED

# DbrxAttentionConfig's and DbrxFFNConfig's defaults (transformers 5; rope_theta: transformers 4.x's).
ATTN_DEFAULTS = {"attn_pdrop": 0.0, "clip_qkv": None, "kv_n_heads": 1, "rope_theta": 10000.0}
FFN_DEFAULTS = {
    "ffn_act_fn": {"name": "silu"},
    "ffn_hidden_size": 3584,
    "moe_num_experts": 4,
    "moe_top_k": 1,
    "moe_jitter_eps": None,
    "moe_loss_weight": 0.01,
    "moe_normalize_expert_weights": 1.0,
    "uniform_expert_assignment": False,  # DBRX's own configuration_dbrx.py only: a load-testing switch
}
LAYER = "transformer.blocks.{i}"


# ============================================================================================ weights
def _fused_qkv(heads: int, kv_heads: int, head_dim: int):
    """Wqkv [(heads + 2 kv_heads) head_dim, d] (rows: q, then k, then v) <-> query [d, heads, head_dim], key and
    value [d, kv_heads, head_dim]."""
    sizes = (heads * head_dim, kv_heads * head_dim)

    def to_zoo(w):
        q, k, v = np.split(w, [sizes[0], sizes[0] + sizes[1]])
        return q.T.reshape(-1, heads, head_dim), *(x.T.reshape(-1, kv_heads, head_dim) for x in (k, v))

    def to_hf(q, k, v):
        xp = np if isinstance(q, np.ndarray) else jnp  # numpy when writing, jnp under eval_shape
        return (xp.concatenate([x.reshape(x.shape[0], -1).T for x in (q, k, v)], axis=0),)

    return to_zoo, to_hf


def _experts_in(num_experts: int):
    """w1 / v1 [E f, d] (expert e's Linear weight [f, d] in rows e f ..) <-> kernel [E, d, f]."""

    def to_zoo(w):
        return (w.reshape(num_experts, -1, w.shape[-1]).transpose(0, 2, 1),)

    def to_hf(k):
        return (k.transpose(0, 2, 1).reshape(-1, k.shape[1]),)

    return to_zoo, to_hf


def _experts_out(num_experts: int):
    """w2 [E f, d] (expert e's [f, d], applied as h @ w2_e) <-> kernel [E, f, d]: a reshape."""
    return (lambda w: (w.reshape(num_experts, -1, w.shape[-1]),), lambda k: (k.reshape(-1, k.shape[-1]),))


def _weights(cfg: ModelConfig) -> Weights:
    h, kv, hd, e = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.num_experts
    qkv = ("attention/query/kernel", "attention/key/kernel", "attention/value/kernel")
    attn, ffn = f"{LAYER}.norm_attn_norm", f"{LAYER}.ffn"
    layer = [
        *norm_rules(f"{attn}.norm_1", "attn_norm", cfg),
        rule(f"{attn}.attn.Wqkv.weight", list(qkv), _fused_qkv(h, kv, hd)),
        rule(f"{attn}.attn.out_proj.weight", "attention/out/kernel", linear_in(h, hd)),
        *norm_rules(f"{attn}.norm_2", "mlp_norm", cfg),
        rule(f"{ffn}.router.layer.weight", "moe/router/kernel", TRANSPOSE),
        rule(f"{ffn}.experts.mlp.w1", "moe/wi_0/kernel", _experts_in(e)),
        rule(f"{ffn}.experts.mlp.v1", "moe/wi_1/kernel", _experts_in(e)),
        rule(f"{ffn}.experts.mlp.w2", "moe/wo/kernel", _experts_out(e)),
    ]
    top = embedding_rules(cfg, "transformer.wte.weight") + norm_rules("transformer.norm_f", "decoder/final_norm", cfg)
    return Weights(top, [("decoder", cfg.num_layers, layer)])


# ============================================================================================ configs
def _sub(hf: HFConfig, field: str, defaults: dict) -> dict:
    """attn_config / ffn_config with the class defaults filled in (transformers 5 also writes every generic
    PreTrainedConfig key into them: id2label, dtype, ..., which nothing reads)."""
    values = hf.get(field) or {}
    if not isinstance(values, dict):
        hf.fail(field, "must be a dict")
    return {**defaults, **{k: v for k, v in values.items() if k in defaults}}


def _positive_int(hf: HFConfig, field: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        hf.fail(field, "must be a positive integer")
    return value


def _rope(hf: HFConfig, attn: dict) -> dict:
    """transformers 5's rope_parameters when present, else attn_config.rope_theta (4.x, DBRX's code); both present
    and different is refused: the two libraries would build different models from the file."""
    legacy = float(attn["rope_theta"])
    params = hf.get("rope_parameters")
    if not params:
        return {"rope_theta": legacy, "rope_scaling": "none"}
    out = llama.rope_params_to_zoo(hf, "rope_parameters", params)
    if "rope_theta" in (hf.get("attn_config") or {}) and legacy != out["rope_theta"]:
        hf.fail(
            "attn_config.rope_theta",
            f"differs from rope_parameters.rope_theta={out['rope_theta']!r} (transformers 5 reads that one, "
            "transformers 4.x and DBRX's own code this one); make them equal",
        )
    if params.get("partial_rotary_factor") not in (None, 1, 1.0):
        hf.fail("rope_parameters.partial_rotary_factor", "DBRX's attention rotates the whole head")
    return out


def _to_zoo(hf: HFConfig) -> dict:
    attn, ffn = _sub(hf, "attn_config", ATTN_DEFAULTS), _sub(hf, "ffn_config", FFN_DEFAULTS)
    act = ffn["ffn_act_fn"] or {"name": "silu"}
    if not isinstance(act, dict) or set(act) - {"name"} or act.get("name", "silu") not in HF_ACTIVATIONS:
        hf.fail("ffn_config.ffn_act_fn", f"needs {{name: one of {', '.join(HF_ACTIVATIONS)}}} and nothing else")
    p = ffn["moe_normalize_expert_weights"]
    if p not in (None, 1, 1.0):
        hf.fail(
            "ffn_config.moe_normalize_expert_weights",
            "the zoo divides the top-k weights by their sum (p = 1) or not at all (null); no other L_p norm",
        )
    if ffn["uniform_expert_assignment"]:
        hf.fail("ffn_config.uniform_expert_assignment", "round-robin expert assignment is not in the zoo")
    experts = _positive_int(hf, "ffn_config.moe_num_experts", ffn["moe_num_experts"])
    k = ffn["moe_top_k"]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= experts:
        hf.fail("ffn_config.moe_top_k", f"must be in 1..ffn_config.moe_num_experts={experts}")
    d, heads = hf.get("d_model", 2048), hf.get("n_heads", 16)
    kv = _positive_int(hf, "attn_config.kv_n_heads", attn["kv_n_heads"])
    if heads % kv:
        hf.fail("attn_config.kv_n_heads", f"must divide n_heads={heads}")
    if d % heads:
        hf.fail("n_heads", f"must divide d_model={d} (DBRX's head width is d_model / n_heads)")
    clip = attn["clip_qkv"]
    if clip is not None and not clip > 0:
        hf.fail("attn_config.clip_qkv", "must be > 0 or null")
    return {
        "num_kv_heads": kv,
        "clip_qkv": None if clip is None else float(clip),
        "attention_dropout": float(attn["attn_pdrop"]),
        "d_ff": _positive_int(hf, "ffn_config.ffn_hidden_size", ffn["ffn_hidden_size"]),
        "mlp_activations": (HF_ACTIVATIONS[act.get("name", "silu")], "linear"),
        "num_experts": experts,
        "experts_per_token": k,
        "router_renormalize": p is not None,
        "router_jitter": float(ffn["moe_jitter_eps"] or 0.0),
        "load_balancing_multiplier": float(ffn["moe_loss_weight"]),
        **_rope(hf, attn),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    theta = cfg.rope_theta
    return {
        "attn_config": {
            "attn_pdrop": cfg.attention_dropout,
            "clip_qkv": cfg.clip_qkv,
            "kv_n_heads": cfg.num_kv_heads,
            "rope_theta": theta,
        },
        "ffn_config": {
            # One width for every MLP: ffn_hidden_size is the experts' (a zoo d_ff that differs from d_expert is
            # unused here, and comes back equal to it: family_of names the field).
            "ffn_hidden_size": cfg.d_expert,
            "ffn_act_fn": {"name": hf_activation(cfg.mlp_activations[0])},
            "moe_num_experts": cfg.num_experts,
            "moe_top_k": cfg.experts_per_token,
            "moe_normalize_expert_weights": 1.0 if cfg.router_renormalize else None,
            "moe_jitter_eps": cfg.router_jitter or None,
            "moe_loss_weight": cfg.load_balancing_multiplier,
        },
        "rope_parameters": {**llama.rope_params_to_hf(cfg), "rope_theta": theta},
        "router_aux_loss_coef": cfg.load_balancing_multiplier,  # what DBRX's own modeling_dbrx.py reads
    }


FAMILY = Family(
    model_type="dbrx",
    hf_class="DbrxForCausalLM",
    prefix="transformer.",
    # HF DbrxConfig's defaults.
    renames={
        "vocab_size": ("vocab_size", 32000),
        "d_model": ("d_model", 2048),
        "n_layers": ("num_layers", 24),
        "n_heads": ("num_heads", 16),
        "max_seq_len": ("max_seq_len", 2048),
        "resid_pdrop": ("residual_dropout", 0.0),
        "emb_pdrop": ("embedding_dropout", 0.0),
        "initializer_range": ("init_std", 0.02),
    },
    fixed={
        **DECODER,
        "norm_position": "pre",
        "norm_type": "layernorm",
        "norm_use_bias": False,  # nn.LayerNorm(d, bias=False)
        "norm_eps": 1e-5,  # nn.LayerNorm's default
        "norm_scale_plus_one": False,
        "head_dim": None,
        "attention_bias": False,
        "attention_out_bias": None,
        "qk_norm": "none",
        "attn_logits_soft_cap": None,
        "final_logits_soft_cap": None,
        "logits_scale": None,
        "query_scale": None,
        "attention_pattern": ("global",),
        "position_embedding": "rope",
        "rope_fraction": 1.0,
        "rope_interleaved": False,
        "scale_embeddings": False,
        "embedding_norm": False,
        "embedding_dim": None,
        "lm_head_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        **MOE_FIXED,
        "moe_pattern": ("moe",),
        "d_expert": None,
        "shared_expert_d_ff": 0,
    },
    # DbrxConfig.validate_architecture refuses a tied head.
    unsupported={"tie_word_embeddings": (False,)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
    weights=_weights,
    embedding="transformer.wte.weight",
    ignored=(r"rotary_emb\.inv_freq$",),
)
