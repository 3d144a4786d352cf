"""Cohere Command R / R+ (CohereForCausalLM): LLaMA's tensor names, a parallel block fed by one LayerNorm without
bias (models/cohere/modeling_cohere.py CohereLayerNorm, CohereDecoderLayer), RoPE on interleaved pairs
(repeat_interleave cos/sin, rotate_half over even/odd dims), SwiGLU, no biases, a tied head whose logits are
multiplied by logit_scale, and (Command R+: use_qk_norm) a LayerNorm over head_dim on q and k with a
[heads, head_dim] weight. Command A (cohere2) shares all of it but the q/k norms."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf.core import SAME, HFConfig, hf_activation, rule
from zoo.hf.llama import LAYER, LLAMA_LIKE_RENAMES, ROPE_DECODER, glu, llama_like_family, rope_to_hf, rope_to_zoo

# CohereConfig's defaults (c4ai-command-r-v01's shapes); it has no head_dim field (hidden / heads).
RENAMES = {
    **{k: v for k, v in LLAMA_LIKE_RENAMES.items() if k not in ("rms_norm_eps", "head_dim")},
    "vocab_size": ("vocab_size", 256000),
    "hidden_size": ("d_model", 8192),
    "intermediate_size": ("d_ff", 22528),
    "num_hidden_layers": ("num_layers", 40),
    "num_attention_heads": ("num_heads", 64),
    "max_position_embeddings": ("max_seq_len", 8192),
    "layer_norm_eps": ("norm_eps", 1e-5),
    "tie_word_embeddings": ("tie_word_embeddings", True),
    "logit_scale": ("logits_scale", 0.0625),
}
FIXED = {
    **ROPE_DECODER,
    "parallel_layers": True,
    "parallel_shared_norm": True,
    "norm_type": "layernorm",
    "norm_use_bias": False,
    "rope_interleaved": True,
    "head_dim": None,
    "embedding_dim": None,
    "embedding_norm": False,
}


def to_zoo(hf: HFConfig, default_theta: float) -> dict:
    """SwiGLU and RoPE; `default_theta` is the class's RoPE base when the config names none."""
    if hf.get("rope_parameters") is None and hf.get("rope_theta") is None:
        hf = HFConfig({**hf.values, "rope_theta": default_theta}, hf.model_type)
    return {**glu(hf, "hidden_act", "silu"), **rope_to_zoo(hf)}


def to_hf(cfg: ModelConfig) -> dict:
    return {"hidden_act": hf_activation(cfg.mlp_activations[0]), **rope_to_hf(cfg)}


def _qk_norms(cfg: ModelConfig) -> list:
    if cfg.qk_norm == "none":
        return []
    return [
        rule(f"{LAYER}.self_attn.q_norm.weight", "attention/query_norm/scale", SAME),
        rule(f"{LAYER}.self_attn.k_norm.weight", "attention/key_norm/scale", SAME),
    ]


FAMILY = llama_like_family(
    {"input_layernorm": "attn_norm"},
    layer_rules=_qk_norms,
    model_type="cohere",
    hf_class="CohereForCausalLM",
    renames=RENAMES,
    fixed={k: v for k, v in FIXED.items() if k != "qk_norm"},
    unsupported={},
    to_zoo=lambda hf: {**to_zoo(hf, 500000.0), "qk_norm": "per_head_untied" if hf.get("use_qk_norm") else "none"},
    to_hf=lambda cfg: {**to_hf(cfg), "use_qk_norm": cfg.qk_norm != "none"},
)
