"""Nemotron (NemotronForCausalLM; Nemotron-4, NVIDIA 2024, arXiv:2402.16819 and arXiv:2406.11704): LLaMA's tensor
names with LayerNorm1P (a LayerNorm with bias whose gain is 1 + weight), a plain squared-ReLU MLP up_proj ->
down_proj, rotate-half RoPE on partial_rotary_factor (0.5) of each head, GQA, optional biases, untied
(transformers models/nemotron/modeling_nemotron.py)."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import llama
from zoo.hf.core import HFConfig, Rule, activation, attention_rules, hf_activation, mlp_rules


def _projections(cfg: ModelConfig) -> list[Rule]:
    return attention_rules(cfg, f"{llama.LAYER}.self_attn", "attention") + mlp_rules(
        cfg, f"{llama.LAYER}.mlp", {"wi": "up_proj", "wo": "down_proj"}
    )


def _to_zoo(hf: HFConfig) -> dict:
    head_dim = hf.get("head_dim") or hf.get("hidden_size", 6144) // hf.get("num_attention_heads", 48)
    return {
        "mlp_activations": (activation(hf, "hidden_act", "relu2"),),
        **llama.rope_to_zoo(hf, partial=("partial_rotary_factor", 0.5, head_dim)),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    return {
        "hidden_act": hf_activation(cfg.mlp_activations[0]),
        **llama.rope_to_hf(cfg, partial="partial_rotary_factor"),
    }


FAMILY = llama.llama_like_family(
    llama.PRE_NORMS,
    projections=_projections,
    model_type="nemotron",
    hf_class="NemotronForCausalLM",
    # HF NemotronConfig's defaults (= Nemotron-4-15B's shapes, but MHA).
    renames={
        **{k: v for k, v in llama.LLAMA_LIKE_RENAMES.items() if k != "rms_norm_eps"},
        "vocab_size": ("vocab_size", 256000),
        "hidden_size": ("d_model", 6144),
        "intermediate_size": ("d_ff", 24576),
        "num_hidden_layers": ("num_layers", 32),
        "num_attention_heads": ("num_heads", 48),
        "max_position_embeddings": ("max_seq_len", 4096),
        "norm_eps": ("norm_eps", 1e-5),
        "initializer_range": ("init_std", 0.0134),
        "mlp_bias": ("mlp_bias", False),
    },
    fixed={
        **{k: v for k, v in llama.ROPE_DECODER.items() if k not in ("mlp_bias", "rope_fraction")},
        "norm_type": "layernorm",
        "norm_use_bias": True,
        "norm_scale_plus_one": True,
    },
    unsupported={},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
