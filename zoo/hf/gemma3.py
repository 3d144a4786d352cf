"""Gemma 3, text part (Gemma3ForCausalLM, model_type gemma3_text; Gemma Team 2025, arXiv:2503.19786): Gemma 2's
model (LLaMA's tensors, four (1 + w) RMSNorms a layer, query_pre_attn_scalar, sqrt(d_model) embedding scale, GeGLU,
tied) with per-head q/k RMSNorms, five sliding-window layers to one global (layer i global iff (i + 1) % 6 == 0),
no soft-caps by default, and RoPE per layer type: base 10k on sliding layers, 1M with linear x8 scaling (4B and up)
on global ones (transformers models/gemma3/{configuration,modeling}_gemma3.py)."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import gemma2, llama
from zoo.hf.core import SAME, HFConfig, Rule, rule


def _qk_norm_rules(cfg: ModelConfig) -> list[Rule]:
    p = f"{llama.LAYER}.self_attn"
    return [
        rule(f"{p}.q_norm.weight", "attention/query_norm/scale", SAME),
        rule(f"{p}.k_norm.weight", "attention/key_norm/scale", SAME),
    ]


def _rope_to_zoo(hf: HFConfig) -> dict:
    """transformers 5: rope_parameters {full_attention: {...}, sliding_attention: {...}}; 4.x: rope_theta and
    rope_scaling for the global layers, rope_local_base_freq for the sliding ones."""
    params = hf.get("rope_parameters")
    if params:
        if not isinstance(params, dict) or set(params) - {"full_attention", "sliding_attention"}:
            hf.fail("rope_parameters", "needs one dict per layer type, full_attention and sliding_attention")
        names = ("rope_parameters.full_attention", "rope_parameters.sliding_attention")
        full, local = params.get("full_attention") or {}, params.get("sliding_attention") or {}
    else:
        names = ("rope_scaling", "rope_local_base_freq")
        full = {**(hf.get("rope_scaling") or {}), "rope_theta": hf.get("rope_theta", 1e6)}
        local = {"rope_theta": hf.get("rope_local_base_freq", 1e4)}
    for name, values in zip(names, (full, local), strict=True):
        if values.get("partial_rotary_factor", 1.0) != 1.0:
            hf.fail(name, "partial rotary is not applied by Gemma 3's attention")
    out = llama.rope_params_to_zoo(hf, names[0], {"rope_theta": 1e6, **full})
    sliding = llama.rope_params_to_zoo(hf, names[1], {"rope_theta": 1e4, **local})
    local_theta = sliding.pop("rope_theta")
    if sliding["rope_scaling"] != "none" and sliding != {k: v for k, v in out.items() if k != "rope_theta"}:
        hf.fail(
            names[1],
            "scales sliding layers otherwise than global ones; the zoo scales both alike or global layers only",
        )
    out["rope_local_theta"] = local_theta
    if out["rope_scaling"] != "none":
        out["rope_scaling_local"] = sliding["rope_scaling"] != "none"
    return out


def _rope_to_hf(cfg: ModelConfig) -> dict:
    full = {**llama.rope_params_to_hf(cfg), "rope_theta": cfg.rope_theta}
    scaled_local = cfg.rope_scaling != "none" and cfg.rope_scaling_local
    local = {
        **(full if scaled_local else {"rope_type": "default"}),
        "rope_theta": cfg.rope_local_theta or cfg.rope_theta,
    }
    return {"rope_parameters": {"full_attention": full, "sliding_attention": local}}


def _to_zoo(hf: HFConfig) -> dict:
    # Gemma3TextConfig's default layout from the hub files' sliding_window_pattern (6 in every release).
    period = hf.get("sliding_window_pattern", 6)
    return {**gemma2.gemma_to_zoo(hf, lambda i: (i + 1) % period != 0), **_rope_to_zoo(hf)}


def _to_hf(cfg: ModelConfig) -> dict:
    return {**gemma2.gemma_to_hf(cfg), **_rope_to_hf(cfg)}


FAMILY = llama.llama_like_family(
    {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "attn_post_norm",
        "pre_feedforward_layernorm": "mlp_norm",
        "post_feedforward_layernorm": "mlp_post_norm",
    },
    _qk_norm_rules,
    model_type="gemma3_text",
    hf_class="Gemma3ForCausalLM",
    presets="gemma3",
    # HF Gemma3TextConfig's defaults (V of the 4B+ text_config; the other shapes are not a Gemma 3 size).
    renames={
        **gemma2.FAMILY.renames,
        "vocab_size": ("vocab_size", 262208),
        "max_position_embeddings": ("max_seq_len", 131072),
        "attn_logit_softcapping": ("attn_logits_soft_cap", None),
        "final_logit_softcapping": ("final_logits_soft_cap", None),
    },
    fixed={**{k: v for k, v in gemma2.FAMILY.fixed.items() if k != "rope_local_theta"}, "qk_norm": "per_head"},
    unsupported={"use_bidirectional_attention": (None, False)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
