"""BLOOM (BloomForCausalLM; BigScience 2022, arXiv:2211.05100): ALiBi instead of position embeddings, a LayerNorm
on the word embeddings, pre-LayerNorm with biases, GELU (tanh) MLP of 4 x hidden, biases everywhere, a tied
head, and q/k/v fused into one query_key_value whose rows are grouped per head (models/bloom/modeling_bloom.py
BloomAttention._reshape: view(heads, 3, head_dim)). Falcon stores the same fusion per key/value group
(`grouped_qkv`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.hf.core import (
    DECODER,
    SAME,
    Family,
    HFConfig,
    Weights,
    embedding_rules,
    linear_in,
    mlp_rules,
    norm_rules,
    rule,
)


def grouped_qkv(heads: int, kv_heads: int, head_dim: int):
    """query_key_value [kv_heads * (g + 2) * head_dim, d] (or its bias), whose rows per key/value group are
    its g = heads / kv_heads query heads, then its key, then its value <-> query [d, heads, head_dim], key and
    value [d, kv_heads, head_dim] (biases without the d). BLOOM and Falcon's MHA: g = 1 (per head q, k, v);
    Falcon-7B's MQA: one group; Falcon-40B's GQA: 8 groups."""
    g = heads // kv_heads

    def to_zoo(w):
        lead = w.shape[1:]
        grouped = w.reshape(kv_heads, g + 2, head_dim, *lead)
        parts = (grouped[:, :g].reshape(heads, head_dim, *lead), grouped[:, g], grouped[:, g + 1])
        return tuple(np.moveaxis(x, (0, 1), (-2, -1)) for x in parts)

    def to_hf(q, k, v):
        xp = np if isinstance(q, np.ndarray) else jnp  # numpy when writing, jnp under eval_shape
        lead = q.shape[:-2]

        def first(x):  # [heads, head_dim, *lead]
            return xp.moveaxis(x, (-2, -1), (0, 1))

        grouped = [first(q).reshape(kv_heads, g, head_dim, *lead), first(k)[:, None], first(v)[:, None]]
        return (xp.concatenate(grouped, axis=1).reshape(-1, *lead),)

    return to_zoo, to_hf


def fused_attention_rules(cfg: ModelConfig, prefix: str) -> list:
    """`{prefix}.query_key_value` and `{prefix}.dense` (weights, and biases when the config has them)."""
    qkv = ("attention/query", "attention/key", "attention/value")
    codec = grouped_qkv(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
    rules = [
        rule(f"{prefix}.query_key_value.weight", [f"{x}/kernel" for x in qkv], codec),
        rule(f"{prefix}.dense.weight", "attention/out/kernel", linear_in(cfg.num_heads, cfg.head_dim)),
    ]
    if cfg.attention_bias:
        rules += [
            rule(f"{prefix}.query_key_value.bias", [f"{x}/bias" for x in qkv], codec),
            rule(f"{prefix}.dense.bias", "attention/out/bias", SAME),
        ]
    return rules


def _weights(cfg: ModelConfig) -> Weights:
    p = "transformer.h.{i}"
    layer = [
        *fused_attention_rules(cfg, f"{p}.self_attention"),
        *norm_rules(f"{p}.input_layernorm", "attn_norm", cfg),
        *norm_rules(f"{p}.post_attention_layernorm", "mlp_norm", cfg),
    ]
    layer += mlp_rules(cfg, f"{p}.mlp", {"wi": "dense_h_to_4h", "wo": "dense_4h_to_h"})
    top = [
        *embedding_rules(cfg, "transformer.word_embeddings.weight"),
        *norm_rules("transformer.word_embeddings_layernorm", "embed_norm", cfg),
        *norm_rules("transformer.ln_f", "decoder/final_norm", cfg),
    ]
    return Weights(top, [("decoder", cfg.num_layers, layer)])


def _to_zoo(hf: HFConfig) -> dict:
    # The hub files spell the width n_embed (BloomConfig reads it as hidden_size); the MLP is always 4 x wide.
    d = hf.get("hidden_size") or hf.get("n_embed") or 64
    return {"d_model": d, "d_ff": 4 * d}


def _to_hf(cfg: ModelConfig) -> dict:
    return {"hidden_size": cfg.d_model}  # d_ff != 4 d_model comes back as 4 d_model: save refuses it


FAMILY = Family(
    model_type="bloom",
    hf_class="BloomForCausalLM",
    prefix="transformer.",
    # HF BloomConfig's defaults (toy shapes but bloom's vocabulary). BLOOM has no context field (ALiBi has no
    # table): seq_length, the Megatron-DeepSpeed name of the training context (2048), carries max_seq_len.
    renames={
        "vocab_size": ("vocab_size", 250880),
        "n_layer": ("num_layers", 2),
        "n_head": ("num_heads", 8),
        "seq_length": ("max_seq_len", 2048),
        "layer_norm_epsilon": ("norm_eps", 1e-5),
        "tie_word_embeddings": ("tie_word_embeddings", True),
        "hidden_dropout": ("residual_dropout", 0.0),
        "attention_dropout": ("attention_dropout", 0.0),
        "initializer_range": ("init_std", 0.02),
    },
    fixed={
        **DECODER,
        "norm_position": "pre",
        "norm_type": "layernorm",
        "norm_use_bias": True,
        "norm_scale_plus_one": False,
        "embedding_norm": True,
        "mlp_activations": ("gelu_tanh",),
        "mlp_bias": True,
        "attention_bias": True,
        "attention_out_bias": None,
        "position_embedding": "alibi",
        "qk_norm": "none",
        "attention_pattern": ("global",),
        "query_scale": None,
        "scale_embeddings": False,
        "logits_scale": None,
        "attn_logits_soft_cap": None,
        "final_logits_soft_cap": None,
        "head_dim": None,
        "num_kv_heads": None,
        "embedding_dim": None,
    },
    unsupported={"apply_residual_connection_post_layernorm": (False,)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
    weights=_weights,
    embedding="transformer.word_embeddings.weight",
)
