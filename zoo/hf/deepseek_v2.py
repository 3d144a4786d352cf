"""DeepSeek-V2 (DeepseekV2ForCausalLM: DeepSeek-V2-Lite; DeepSeek-AI 2024, "DeepSeek-V2", arXiv:2405.04434):
multi-head latent attention and DeepSeekMoE (transformers models/deepseek_v2/modeling_deepseek_v2.py).

Attention (DeepseekV2Attention): the queries through q_proj, or q_a_proj -> q_a_layernorm -> q_b_proj when
q_lora_rank is set; kv_a_proj_with_mqa gives the kv_lora_rank latent (then kv_a_layernorm) and the shared RoPE key,
kv_b_proj the per-head no-RoPE keys and values; RoPE on the qk_rope_head_dim part only, in interleaved pairs (its
apply_rotary_emb multiplies complex numbers); the softmax scale is qk_head_dim ** -0.5 times YaRN's
mscale(mscale_all_dim) squared (yarn_apply_mscale), which the zoo writes as query_scale. Both latent norms are built
with the class's default eps, 1e-6, which the zoo's one norm_eps must then be.

MLP (DeepseekV2Moe): the first first_k_dense_replace layers a dense SwiGLU of intermediate_size, the others
n_routed_experts experts of moe_intermediate_size beside n_shared_experts shared ones, one SwiGLU n_shared times as
wide. The router (DeepseekV2TopkRouter): softmax over every expert in float32, the top k probabilities (topk_method
greedy; group_limited_greedy: among the topk_group of n_group groups whose best expert scores highest), never
renormalised (the class ignores norm_topk_prob), times routed_scaling_factor. Weights: the
per-expert layout of Qwen2-MoE (transformers' conversion mapping for deepseek_v2), or the fused one.
"""

from __future__ import annotations

import math

from zoo.config import ModelConfig
from zoo.hf import llama, mixtral, qwen2_moe
from zoo.hf.core import SAME, TRANSPOSE, HFConfig, Rule, linear, linear_in, only_with_mlp, rule

ATTENTION = f"{llama.LAYER}.self_attn"
_SWIGLU_NAMES = {"wi_0": "gate_proj", "wi_1": "up_proj", "wo": "down_proj"}


# ============================================================================================ configs
def _mscale(factor: float, m: float) -> float:
    """transformers' yarn_get_mscale."""
    return 0.1 * m * math.log(factor) + 1.0 if factor > 1 else 1.0


def latent_to_zoo(hf: HFConfig) -> dict:
    """Latent attention's shapes, and the softmax scale YaRN's mscale_all_dim multiplies."""
    nope, rope = hf.get("qk_nope_head_dim", 128), hf.get("qk_rope_head_dim", 64)
    if hf.get("rms_norm_eps", 1e-6) != 1e-6:
        hf.fail("rms_norm_eps", "must be 1e-6, the eps the class gives its latent norms (the zoo has one norm_eps)")
    kv = hf.get("num_key_value_heads")
    if kv is not None and kv != hf.get("num_attention_heads", 32):
        hf.fail(
            "num_key_value_heads", "latent attention has a key and value per query head: must be num_attention_heads"
        )
    out = {
        "head_dim": nope + rope,
        "rope_head_dim": rope,
        "kv_latent_dim": hf.get("kv_lora_rank", 512),
        "q_latent_dim": hf.get("q_lora_rank", 1536) or 0,
        "value_head_dim": hf.get("v_head_dim", 128),
    }
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    all_dims = params.get("mscale_all_dim")
    if params.get("rope_type", params.get("type", "default")) != "default" and all_dims:
        out["query_scale"] = (nope + rope) ** -0.5 * _mscale(params["factor"], all_dims) ** 2
    return out


def latent_to_hf(cfg: ModelConfig) -> dict:
    """latent_to_zoo's inverse: a query_scale other than 1/sqrt(head_dim) as YaRN's mscale_all_dim (and mscale, so
    that their ratio stays the rotated dims' attention factor)."""
    out = {
        "qk_nope_head_dim": cfg.head_dim - cfg.rope_head_dim,
        "qk_rope_head_dim": cfg.rope_head_dim,
        "kv_lora_rank": cfg.kv_latent_dim,
        "q_lora_rank": cfg.q_latent_dim or None,
        "v_head_dim": cfg.value_head_dim,
        **llama.to_hf(cfg),
    }
    if cfg.query_scale is None or math.isclose(cfg.query_scale, cfg.head_dim**-0.5, rel_tol=1e-9):
        return out
    factor = cfg.rope_scaling_factor
    if cfg.rope_scaling != "yarn" or factor <= 1 or cfg.query_scale < cfg.head_dim**-0.5:
        raise ValueError(
            f"ModelConfig.query_scale: {cfg.query_scale} cannot be expressed as deepseek_v2 (it scales 1/sqrt(head_dim)"
            " only up, by YaRN's mscale_all_dim, with rope_scaling yarn and a factor above 1)"
        )
    all_dims = (math.sqrt(cfg.query_scale * cfg.head_dim**0.5) - 1.0) / (0.1 * math.log(factor))
    attention = cfg.rope_attention_factor if cfg.rope_attention_factor is not None else _mscale(factor, 1.0)
    mscale = (attention * _mscale(factor, all_dims) - 1.0) / (0.1 * math.log(factor))
    for field in ("rope_parameters", "rope_scaling"):
        scaling = {k: v for k, v in out[field].items() if k != "attention_factor"}
        out[field] = {**scaling, "mscale": mscale, "mscale_all_dim": all_dims}
    return out


def groups_to_zoo(hf: HFConfig) -> dict:
    """topk_method group_limited_greedy's n_group and topk_group; greedy ignores them (one group)."""
    if hf.get("topk_method", "greedy") == "greedy":
        return {"router_groups": 1}
    for field in ("n_group", "topk_group"):
        if not isinstance(hf.get(field), int) or isinstance(hf.get(field), bool) or hf.get(field) < 1:
            hf.fail(field, "group-limited routing needs a positive integer")
    return {"router_groups": hf.get("n_group"), "router_groups_per_token": hf.get("topk_group")}


def _to_zoo(hf: HFConfig) -> dict:
    shared = hf.get("n_shared_experts", 2) or 0
    return {
        **llama.to_zoo(hf),
        **latent_to_zoo(hf),
        **mixtral.experts_to_zoo(hf, "n_routed_experts", 64, None),
        **groups_to_zoo(hf),
        "shared_expert_d_ff": shared * hf.get("moe_intermediate_size", 1407),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    shared, rest = divmod(cfg.shared_expert_d_ff, cfg.d_expert)
    if rest:
        raise ValueError(
            f"ModelConfig.shared_expert_d_ff: {cfg.shared_expert_d_ff} cannot be expressed as deepseek_v2, whose "
            f"shared experts are n_shared_experts x d_expert={cfg.d_expert} wide"
        )
    grouped = cfg.router_groups > 1
    groups = {"n_group": cfg.router_groups, "topk_group": cfg.router_groups_per_token if grouped else 1}
    method = "group_limited_greedy" if grouped else "greedy"
    return {**latent_to_hf(cfg), "n_shared_experts": shared, "topk_method": method, **groups}


# ============================================================================================ weights
def latent_rules(cfg: ModelConfig) -> list[Rule]:
    """DeepseekV2Attention's tensors <-> the zoo's latent attention."""
    h, nope = cfg.num_heads, cfg.head_dim - cfg.rope_head_dim
    if cfg.q_latent_dim:
        rules = [
            rule(f"{ATTENTION}.q_a_proj.weight", "attention/query_down/kernel", TRANSPOSE),
            rule(f"{ATTENTION}.q_a_layernorm.weight", "attention/query_norm/scale", SAME),
            rule(f"{ATTENTION}.q_b_proj.weight", "attention/query_up/kernel", linear(h, cfg.head_dim)),
        ]
    else:
        rules = [rule(f"{ATTENTION}.q_proj.weight", "attention/query/kernel", linear(h, cfg.head_dim))]
    rules += [
        rule(f"{ATTENTION}.kv_a_proj_with_mqa.weight", "attention/kv_down/kernel", TRANSPOSE),
        rule(f"{ATTENTION}.kv_a_layernorm.weight", "attention/kv_norm/scale", SAME),
        rule(f"{ATTENTION}.kv_b_proj.weight", "attention/kv_up/kernel", linear(h, nope + cfg.value_head_dim)),
        rule(f"{ATTENTION}.o_proj.weight", "attention/out/kernel", linear_in(h, cfg.value_head_dim)),
    ]
    if cfg.attention_bias:
        down = ["kv_down"] + (["query_down"] if cfg.q_latent_dim else [])
        hf_names = {"kv_down": "kv_a_proj_with_mqa", "query_down": "q_a_proj"}
        rules += [rule(f"{ATTENTION}.{hf_names[z]}.bias", f"attention/{z}/bias", SAME) for z in down]
    if cfg.attention_out_bias:
        rules.append(rule(f"{ATTENTION}.o_proj.bias", "attention/out/bias", SAME))
    return rules


def projections(cfg: ModelConfig, fused: bool) -> list[Rule]:
    """A layer's latent attention and DeepSeekMoE tensors, the experts per expert or `fused`."""
    prefix = f"{qwen2_moe.MOE}.shared_experts"
    shared = [rule(f"{prefix}.{hf}.weight", f"moe/shared/{zoo}/kernel", TRANSPOSE) for zoo, hf in _SWIGLU_NAMES.items()]
    return (
        latent_rules(cfg)
        + qwen2_moe.moe_mlp_rules(cfg, fused)
        + only_with_mlp(shared if cfg.shared_expert_d_ff else [], "moe")
    )


# HF DeepseekV2Config's defaults (the class's docstring model, not a release: V2-Lite has 27 layers of 2048).
# LLaMA's fields and defaults but the vocabulary; its num_key_value_heads and head_dim are latent_to_zoo's (HF sets
# head_dim to the RoPE part).
RENAMES = {
    **{k: v for k, v in llama.LLAMA_LIKE_RENAMES.items() if k not in ("num_key_value_heads", "head_dim")},
    "vocab_size": ("vocab_size", 102400),
    "moe_intermediate_size": ("d_expert", 1407),
    "n_routed_experts": ("num_experts", 64),
    "num_experts_per_tok": ("experts_per_token", None),
    "first_k_dense_replace": ("dense_prefix_layers", 0),
    "routed_scaling_factor": ("router_weight_scale", 1.0),
}

FIXED = {
    **llama.ROPE_DECODER,
    "rope_interleaved": True,
    **mixtral.MOE_FIXED,
    "router_renormalize": False,
    "moe_pattern": ("moe",),
    "shared_expert_gate": False,
}

FAMILY = mixtral.moe_family(
    llama.PRE_NORMS,
    lambda cfg: [],
    projections,
    model_type="deepseek_v2",
    hf_class="DeepseekV2ForCausalLM",
    presets="deepseek",
    renames=RENAMES,
    fixed=FIXED,
    unsupported={"topk_method": ("greedy", "group_limited_greedy"), "mlp_bias": (False,)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
