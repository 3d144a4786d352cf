"""DeepSeek-V3 (DeepseekV3ForCausalLM; DeepSeek-AI 2024, "DeepSeek-V3 Technical Report", arXiv:2412.19437):
DeepSeek-V2's latent attention and DeepSeekMoE (zoo/hf/deepseek_v2.py) with V3's router (transformers
models/deepseek_v3/modeling_deepseek_v3.py, DeepseekV3TopkRouter): sigmoid scores in float32; the buffer
e_score_correction_bias added to them only to choose (the zoo's router_balance_bias); n_group groups, each scoring
the sum of its best two biased scores, the topk_group best kept; the top k there; weights the unbiased scores of the
chosen, divided by their sum when norm_topk_prob, times routed_scaling_factor. RoPE in interleaved pairs when
rope_interleave (the default), in halves otherwise. The multi-token-prediction layer of the released checkpoint
(model.layers.61) is not built by the class and is left unread here, as transformers leaves it.
"""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import deepseek_v2, llama, mixtral
from zoo.hf.core import SAME, HFConfig, Rule, only_with_mlp, rule
from zoo.hf.qwen2_moe import MOE


def _groups_to_zoo(hf: HFConfig) -> dict:
    for field in ("n_group", "topk_group"):
        value = hf.get(field, 8 if field == "n_group" else 4)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            hf.fail(field, "must be a positive integer (1: every expert)")
    groups, per_token = hf.get("n_group", 8), hf.get("topk_group", 4)
    if groups == 1:
        return {"router_groups": 1}
    return {"router_groups": groups, "router_groups_per_token": per_token, "router_group_score_experts": 2}


def _to_zoo(hf: HFConfig) -> dict:
    return {
        **llama.to_zoo(hf),
        **deepseek_v2.latent_to_zoo(hf),
        **mixtral.experts_to_zoo(hf, "n_routed_experts", 256, 8),
        **_groups_to_zoo(hf),
        "shared_expert_d_ff": (hf.get("n_shared_experts", 1) or 0) * hf.get("moe_intermediate_size", 2048),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    shared, rest = divmod(cfg.shared_expert_d_ff, cfg.d_expert)
    if rest:
        raise ValueError(
            f"ModelConfig.shared_expert_d_ff: {cfg.shared_expert_d_ff} cannot be expressed as deepseek_v3, whose "
            f"shared experts are n_shared_experts x d_expert={cfg.d_expert} wide"
        )
    grouped = cfg.router_groups > 1
    if grouped and cfg.router_group_score_experts != 2:
        raise ValueError(
            f"ModelConfig.router_group_score_experts: {cfg.router_group_score_experts} cannot be expressed as "
            "deepseek_v3, whose groups score the sum of their best two experts"
        )
    groups = {"n_group": cfg.router_groups, "topk_group": cfg.router_groups_per_token if grouped else 1}
    # num_key_value_heads: the class defaults it to 128 (V3's head count), not to num_attention_heads.
    heads = {"num_key_value_heads": cfg.num_heads}
    return {**deepseek_v2.latent_to_hf(cfg), "n_shared_experts": shared, **groups, **heads}


def _projections(cfg: ModelConfig, fused: bool) -> list[Rule]:
    bias = [rule(f"{MOE}.gate.e_score_correction_bias", "moe/balance_bias", SAME)]
    return deepseek_v2.projections(cfg, fused) + only_with_mlp(bias, "moe")


# HF DeepseekV3Config's defaults (= DeepSeek-V3's shapes but its context and RoPE scaling).
RENAMES = {
    **deepseek_v2.RENAMES,
    "vocab_size": ("vocab_size", 129280),
    "hidden_size": ("d_model", 7168),
    "intermediate_size": ("d_ff", 18432),
    "num_hidden_layers": ("num_layers", 61),
    "num_attention_heads": ("num_heads", 128),
    "moe_intermediate_size": ("d_expert", 2048),
    "n_routed_experts": ("num_experts", 256),
    "num_experts_per_tok": ("experts_per_token", 8),
    "first_k_dense_replace": ("dense_prefix_layers", 3),
    "routed_scaling_factor": ("router_weight_scale", 2.5),
    "norm_topk_prob": ("router_renormalize", True),
    "rope_interleave": ("rope_interleaved", True),
}

FIXED = {
    **{k: v for k, v in deepseek_v2.FIXED.items() if k not in ("rope_interleaved", "router_renormalize")},
    "router": "sigmoid_topk",
    "router_balance_bias": True,
}

FAMILY = mixtral.moe_family(
    llama.PRE_NORMS,
    lambda cfg: [],
    _projections,
    model_type="deepseek_v3",
    hf_class="DeepseekV3ForCausalLM",
    presets="deepseek_v3",
    renames=RENAMES,
    fixed=FIXED,
    unsupported={"mlp_bias": (False,)},
    # The released checkpoint's multi-token-prediction layer, which the class does not build and transformers skips
    # by this name (DeepseekV3PreTrainedModel._keys_to_ignore_on_load_unexpected).
    ignored=(r"^model\.layers\.61\.",),
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
