"""OPT (OPTForCausalLM; Zhang et al. 2022, arXiv:2205.01068): learned positions read with an offset of 2 rows
(models/opt/modeling_opt.py OPTLearnedPositionalEmbedding), LayerNorm with biases before each sublayer (or
after it: opt-350m's do_layer_norm_before false, which also drops the final norm), ReLU MLP, biases on every
projection, a tied head; opt-350m's 512-wide embedding reaches the 1024-wide stream through bias-free
project_in / project_out Linears."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf.core import (
    DECODER,
    SAME,
    TRANSPOSE,
    Family,
    HFConfig,
    Weights,
    activation,
    attention_rules,
    embedding_rules,
    hf_activation,
    mlp_rules,
    norm_rules,
    rule,
)

_BASE = "model.decoder"


def _weights(cfg: ModelConfig) -> Weights:
    p = f"{_BASE}.layers.{{i}}"
    layer = [
        *attention_rules(cfg, f"{p}.self_attn", "attention", ("q_proj", "k_proj", "v_proj", "out_proj")),
        *norm_rules(f"{p}.self_attn_layer_norm", "attn_norm", cfg),
        *norm_rules(f"{p}.final_layer_norm", "mlp_norm", cfg),
        *mlp_rules(cfg, p, {"wi": "fc1", "wo": "fc2"}),
    ]
    top = [
        *embedding_rules(cfg, f"{_BASE}.embed_tokens.weight"),
        rule(f"{_BASE}.embed_positions.weight", "position_embed/embedding", SAME),
    ]
    if cfg.embedding_dim != cfg.d_model:
        top += [
            rule(f"{_BASE}.project_in.weight", "project_in/kernel", TRANSPOSE),
            rule(f"{_BASE}.project_out.weight", "project_out/kernel", TRANSPOSE),
        ]
    if cfg.final_norm:
        top += norm_rules(f"{_BASE}.final_layer_norm", "decoder/final_norm", cfg)
    return Weights(top, [("decoder", cfg.num_layers, layer)])


def _to_zoo(hf: HFConfig) -> dict:
    pre, bias = hf.get("do_layer_norm_before", True), hf.get("enable_bias", True)
    return {
        "norm_position": "pre" if pre else "post",
        "final_norm": bool(pre),
        "attention_bias": bias,
        "mlp_bias": bias,
        "mlp_activations": (activation(hf, "activation_function", "relu"),),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    # norm_position double/output and a pre-norm stack without its final norm come back as pre + final norm,
    # so save refuses them naming the field.
    return {
        "do_layer_norm_before": cfg.norm_position == "pre",
        "enable_bias": cfg.attention_bias,
        "activation_function": hf_activation(cfg.mlp_activations[0]),
    }


FAMILY = Family(
    model_type="opt",
    hf_class="OPTForCausalLM",
    prefix="model.",
    # HF OPTConfig's defaults (= opt-125m's shapes); word_embed_proj_dim absent = hidden_size.
    renames={
        "vocab_size": ("vocab_size", 50272),
        "hidden_size": ("d_model", 768),
        "num_hidden_layers": ("num_layers", 12),
        "num_attention_heads": ("num_heads", 12),
        "ffn_dim": ("d_ff", 3072),
        "max_position_embeddings": ("max_seq_len", 2048),
        "word_embed_proj_dim": ("embedding_dim", None),
        "tie_word_embeddings": ("tie_word_embeddings", True),
        "dropout": ("residual_dropout", 0.1),
        "attention_dropout": ("attention_dropout", 0.0),
        "init_std": ("init_std", 0.02),
    },
    # nn.LayerNorm's eps (1e-5) is hard-coded; OPTLearnedPositionalEmbedding.offset = 2.
    fixed={
        **{k: v for k, v in DECODER.items() if k != "final_norm"},
        "norm_type": "layernorm",
        "norm_eps": 1e-5,
        "norm_use_bias": True,
        "norm_scale_plus_one": False,
        "position_embedding": "learned",
        "position_offset": 2,
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
        "num_kv_heads": None,
    },
    unsupported={"layer_norm_elementwise_affine": (True,), "_remove_final_layer_norm": (False,)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
    weights=_weights,
    embedding=f"{_BASE}.embed_tokens.weight",
)
