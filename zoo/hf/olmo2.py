"""OLMo 2 (Olmo2ForCausalLM): LLaMA's config and tensors, with RMSNorm on each sublayer's output instead of
its input, and q/k RMSNorms over the whole projection (all heads at once)."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import llama
from zoo.hf.core import Rule, reshape, rule


def _qk_norm_rules(cfg: ModelConfig) -> list[Rule]:
    """q_norm [heads * head_dim], k_norm [kv_heads * head_dim] <-> scales [heads, head_dim], [kv_heads, ...]."""
    p = f"{llama.LAYER}.self_attn"
    return [
        rule(f"{p}.q_norm.weight", "attention/query_norm/scale", reshape(cfg.num_heads, cfg.head_dim)),
        rule(f"{p}.k_norm.weight", "attention/key_norm/scale", reshape(cfg.num_kv_heads, cfg.head_dim)),
    ]


FAMILY = llama.llama_like_family(
    {"post_attention_layernorm": "attn_norm", "post_feedforward_layernorm": "mlp_norm"},
    _qk_norm_rules,
    model_type="olmo2",
    hf_class="Olmo2ForCausalLM",
    renames={**llama.LLAMA_LIKE_RENAMES, "vocab_size": ("vocab_size", 50304), "rms_norm_eps": ("norm_eps", 1e-5)},
    fixed={**llama.ROPE_DECODER, "norm_position": "output", "qk_norm": "full"},
    unsupported={},
    to_zoo=llama.to_zoo,
    to_hf=llama.to_hf,
)
