"""Gemma 2 (Gemma2ForCausalLM): LLaMA's tensors plus norms before and after each sublayer ((1 + w) RMSNorm),
alternating sliding-window and global layers, attention and final logit soft-caps, query_pre_attn_scalar,
sqrt(d_model) embedding scale, GeGLU MLP, tied head."""

from __future__ import annotations

import math
from collections.abc import Callable

from zoo.config import ModelConfig
from zoo.hf.core import HFConfig, hf_activation, layer_types_to_hf, layer_types_to_zoo
from zoo.hf.llama import LLAMA_LIKE_RENAMES, ROPE_DECODER, glu, llama_like_family, rope_to_hf, rope_to_zoo

_LAYER_TYPES = {"sliding_attention": "local", "full_attention": "global"}


def gemma_to_zoo(hf: HFConfig, slides: Callable[[int], bool]) -> dict:
    """What Gemma 2 and 3 share but RoPE: layer_types (by default layer i slides when `slides(i)`), the window,
    query_pre_attn_scalar, the GeGLU activation."""
    # Early Gemma 2 configs named the activation hidden_act.
    act_field = "hidden_act" if hf.get("hidden_act") and not hf.get("hidden_activation") else "hidden_activation"
    return {
        **layer_types_to_zoo(hf, _LAYER_TYPES, slides, 26),
        "query_scale": float(hf.get("query_pre_attn_scalar", 256)) ** -0.5,
        **glu(hf, act_field, "gelu_pytorch_tanh"),
    }


def gemma_to_hf(cfg: ModelConfig) -> dict:
    scalar = (cfg.query_scale if cfg.query_scale is not None else cfg.head_dim**-0.5) ** -2
    if math.isclose(scalar, round(scalar), rel_tol=1e-6):
        scalar = round(scalar)  # an int, as HF types it
    return {
        **layer_types_to_hf(cfg, _LAYER_TYPES, "an HF Gemma config"),
        "query_pre_attn_scalar": scalar,
        "hidden_activation": hf_activation(cfg.mlp_activations[0]),
    }


def _to_zoo(hf: HFConfig) -> dict:
    # HF's default (and Gemma 2's layout): layer i slides when i is even.
    return {**gemma_to_zoo(hf, lambda i: i % 2 == 0), **rope_to_zoo(hf)}


def _to_hf(cfg: ModelConfig) -> dict:
    return {**gemma_to_hf(cfg), **rope_to_hf(cfg)}


FAMILY = llama_like_family(
    {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "attn_post_norm",
        "pre_feedforward_layernorm": "mlp_norm",
        "post_feedforward_layernorm": "mlp_post_norm",
    },
    model_type="gemma2",
    hf_class="Gemma2ForCausalLM",
    renames={
        **LLAMA_LIKE_RENAMES,
        "vocab_size": ("vocab_size", 256000),
        "hidden_size": ("d_model", 2304),
        "intermediate_size": ("d_ff", 9216),
        "num_hidden_layers": ("num_layers", 26),
        "num_attention_heads": ("num_heads", 8),
        "num_key_value_heads": ("num_kv_heads", 4),
        "head_dim": ("head_dim", 256),
        "max_position_embeddings": ("max_seq_len", 8192),
        "tie_word_embeddings": ("tie_word_embeddings", True),
        "attn_logit_softcapping": ("attn_logits_soft_cap", 50.0),
        "final_logit_softcapping": ("final_logits_soft_cap", 30.0),
    },
    fixed={
        **{
            k: v
            for k, v in ROPE_DECODER.items()
            if k not in ("attention_pattern", "query_scale", "attn_logits_soft_cap", "final_logits_soft_cap")
        },
        "norm_position": "double",
        "norm_scale_plus_one": True,
        "scale_embeddings": True,
    },
    unsupported={"use_bidirectional_attention": (None, False)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
