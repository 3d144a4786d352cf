"""Qwen2-MoE (Qwen2MoeForCausalLM: Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B): Qwen2's attention (biases on q, k and v,
none on the output) with a mixture of experts in the MLP, beside a shared expert, a dense SwiGLU every token goes
through whose output is scaled by sigmoid(x w), w [d, 1] (transformers models/qwen2_moe/modeling_qwen2_moe.py,
Qwen2MoeSparseMoeBlock). The router: softmax over every expert, the top k, divided by their sum only with
norm_topk_prob (false in both releases). Qwen3-MoE shares the layer placement.

Which layers have experts: layer i does unless i is in mlp_only_layers or (i + 1) % decoder_sparse_step != 0;
the others have a dense SwiGLU of width intermediate_size. That list becomes moe_pattern, its shortest repeating
period, after a dense prefix where one shortens it (mlp_only_layers [0, 1]: dense_prefix_layers 2, then every
layer moe); the whole list when nothing repeats (correct, but one long scanned cycle).
"""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import llama, mixtral, qwen2
from zoo.hf.core import TRANSPOSE, HFConfig, Rule, attention_rules, mlp_rules, only_with_mlp, rule

_SWIGLU_NAMES = {"wi_0": "gate_proj", "wi_1": "up_proj", "wo": "down_proj"}
MOE = f"{llama.LAYER}.mlp"  # HF prefix of a layer's MLP, dense or sparse


# ============================================================================================ configs
def sparse_layers_to_zoo(hf: HFConfig, layers: int) -> dict:
    """decoder_sparse_step and mlp_only_layers -> moe_pattern; `layers`: the class's default num_hidden_layers."""
    n = hf.get("num_hidden_layers", layers)
    step = hf.get("decoder_sparse_step", 1)
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        hf.fail("decoder_sparse_step", "must be a positive integer (layer i has experts when (i + 1) % step == 0)")
    dense = hf.get("mlp_only_layers") or []
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in dense):
        hf.fail("mlp_only_layers", f"must list layer indices in 0..{n - 1}")
    kinds = ["dense" if i in dense or (i + 1) % step else "moe" for i in range(n)]
    if "moe" not in kinds:
        hf.fail("mlp_only_layers" if dense else "decoder_sparse_step", "leaves no layer with experts: a dense model")
    return dense_prefix_and_pattern(kinds)


def dense_prefix_and_pattern(kinds: list[str]) -> dict:
    """A per-layer list of MLP kinds as dense_prefix_layers and moe_pattern: the shortest pattern (cycled by layer
    index) after a dense prefix of whole cycles, the shortest such prefix."""
    n = len(kinds)
    for period in range(1, n + 1):
        for prefix in range(0, n, period):
            if "moe" in kinds[:prefix]:
                break
            pattern = kinds[prefix : prefix + period]
            if n % period == 0 and all(kind == pattern[i % period] for i, kind in enumerate(kinds) if i >= prefix):
                return {"dense_prefix_layers": prefix, "moe_pattern": tuple(pattern)}
    raise AssertionError("unreachable: the whole list is a pattern")


def sparse_layers_to_hf(cfg: ModelConfig) -> dict:
    """moe_pattern -> decoder_sparse_step (a pattern of dense layers ending in one moe) or mlp_only_layers."""
    pattern = cfg.moe_pattern
    if pattern == ("dense",) * (len(pattern) - 1) + ("moe",) and not cfg.dense_prefix_layers:
        return {"decoder_sparse_step": len(pattern), "mlp_only_layers": []}
    dense = [i for i, kind in enumerate(cfg.mlp_kinds()) if kind == "dense"]
    return {"decoder_sparse_step": 1, "mlp_only_layers": dense}


def _to_zoo(hf: HFConfig) -> dict:
    if hf.get("shared_expert_intermediate_size", 5632) < 1:
        hf.fail("shared_expert_intermediate_size", "must be positive (every Qwen2-MoE layer has a shared expert)")
    return {**qwen2.to_zoo(hf), **mixtral.experts_to_zoo(hf, "num_experts", 60, 4), **sparse_layers_to_zoo(hf, 24)}


def _to_hf(cfg: ModelConfig) -> dict:
    return {**llama.to_hf(cfg), **sparse_layers_to_hf(cfg)}


# ============================================================================================ weights
def moe_mlp_rules(cfg: ModelConfig, fused: bool) -> list[Rule]:
    """The dense MLP in the blocks without experts; the router and experts (per expert or `fused`) in the others."""
    experts = mixtral.expert_rules(cfg, MOE, _SWIGLU_NAMES, fused)
    return only_with_mlp(mlp_rules(cfg, MOE, _SWIGLU_NAMES), "dense") + experts


def _projections(cfg: ModelConfig, fused: bool) -> list[Rule]:
    expert = f"{MOE}.shared_expert"
    shared = [rule(f"{expert}.{hf}.weight", f"moe/shared/{zoo}/kernel", TRANSPOSE) for zoo, hf in _SWIGLU_NAMES.items()]
    shared.append(rule(f"{MOE}.shared_expert_gate.weight", "moe/shared_gate/kernel", TRANSPOSE))  # [1, d]
    return (
        attention_rules(cfg, f"{llama.LAYER}.self_attn", "attention")
        + moe_mlp_rules(cfg, fused)
        + only_with_mlp(shared, "moe")
    )


# HF Qwen2MoeConfig's defaults (= Qwen1.5-MoE-A2.7B's shapes but its context and RoPE base).
RENAMES = {
    **qwen2.RENAMES,
    "hidden_size": ("d_model", 2048),
    "num_hidden_layers": ("num_layers", 24),
    "num_attention_heads": ("num_heads", 16),
    "intermediate_size": ("d_ff", 5632),
    "num_key_value_heads": ("num_kv_heads", 16),
    "max_position_embeddings": ("max_seq_len", 32768),
    "moe_intermediate_size": ("d_expert", 1408),
    "num_experts": ("num_experts", 60),
    "num_experts_per_tok": ("experts_per_token", 4),
    "norm_topk_prob": ("router_renormalize", False),
    "router_aux_loss_coef": ("load_balancing_multiplier", 0.001),
}

FAMILY = mixtral.moe_family(
    llama.PRE_NORMS,
    lambda cfg: [],
    _projections,
    model_type="qwen2_moe",
    hf_class="Qwen2MoeForCausalLM",
    presets="qwen_moe",
    renames={
        **RENAMES,
        "qkv_bias": ("attention_bias", True),
        "shared_expert_intermediate_size": ("shared_expert_d_ff", 5632),
    },
    fixed={**llama.ROPE_DECODER, "attention_out_bias": False, **mixtral.MOE_FIXED, "shared_expert_gate": True},
    unsupported=qwen2.NO_WINDOW,
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
