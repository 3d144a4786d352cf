"""Qwen3-MoE (Qwen3MoeForCausalLM: Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3's attention (per-head q/k RMSNorm,
explicit head_dim, attention_bias on all four projections, false in every release) with 128 experts, 8 per token,
in every layer and no shared expert (Qwen3 Technical Report, arXiv:2505.09388 §2; transformers
models/qwen3_moe/modeling_qwen3_moe.py). Qwen2-MoE's layer placement (decoder_sparse_step, mlp_only_layers) and
router (norm_topk_prob: true in both releases).

transformers 5 writes the expert count as num_local_experts (Qwen3MoeConfig.attribute_map), the released files
as num_experts: both are read, num_experts is written. use_sliding_window is refused: transformers 5 applies the
window to every layer, earlier versions only from max_window_layers on.
"""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import llama, mixtral, qwen2, qwen2_moe, qwen3
from zoo.hf.core import HFConfig, Rule, attention_rules


def _to_zoo(hf: HFConfig) -> dict:
    field = "num_local_experts" if hf.get("num_local_experts") is not None else "num_experts"
    return {
        **qwen2.to_zoo(hf),
        **mixtral.experts_to_zoo(hf, field, 128, 8),
        **qwen2_moe.sparse_layers_to_zoo(hf, 24),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    return {**llama.to_hf(cfg), **qwen2_moe.sparse_layers_to_hf(cfg), "num_experts": cfg.num_experts}


def _projections(cfg: ModelConfig, fused: bool) -> list[Rule]:
    return attention_rules(cfg, f"{llama.LAYER}.self_attn", "attention") + qwen2_moe.moe_mlp_rules(cfg, fused)


FAMILY = mixtral.moe_family(
    llama.PRE_NORMS,
    qwen3._qk_norm_rules,
    _projections,
    model_type="qwen3_moe",
    hf_class="Qwen3MoeForCausalLM",
    presets="qwen_moe",
    # HF Qwen3MoeConfig's defaults (its docstring's "Qwen3-15B-A2B" shapes; 30B-A3B has 48 layers).
    renames={
        **{k: v for k, v in qwen2_moe.RENAMES.items() if k != "num_experts"},
        "intermediate_size": ("d_ff", 6144),
        "num_attention_heads": ("num_heads", 32),
        "num_key_value_heads": ("num_kv_heads", 4),
        "attention_bias": ("attention_bias", False),
        "moe_intermediate_size": ("d_expert", 768),
        "num_experts_per_tok": ("experts_per_token", 8),
    },
    fixed={**llama.ROPE_DECODER, "qk_norm": "per_head", **mixtral.MOE_FIXED, "shared_expert_d_ff": 0},
    unsupported=qwen2.NO_WINDOW,
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
