"""OLMoE (OlmoeForCausalLM: OLMoE-1B-7B): LLaMA's pre-norm layer with OLMo 2's q/k RMSNorms over the whole
projection (all heads at once), and 64 SwiGLU experts, 8 per token, in every layer (Muennighoff et al. 2024,
"OLMoE", arXiv:2409.02060; transformers models/olmoe/modeling_olmoe.py). The router: softmax over every expert,
the top k, divided by their sum only with norm_topk_prob (false in the release). intermediate_size is each
expert's width (the release: 1024; the class default, 2048, is not the checkpoint's).

The q/k norms' widths are hidden_size and (hidden_size / heads) * kv_heads, so the head width is hidden_size /
heads (a config.json head_dim that differs is refused); clip_qkv, which clamps q, k and v, is refused.
"""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import llama, mixtral, olmo2
from zoo.hf.core import HFConfig, Rule, attention_rules


def _to_zoo(hf: HFConfig) -> dict:
    d, heads = hf.get("hidden_size", 2048), hf.get("num_attention_heads", 16)
    if hf.get("head_dim") not in (None, d // heads):
        hf.fail("head_dim", f"OLMoE's q/k norms need hidden_size / num_attention_heads = {d // heads}")
    return {**llama.to_zoo(hf), **mixtral.experts_to_zoo(hf, "num_experts", 64, 8)}


def _to_hf(cfg: ModelConfig) -> dict:
    return {**llama.to_hf(cfg), "intermediate_size": cfg.d_expert}  # as Mixtral: one width, the experts'


def _projections(cfg: ModelConfig, fused: bool) -> list[Rule]:
    names = {"wi_0": "gate_proj", "wi_1": "up_proj", "wo": "down_proj"}
    moe = mixtral.expert_rules(cfg, f"{llama.LAYER}.mlp", names, fused)
    return attention_rules(cfg, f"{llama.LAYER}.self_attn", "attention") + moe


FAMILY = mixtral.moe_family(
    llama.PRE_NORMS,
    olmo2._qk_norm_rules,
    _projections,
    model_type="olmoe",
    hf_class="OlmoeForCausalLM",
    # HF OlmoeConfig's defaults (OLMoE-1B-7B's shapes but intermediate_size).
    renames={
        **{k: v for k, v in llama.LLAMA_LIKE_RENAMES.items() if k != "head_dim"},
        "vocab_size": ("vocab_size", 50304),
        "hidden_size": ("d_model", 2048),
        "intermediate_size": ("d_ff", 2048),
        "num_hidden_layers": ("num_layers", 16),
        "num_attention_heads": ("num_heads", 16),
        "max_position_embeddings": ("max_seq_len", 4096),
        "rms_norm_eps": ("norm_eps", 1e-5),
        "num_experts": ("num_experts", 64),
        "num_experts_per_tok": ("experts_per_token", 8),
        "norm_topk_prob": ("router_renormalize", False),
        "router_aux_loss_coef": ("load_balancing_multiplier", 0.01),
    },
    fixed={
        **llama.ROPE_DECODER,
        "qk_norm": "full",
        **mixtral.MOE_FIXED,
        "moe_pattern": ("moe",),
        "shared_expert_d_ff": 0,
    },
    # OlmoeConfig has no window; a sliding_window in its config.json reaches only some attention kernels.
    unsupported={"clip_qkv": (None,), "sliding_window": (None,)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
