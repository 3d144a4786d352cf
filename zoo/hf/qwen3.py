"""Qwen3 (Qwen3ForCausalLM): Qwen2's layout with RMSNorm on each head of q and k before RoPE (q_norm, k_norm of
shape [head_dim]; Qwen3 Technical Report, arXiv:2505.09388 §2), attention_bias on all four projections
(false in every release) and an explicit head_dim (128 in every size)."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import llama, qwen2
from zoo.hf.core import SAME, Rule, rule


def _qk_norm_rules(cfg: ModelConfig) -> list[Rule]:
    p = f"{llama.LAYER}.self_attn"
    return [
        rule(f"{p}.q_norm.weight", "attention/query_norm/scale", SAME),
        rule(f"{p}.k_norm.weight", "attention/key_norm/scale", SAME),
    ]


FAMILY = llama.llama_like_family(
    llama.PRE_NORMS,
    _qk_norm_rules,
    model_type="qwen3",
    hf_class="Qwen3ForCausalLM",
    presets="qwen",
    renames={**qwen2.RENAMES, "attention_bias": ("attention_bias", False), "head_dim": ("head_dim", 128)},
    fixed={**llama.ROPE_DECODER, "qk_norm": "per_head"},
    unsupported=qwen2.NO_WINDOW,
    to_zoo=qwen2.to_zoo,
    to_hf=llama.to_hf,
)
