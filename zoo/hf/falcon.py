"""Falcon (FalconForCausalLM): parallel attention and MLP (`parallel_attn`), LayerNorm with biases, RoPE, exact
GELU, no biases on the projections (`bias` false), a tied head (Falcon2-11B: untied), and q/k/v fused into one
query_key_value (models/falcon/modeling_falcon.py FalconAttention._split_heads). Two layouts of the block:
Falcon-7B (new_decoder_architecture false): multi-query, one norm feeding both branches; Falcon-40B/180B
(new_decoder_architecture true): grouped key/value heads, ln_attn and ln_mlp (num_ln_in_parallel_attn 2), or
one shared norm (Falcon2-11B: num_ln_in_parallel_attn 1). Every fusion is BLOOM's `grouped_qkv`: MQA is one
group, the old layout without MQA is a group per head."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf.bloom import fused_attention_rules
from zoo.hf.core import (
    DECODER,
    Family,
    HFConfig,
    Weights,
    activation,
    embedding_rules,
    hf_activation,
    mlp_rules,
    norm_rules,
)
from zoo.hf.llama import rope_to_hf, rope_to_zoo


def _weights(cfg: ModelConfig) -> Weights:
    p = "transformer.h.{i}"
    norms = (
        {"input_layernorm": "attn_norm"} if cfg.parallel_shared_norm else {"ln_attn": "attn_norm", "ln_mlp": "mlp_norm"}
    )
    layer = [
        *fused_attention_rules(cfg, f"{p}.self_attention"),
        *mlp_rules(cfg, f"{p}.mlp", {"wi": "dense_h_to_4h", "wo": "dense_4h_to_h"}),
    ]
    for hf, zoo in norms.items():
        layer += norm_rules(f"{p}.{hf}", zoo, cfg)
    top = [
        *embedding_rules(cfg, "transformer.word_embeddings.weight"),
        *norm_rules("transformer.ln_f", "decoder/final_norm", cfg),
    ]
    return Weights(top, [("decoder", cfg.num_layers, layer)])


def _to_zoo(hf: HFConfig) -> dict:
    heads = hf.get("num_attention_heads", 71)
    kv = hf.get("num_kv_heads") or heads
    if hf.get("new_decoder_architecture", False):
        norms = hf.get("num_ln_in_parallel_attn") or 2
        if norms not in (1, 2):
            hf.fail("num_ln_in_parallel_attn", "must be 1 or 2")
        shared = norms == 1
    else:
        if hf.get("num_ln_in_parallel_attn") not in (None, 1):
            hf.fail("num_ln_in_parallel_attn", "the old layout (new_decoder_architecture false) has one norm")
        if not hf.get("multi_query", True) and kv != heads:
            hf.fail("num_kv_heads", "the old layout without multi_query has a key/value head per query head")
        kv, shared = (1 if hf.get("multi_query", True) else heads), True
    d = hf.get("hidden_size") or hf.get("n_embed") or 4544
    bias = hf.get("bias", False)
    return {
        "d_model": d,
        "d_ff": hf.get("ffn_hidden_size") or 4 * d,
        "num_kv_heads": kv,
        "parallel_shared_norm": shared,
        "attention_bias": bias,
        "mlp_bias": bias,
        "mlp_activations": (activation(hf, "activation", "gelu"),),
        **rope_to_zoo(hf),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    # Falcon-7B's layout when it expresses the config (multi-query, one norm), the new one otherwise.
    old = cfg.num_kv_heads == 1 and cfg.parallel_shared_norm
    layout = (
        {"new_decoder_architecture": False, "multi_query": True, "num_kv_heads": 1}
        if old
        else {
            "new_decoder_architecture": True,
            "multi_query": True,
            "num_kv_heads": cfg.num_kv_heads,
            "num_ln_in_parallel_attn": 1 if cfg.parallel_shared_norm else 2,
        }
    )
    return {
        **layout,
        "hidden_size": cfg.d_model,
        "ffn_hidden_size": cfg.d_ff,
        "bias": cfg.attention_bias,
        "activation": hf_activation(cfg.mlp_activations[0], "gelu_pytorch_tanh"),
        **rope_to_hf(cfg),
    }


FAMILY = Family(
    model_type="falcon",
    hf_class="FalconForCausalLM",
    prefix="transformer.",
    # HF FalconConfig's defaults (= Falcon-7B's shapes).
    renames={
        "vocab_size": ("vocab_size", 65024),
        "num_hidden_layers": ("num_layers", 32),
        "num_attention_heads": ("num_heads", 71),
        "max_position_embeddings": ("max_seq_len", 2048),
        "layer_norm_epsilon": ("norm_eps", 1e-5),
        "tie_word_embeddings": ("tie_word_embeddings", True),
        "hidden_dropout": ("residual_dropout", 0.0),
        "attention_dropout": ("attention_dropout", 0.0),
        "initializer_range": ("init_std", 0.02),
    },
    fixed={
        **DECODER,
        "parallel_layers": True,
        "norm_position": "pre",
        "norm_type": "layernorm",
        "norm_use_bias": True,
        "norm_scale_plus_one": False,
        "position_embedding": "rope",
        "rope_fraction": 1.0,
        "rope_local_theta": None,
        "qk_norm": "none",
        "attention_pattern": ("global",),
        "query_scale": None,
        "attention_out_bias": None,
        "scale_embeddings": False,
        "embedding_norm": False,
        "logits_scale": None,
        "attn_logits_soft_cap": None,
        "final_logits_soft_cap": None,
        "head_dim": None,
        "embedding_dim": None,
    },
    # alibi: Falcon-RW adds it before the 1/sqrt(head_dim) scaling (ALiBi slopes scaled by it), which the zoo's
    # ALiBi does not do; parallel_attn false (Falcon-RW's serial block) is not mapped.
    unsupported={"alibi": (False,), "parallel_attn": (True,)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
    weights=_weights,
    embedding="transformer.word_embeddings.weight",
)
