"""GPT-2 (GPT2LMHeadModel): learned positions, pre-LayerNorm with biases, GELU MLP, and Conv1D layers, which
store weights [in, out] as the zoo does, with q/k/v fused into one c_attn."""

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
    activation,
    embedding_rules,
    hf_activation,
    norm_rules,
    rule,
)


def _conv1d_in(*inp: int):
    """Conv1D [prod(inp), out] <-> kernel [*inp, out]."""
    return (lambda w: (w.reshape(*inp, w.shape[-1]),), lambda k: (k.reshape(-1, k.shape[-1]),))


def _fused_qkv(heads: int, head_dim: int):
    """c_attn: one Conv1D [d, 3 * heads * head_dim] (or its bias [3 * heads * head_dim]) <-> query, key,
    value [d, heads, head_dim] (biases [heads, head_dim])."""

    def to_zoo(w):
        lead = w.shape[:-1]
        return tuple(part.reshape(*lead, heads, head_dim) for part in np.split(w, 3, axis=-1))

    def to_hf(q, k, v):
        lead = q.shape[:-2]
        xp = np if isinstance(q, np.ndarray) else jnp  # numpy when writing, jnp under eval_shape
        return (xp.concatenate([x.reshape(*lead, -1) for x in (q, k, v)], axis=-1),)

    return to_zoo, to_hf


def _weights(cfg: ModelConfig) -> Weights:
    h, hd = cfg.num_heads, cfg.head_dim
    p = "transformer.h.{i}"
    qkv = ("attention/query", "attention/key", "attention/value")
    layer = [
        rule(f"{p}.attn.c_attn.weight", [f"{x}/kernel" for x in qkv], _fused_qkv(h, hd)),
        rule(f"{p}.attn.c_attn.bias", [f"{x}/bias" for x in qkv], _fused_qkv(h, hd)),
        rule(f"{p}.attn.c_proj.weight", "attention/out/kernel", _conv1d_in(h, hd)),
        rule(f"{p}.attn.c_proj.bias", "attention/out/bias", SAME),
        *norm_rules(f"{p}.ln_1", "attn_norm", cfg),
        *norm_rules(f"{p}.ln_2", "mlp_norm", cfg),
        rule(f"{p}.mlp.c_fc.weight", "mlp/wi/kernel", SAME),
        rule(f"{p}.mlp.c_fc.bias", "mlp/wi/bias", SAME),
        rule(f"{p}.mlp.c_proj.weight", "mlp/wo/kernel", SAME),
        rule(f"{p}.mlp.c_proj.bias", "mlp/wo/bias", SAME),
    ]
    top = [
        *embedding_rules(cfg, "transformer.wte.weight"),
        rule("transformer.wpe.weight", "position_embed/embedding", SAME),
        *norm_rules("transformer.ln_f", "decoder/final_norm", cfg),
    ]
    return Weights(top, [("decoder", cfg.num_layers, layer)])


def _to_zoo(hf: HFConfig) -> dict:
    scale = hf.get("scale_attn_weights", True)
    return {
        "d_ff": hf.get("n_inner") or 4 * hf.get("n_embd", 768),
        "mlp_activations": (activation(hf, "activation_function", "gelu_new"),),
        "query_scale": None if scale else 1.0,
    }


def _to_hf(cfg: ModelConfig) -> dict:
    return {
        "n_inner": cfg.d_ff,
        "activation_function": hf_activation(cfg.mlp_activations[0], "gelu_new"),
        "scale_attn_weights": cfg.query_scale != 1.0,
    }


FAMILY = Family(
    model_type="gpt2",
    hf_class="GPT2LMHeadModel",
    prefix="transformer.",
    renames={
        "vocab_size": ("vocab_size", 50257),
        "n_embd": ("d_model", 768),
        "n_layer": ("num_layers", 12),
        "n_head": ("num_heads", 12),
        "n_positions": ("max_seq_len", 1024),
        "layer_norm_epsilon": ("norm_eps", 1e-5),
        "tie_word_embeddings": ("tie_word_embeddings", True),
        "embd_pdrop": ("embedding_dropout", 0.1),
        "attn_pdrop": ("attention_dropout", 0.1),
        "resid_pdrop": ("residual_dropout", 0.1),
        "initializer_range": ("init_std", 0.02),
    },
    fixed={
        **DECODER,
        "norm_position": "pre",
        "norm_type": "layernorm",
        "norm_use_bias": True,
        "norm_scale_plus_one": False,
        "mlp_bias": True,
        "attention_bias": True,
        "qk_norm": "none",
        "position_embedding": "learned",
        "attention_pattern": ("global",),
        "scale_embeddings": False,
        "attn_logits_soft_cap": None,
        "final_logits_soft_cap": None,
        "init_scheme": "gpt2_scaled",
    },
    unsupported={"scale_attn_by_inverse_layer_idx": (False,), "add_cross_attention": (False,)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
    weights=_weights,
    embedding="transformer.wte.weight",
    ignored=(r"\.attn\.(masked_)?bias$",),  # the causal-mask buffers older checkpoints stored
)
