"""GPT-NeoX and Pythia (GPTNeoXForCausalLM; Black et al. 2022, arXiv:2204.06745; Biderman et al. 2023,
arXiv:2304.01373): LayerNorms with biases, two per layer feeding a parallel residual x + attn(ln1 x) + mlp(ln2 x)
(`use_parallel_residual`; false is the serial pre-norm block), rotate-half RoPE on `rotary_pct` of each head's
dims, biased Linears with q/k/v fused per head, an untied output head named embed_out
(transformers models/gpt_neox/modeling_gpt_neox.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.hf import llama
from zoo.hf.core import (
    DECODER,
    SAME,
    Family,
    HFConfig,
    Weights,
    activation,
    embedding_rules,
    hf_activation,
    linear_in,
    mlp_rules,
    norm_rules,
    rule,
)


def _fused_qkv(heads: int, head_dim: int):
    """query_key_value [heads * 3 * head_dim, d] (or its bias) <-> query, key, value kernels [d, heads, head_dim]
    (biases [heads, head_dim]). The output is viewed as [..., heads, 3 * head_dim] and chunked into q | k | v,
    so the rows run head by head, q, k, v within each head."""

    def to_zoo(w):
        parts = w.reshape(heads, 3, head_dim, *w.shape[1:])
        return tuple(p if p.ndim == 2 else p.transpose(2, 0, 1) for p in (parts[:, j] for j in range(3)))

    def to_hf(q, k, v):
        xp = np if isinstance(q, np.ndarray) else jnp  # numpy when writing, jnp under eval_shape
        per_head = [x if x.ndim == 2 else x.transpose(1, 2, 0) for x in (q, k, v)]  # [heads, head_dim, (d)]
        stacked = xp.stack(per_head, axis=1)
        return (stacked.reshape(-1) if q.ndim == 2 else stacked.reshape(-1, q.shape[0]),)

    return to_zoo, to_hf


def _weights(cfg: ModelConfig) -> Weights:
    h, hd, p = cfg.num_heads, cfg.head_dim, "gpt_neox.layers.{i}"
    qkv = [f"attention/{x}" for x in ("query", "key", "value")]
    layer = [
        rule(f"{p}.attention.query_key_value.weight", [f"{x}/kernel" for x in qkv], _fused_qkv(h, hd)),
        rule(f"{p}.attention.dense.weight", "attention/out/kernel", linear_in(h, hd)),
        *mlp_rules(cfg, f"{p}.mlp", {"wi": "dense_h_to_4h", "wo": "dense_4h_to_h"}),
        *norm_rules(f"{p}.input_layernorm", "attn_norm", cfg),
        *norm_rules(f"{p}.post_attention_layernorm", "mlp_norm", cfg),
    ]
    if cfg.attention_bias:
        layer += [
            rule(f"{p}.attention.query_key_value.bias", [f"{x}/bias" for x in qkv], _fused_qkv(h, hd)),
            rule(f"{p}.attention.dense.bias", "attention/out/bias", SAME),
        ]
    top = [
        *embedding_rules(cfg, "gpt_neox.embed_in.weight", head="embed_out.weight"),
        *norm_rules("gpt_neox.final_layer_norm", "decoder/final_norm", cfg),
    ]
    return Weights(top, [("decoder", cfg.num_layers, layer)])


def _to_zoo(hf: HFConfig) -> dict:
    head_dim = hf.get("hidden_size", 6144) // hf.get("num_attention_heads", 64)
    dropout = hf.get("hidden_dropout", 0.0)  # on the embeddings and on both branches
    return {
        "mlp_activations": (activation(hf, "hidden_act", "gelu"),),
        "residual_dropout": dropout,
        "embedding_dropout": dropout,
        # Each branch has its own norm in the parallel block; a serial block has no parallel_shared_norm.
        **({"parallel_shared_norm": False} if hf.get("use_parallel_residual", True) else {}),
        **llama.rope_to_zoo(hf, partial=("rotary_pct", 0.25, head_dim), theta="rotary_emb_base"),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    return {
        "hidden_act": hf_activation(cfg.mlp_activations[0]),
        "hidden_dropout": cfg.residual_dropout,
        **llama.rope_to_hf(cfg, partial="rotary_pct", theta="rotary_emb_base"),
    }


FAMILY = Family(
    model_type="gpt_neox",
    hf_class="GPTNeoXForCausalLM",
    prefix="gpt_neox.",
    # HF GPTNeoXConfig's defaults (= GPT-NeoX-20B).
    renames={
        "vocab_size": ("vocab_size", 50432),
        "hidden_size": ("d_model", 6144),
        "num_hidden_layers": ("num_layers", 44),
        "num_attention_heads": ("num_heads", 64),
        "intermediate_size": ("d_ff", 24576),
        "max_position_embeddings": ("max_seq_len", 2048),
        "layer_norm_eps": ("norm_eps", 1e-5),
        "tie_word_embeddings": ("tie_word_embeddings", False),
        "use_parallel_residual": ("parallel_layers", True),
        "attention_bias": ("attention_bias", True),
        "attention_dropout": ("attention_dropout", 0.0),
        "initializer_range": ("init_std", 0.02),
    },
    fixed={
        **{k: v for k, v in DECODER.items() if k != "parallel_layers"},
        "norm_position": "pre",
        "norm_type": "layernorm",
        "norm_use_bias": True,
        "norm_scale_plus_one": False,
        "mlp_bias": True,
        "qk_norm": "none",
        "position_embedding": "rope",
        "rope_interleaved": False,
        "rope_local_theta": None,
        "attention_pattern": ("global",),
        "scale_embeddings": False,
        "attn_logits_soft_cap": None,
        "final_logits_soft_cap": None,
        "query_scale": None,
        "lm_head_bias": False,
    },
    unsupported={},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
    weights=_weights,
    embedding="gpt_neox.embed_in.weight",
    head="embed_out.weight",
    ignored=(r"\.attention\.(masked_)?bias$", r"rotary_emb\.inv_freq$"),  # buffers older checkpoints stored
)
