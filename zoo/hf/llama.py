"""LLaMA (LlamaForCausalLM): pre-RMSNorm, RoPE (default, linear or llama3 scaling), SwiGLU MLP, GQA/MQA,
explicit head_dim, optional biases. Also what Gemma 2, OLMo 2, Mistral, Qwen and Phi-3 share with it: tensor
names, config field names and defaults, the RoPE config and the gated MLP (`llama_like_family`, ...)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from zoo.config import ModelConfig
from zoo.hf.core import (
    DECODER,
    Family,
    HFConfig,
    Rule,
    Weights,
    activation,
    attention_rules,
    embedding_rules,
    hf_activation,
    mlp_rules,
    norm_rules,
)

# ======================================================================================= RoPE and MLP
_ROPE_TYPES = {"default": "none", "linear": "linear", "llama3": "llama3", "yarn": "yarn"}


def rope_to_zoo(hf: HFConfig, partial: tuple[str, float, int] | None = None, theta: str = "rope_theta") -> dict:
    """RoPE: transformers 5 writes `rope_parameters` {rope_type, rope_theta, ...}; 4.x wrote `theta` (GPT-NeoX:
    rotary_emb_base) plus an optional `rope_scaling` {type | rope_type, factor, ...}. `partial` = (4.x field, HF
    default, head_dim) for a family whose attention rotates partial_rotary_factor of each head (GPT-NeoX's
    rotary_pct, Nemotron); without it any fraction but 1 is refused."""
    field, params = "rope_parameters", hf.get("rope_parameters")
    if not params:
        field, params = "rope_scaling", dict(hf.get("rope_scaling") or {})
        params.setdefault("rope_theta", hf.get(theta, 10000.0))
    if "full_attention" in params or "sliding_attention" in params:
        hf.fail(field, "per-layer-type RoPE parameters are not supported for this family")
    out = rope_params_to_zoo(hf, field, params)
    if partial:
        name, default, head_dim = partial
        where = f"{field}.partial_rotary_factor" if "partial_rotary_factor" in params else name
        out["rope_fraction"] = float(params.get("partial_rotary_factor", hf.get(name, default)))
        rotary = head_dim * out["rope_fraction"]
        if not 0 < rotary <= head_dim or rotary != int(rotary) or int(rotary) % 2:
            hf.fail(where, f"must rotate a whole, even number of the {head_dim} head dims")
        return out
    for where, value in (
        ("partial_rotary_factor", hf.get("partial_rotary_factor")),
        (f"{field}.partial_rotary_factor", params.get("partial_rotary_factor")),
    ):
        if value not in (None, 1, 1.0):
            hf.fail(where, f"partial rotary ({value}) is not applied by this HF family's attention")
    return out


def rope_params_to_zoo(hf: HFConfig, field: str, params: dict) -> dict:
    """One RoPE parameter dict {rope_type | type, rope_theta, factor, ...} (HF field `field`) -> zoo fields."""
    key = "rope_type" if "rope_type" in params else "type"
    kind = params.get(key, "default")
    if kind not in _ROPE_TYPES:
        hf.fail(f"{field}.{key}", f"RoPE scaling {kind!r} is not in the zoo; supported: {', '.join(_ROPE_TYPES)}")
    out = {"rope_theta": float(params.get("rope_theta", 10000.0)), "rope_scaling": _ROPE_TYPES[kind]}
    if kind == "yarn":
        return {**out, **_yarn_to_zoo(hf, field, params)}
    if kind != "default":
        out["rope_scaling_factor"] = float(params["factor"])
    if kind == "llama3":
        out.update(
            rope_low_freq_factor=float(params["low_freq_factor"]),
            rope_high_freq_factor=float(params["high_freq_factor"]),
            rope_original_max_len=int(params["original_max_position_embeddings"]),
        )
    return out


def _yarn_to_zoo(hf: HFConfig, field: str, params: dict) -> dict:
    """YaRN's parameters as transformers' _compute_yarn_parameters reads them (src/transformers/
    modeling_rope_utils.py): a missing factor is max_position_embeddings / original_max_position_embeddings;
    the attention factor is attention_factor, else mscale / mscale_all_dim's ratio of yarn_get_mscale, else the
    paper's 0.1 ln(factor) + 1 (null here); beta_fast and beta_slow default to 32 and 1 (also when 0)."""
    original = params.get("original_max_position_embeddings") or hf.get("max_position_embeddings")
    if not isinstance(original, int) or original < 1:
        hf.fail(f"{field}.original_max_position_embeddings", "yarn needs the pretraining context length")
    factor = params.get("factor") or hf.get("max_position_embeddings") / original
    attention = params.get("attention_factor")
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
    if attention is None and mscale and mscale_all_dim:

        def get_mscale(m: float) -> float:
            return 0.1 * m * math.log(factor) + 1.0 if factor > 1 else 1.0

        attention = get_mscale(mscale) / get_mscale(mscale_all_dim)
    return {
        "rope_scaling_factor": float(factor),
        "rope_original_max_len": original,
        "rope_yarn_beta_fast": float(params.get("beta_fast") or 32.0),
        "rope_yarn_beta_slow": float(params.get("beta_slow") or 1.0),
        "rope_yarn_truncate": bool(params.get("truncate", True)),
        "rope_attention_factor": None if attention is None else float(attention),
    }


def rope_params_to_hf(cfg: ModelConfig) -> dict:
    """The zoo's RoPE scaling as one HF parameter dict {rope_type, factor, ...} (rope_theta left to the caller)."""
    kind = {v: k for k, v in _ROPE_TYPES.items()}[cfg.rope_scaling]
    scaling: dict[str, Any] = {"rope_type": kind}
    if kind != "default":
        scaling["factor"] = cfg.rope_scaling_factor
    if kind == "llama3":
        scaling.update(
            low_freq_factor=cfg.rope_low_freq_factor,
            high_freq_factor=cfg.rope_high_freq_factor,
            original_max_position_embeddings=cfg.rope_original_max_len,
        )
    if kind == "yarn":
        scaling.update(
            original_max_position_embeddings=cfg.rope_original_max_len,
            beta_fast=cfg.rope_yarn_beta_fast,
            beta_slow=cfg.rope_yarn_beta_slow,
            truncate=cfg.rope_yarn_truncate,
            **({} if cfg.rope_attention_factor is None else {"attention_factor": cfg.rope_attention_factor}),
        )
    return scaling


def rope_to_hf(cfg: ModelConfig, partial: str | None = None, theta: str = "rope_theta") -> dict:
    """Both spellings, so transformers 4.x and 5.x read the same RoPE; `partial` and `theta` as in rope_to_zoo."""
    scaling = rope_params_to_hf(cfg)
    kind = scaling["rope_type"]
    fraction = {"partial_rotary_factor": cfg.rope_fraction} if partial else {}
    return {
        "rope_parameters": {**scaling, "rope_theta": cfg.rope_theta, **fraction},
        theta: cfg.rope_theta,
        "rope_scaling": None if kind == "default" else {**scaling, "type": kind},
        **({partial: cfg.rope_fraction} if partial else {}),
    }


def glu(hf: HFConfig, field: str, default: str) -> dict:
    """LLaMA-style MLP: act(gate_proj x) * up_proj x, with act named by HF `field`."""
    return {"mlp_activations": (activation(hf, field, default), "linear")}


def to_zoo(hf: HFConfig) -> dict:
    return {**glu(hf, "hidden_act", "silu"), **rope_to_zoo(hf)}


def to_hf(cfg: ModelConfig) -> dict:
    return {"hidden_act": hf_activation(cfg.mlp_activations[0]), **rope_to_hf(cfg)}


# ============================================================================================ tables
LLAMA_LIKE_RENAMES = {
    "vocab_size": ("vocab_size", 32000),
    "hidden_size": ("d_model", 4096),
    "intermediate_size": ("d_ff", 11008),
    "num_hidden_layers": ("num_layers", 32),
    "num_attention_heads": ("num_heads", 32),
    "num_key_value_heads": ("num_kv_heads", None),
    "head_dim": ("head_dim", None),
    "max_position_embeddings": ("max_seq_len", 2048),
    "rms_norm_eps": ("norm_eps", 1e-6),
    "attention_bias": ("attention_bias", False),
    "tie_word_embeddings": ("tie_word_embeddings", False),
    "attention_dropout": ("attention_dropout", 0.0),
    "initializer_range": ("init_std", 0.02),
}
ROPE_DECODER = {
    **DECODER,
    "norm_type": "rmsnorm",
    "norm_use_bias": False,
    "position_embedding": "rope",
    "rope_fraction": 1.0,
    "rope_local_theta": None,
    "qk_norm": "none",
    "attn_logits_soft_cap": None,
    "final_logits_soft_cap": None,
    "scale_embeddings": False,
    "norm_scale_plus_one": False,
    "attention_pattern": ("global",),
    "mlp_bias": False,
    "query_scale": None,
    "norm_position": "pre",
}
_SWIGLU_NAMES = {"wi_0": "gate_proj", "wi_1": "up_proj", "wo": "down_proj"}
PRE_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm"}  # a pre-norm layer's norms
LAYER = "model.layers.{i}"  # HF prefix of a layer's tensors


def llama_projections(cfg: ModelConfig) -> list[Rule]:
    """LLaMA's separate q/k/v/o and gate/up/down Linears in a layer."""
    return attention_rules(cfg, f"{LAYER}.self_attn", "attention") + mlp_rules(cfg, f"{LAYER}.mlp", _SWIGLU_NAMES)


def llama_like_family(
    norms: dict[str, str],
    layer_rules: Callable[[ModelConfig], list[Rule]] = lambda cfg: [],
    projections: Callable[[ModelConfig], list[Rule]] = llama_projections,
    ignored: tuple[str, ...] = (),
    **fields,
) -> Family:
    """A Family with LLaMA's tensor names. Gemma 2 and OLMo 2 differ in which norms a layer has (`norms`: HF
    norm module in a layer -> zoo norm) and in extra per-layer tensors (`layer_rules`, OLMo 2's q/k norms);
    Phi-3 in how its projections are stored (`projections`: fused qkv_proj and gate_up_proj). `ignored`: patterns
    of checkpoint tensors to leave unread besides the RoPE buffer older checkpoints stored."""

    def weights(cfg: ModelConfig) -> Weights:
        layer = projections(cfg)
        for hf, zoo in norms.items():
            layer += norm_rules(f"{LAYER}.{hf}", zoo, cfg)
        layer += layer_rules(cfg)
        top = embedding_rules(cfg, "model.embed_tokens.weight") + norm_rules("model.norm", "decoder/final_norm", cfg)
        return Weights(top, [("decoder", cfg.num_layers, layer)])

    return Family(
        weights=weights,
        embedding="model.embed_tokens.weight",
        prefix="model.",
        ignored=(r"rotary_emb\.inv_freq$", *ignored),
        **fields,
    )


FAMILY = llama_like_family(
    PRE_NORMS,
    model_type="llama",
    hf_class="LlamaForCausalLM",
    renames={**LLAMA_LIKE_RENAMES, "mlp_bias": ("mlp_bias", False)},
    fixed={k: v for k, v in ROPE_DECODER.items() if k != "mlp_bias"},
    # LLaMA's attention has no sliding window (that is Mistral).
    unsupported={"sliding_window": (None,), "use_sliding_window": (None, False)},
    to_zoo=to_zoo,
    to_hf=to_hf,
)
