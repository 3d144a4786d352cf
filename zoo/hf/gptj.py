"""GPT-J (GPTJForCausalLM; Wang & Komatsuzaki 2021, kingoflolz/mesh-transformer-jax): one LayerNorm per layer
feeding a parallel residual x + attn(ln x) + mlp(ln x), RoPE on the first `rotary_dim` dims of each head in the
interleaved layout (`rotate_every_two`, pairs (2i, 2i+1)), bias-free q/k/v/out_proj, biased fc_in/fc_out, and an
untied lm_head with a bias (transformers models/gptj/modeling_gptj.py)."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf.core import (
    DECODER,
    Family,
    HFConfig,
    Weights,
    activation,
    attention_rules,
    embedding_rules,
    hf_activation,
    mlp_rules,
    norm_rules,
)


def _weights(cfg: ModelConfig) -> Weights:
    p = "transformer.h.{i}"
    layer = [
        *attention_rules(cfg, f"{p}.attn", "attention", ("q_proj", "k_proj", "v_proj", "out_proj")),
        *mlp_rules(cfg, f"{p}.mlp", {"wi": "fc_in", "wo": "fc_out"}),
        *norm_rules(f"{p}.ln_1", "attn_norm", cfg),
    ]
    top = [*embedding_rules(cfg, "transformer.wte.weight"), *norm_rules("transformer.ln_f", "decoder/final_norm", cfg)]
    return Weights(top, [("decoder", cfg.num_layers, layer)])


def _to_zoo(hf: HFConfig) -> dict:
    d = hf.get("n_embd", 4096)
    head_dim = d // hf.get("n_head", 16)
    rotary = hf.get("rotary_dim", 64)
    # null would rotate n_embd dims of every head-sized slice, which only works with one head: refused.
    if not isinstance(rotary, int) or isinstance(rotary, bool) or not 0 < rotary <= head_dim or rotary % 2:
        hf.fail("rotary_dim", f"must be an even number of dims, at most head_dim={head_dim}")
    return {
        "d_ff": hf.get("n_inner") or 4 * d,
        "rope_fraction": rotary / head_dim,
        "mlp_activations": (activation(hf, "activation_function", "gelu_new"),),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    return {
        "n_inner": cfg.d_ff,
        "rotary_dim": round(cfg.head_dim * cfg.rope_fraction),
        "activation_function": hf_activation(cfg.mlp_activations[0], "gelu_new"),
    }


FAMILY = Family(
    model_type="gptj",
    hf_class="GPTJForCausalLM",
    prefix="transformer.",
    # HF GPTJConfig's defaults (= GPT-J 6B).
    renames={
        "vocab_size": ("vocab_size", 50400),
        "n_embd": ("d_model", 4096),
        "n_layer": ("num_layers", 28),
        "n_head": ("num_heads", 16),
        "n_positions": ("max_seq_len", 2048),
        "layer_norm_epsilon": ("norm_eps", 1e-5),
        "embd_pdrop": ("embedding_dropout", 0.0),
        "attn_pdrop": ("attention_dropout", 0.0),
        "resid_pdrop": ("residual_dropout", 0.0),
        "initializer_range": ("init_std", 0.02),
    },
    # The sinusoid table hard-codes base 10000 (create_sinusoidal_positions); lm_head always has a bias.
    fixed={
        **DECODER,
        "parallel_layers": True,
        "parallel_shared_norm": True,
        "norm_position": "pre",
        "norm_type": "layernorm",
        "norm_use_bias": True,
        "norm_scale_plus_one": False,
        "mlp_bias": True,
        "attention_bias": False,
        "qk_norm": "none",
        "position_embedding": "rope",
        "rope_theta": 10000.0,
        "rope_interleaved": True,
        "rope_scaling": "none",
        "rope_local_theta": None,
        "attention_pattern": ("global",),
        "scale_embeddings": False,
        "attn_logits_soft_cap": None,
        "final_logits_soft_cap": None,
        "query_scale": None,
        "tie_word_embeddings": False,
        "lm_head_bias": True,
    },
    # A tied GPT-J would share lm_head.weight but keep its own bias, which the zoo does not express.
    unsupported={"tie_word_embeddings": (False,)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
    weights=_weights,
    embedding="transformer.wte.weight",
    ignored=(r"\.attn\.(masked_)?bias$",),  # the causal-mask buffers older checkpoints stored
)
