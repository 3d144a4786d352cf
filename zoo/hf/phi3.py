"""Phi-3 (Phi3ForCausalLM): Mistral's model (optional sliding window on every layer, no biases) whose checkpoints
store q/k/v as one `qkv_proj` and the SwiGLU gate and up as one `gate_up_proj` (models/phi3/modeling_phi3.py:
q | k | v rows, then gate | up rows); the split is done here, the zoo model keeps separate kernels."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.hf import llama, mistral
from zoo.hf.core import HFConfig, Rule, linear_in, mlp_rules, rule


def _fused(*shapes: tuple[int, ...]):
    """One Linear [sum of prod(shape), in] <-> kernels [in, *shape], one per shape, in row order."""
    bounds = np.cumsum([math.prod(s) for s in shapes])[:-1]

    def to_zoo(w):
        return tuple(part.T.reshape(w.shape[1], *s) for part, s in zip(np.split(w, bounds), shapes, strict=True))

    def to_hf(*kernels):
        xp = np if isinstance(kernels[0], np.ndarray) else jnp  # numpy when writing, jnp under eval_shape
        return (xp.concatenate([k.reshape(k.shape[0], -1).T for k in kernels]),)

    return to_zoo, to_hf


def _projections(cfg: ModelConfig) -> list[Rule]:
    h, kv, hd, ff, p = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_ff, llama.LAYER
    qkv = [f"attention/{x}/kernel" for x in ("query", "key", "value")]
    return [
        rule(f"{p}.self_attn.qkv_proj.weight", qkv, _fused((h, hd), (kv, hd), (kv, hd))),
        rule(f"{p}.self_attn.o_proj.weight", "attention/out/kernel", linear_in(h, hd)),
        rule(f"{p}.mlp.gate_up_proj.weight", ["mlp/wi_0/kernel", "mlp/wi_1/kernel"], _fused((ff,), (ff,))),
        *mlp_rules(cfg, f"{p}.mlp", {"wo": "down_proj"}),
    ]


def _to_zoo(hf: HFConfig) -> dict:
    return {**llama.to_zoo(hf), **mistral.window_to_zoo(hf, None)}


def _to_hf(cfg: ModelConfig) -> dict:
    # Phi3Config's default pad_token_id, 32000 (the released <|endoftext|>), becomes the embedding's padding_idx,
    # which torch refuses outside the vocabulary: smaller vocabularies get none.
    return {**mistral.to_hf(cfg), **({"pad_token_id": None} if cfg.vocab_size <= 32000 else {})}


FAMILY = llama.llama_like_family(
    llama.PRE_NORMS,
    projections=_projections,
    model_type="phi3",
    hf_class="Phi3ForCausalLM",
    # HF Phi3Config's defaults (= Phi-3-mini-4k's shapes); it has no head_dim field but the attention reads one.
    renames={
        **mistral.RENAMES,
        "vocab_size": ("vocab_size", 32064),
        "hidden_size": ("d_model", 3072),
        "intermediate_size": ("d_ff", 8192),
        "max_position_embeddings": ("max_seq_len", 4096),
        "rms_norm_eps": ("norm_eps", 1e-5),
        "resid_pdrop": ("residual_dropout", 0.0),
    },
    fixed={**mistral.FIXED, "attention_bias": False},
    unsupported={},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
