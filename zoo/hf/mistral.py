"""Mistral (MistralForCausalLM): LLaMA's tensors and config, no biases, and one sliding window on every layer
(Jiang et al. 2023, arXiv:2310.06825 §2) or none (`sliding_window` null). Phi-3 shares the window fields."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import llama
from zoo.hf.core import HFConfig


def window_to_zoo(hf: HFConfig, default: int | None) -> dict:
    """HF `sliding_window` W applies to every layer: a query sees keys with q - k < W (transformers
    masking_utils.sliding_window_overlay), W keys with itself, which is the zoo's sliding_window_size."""
    window = hf.get("sliding_window", default)
    if window is None:
        return {"attention_pattern": ("global",), "sliding_window_size": None}
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        hf.fail("sliding_window", "must be a positive integer or null")
    return {"attention_pattern": ("local",), "sliding_window_size": window}


def window_to_hf(cfg: ModelConfig) -> dict:
    # Any other pattern (local/global mixes, *_nope layers) comes back as ("local",) and save names the field.
    return {"sliding_window": cfg.sliding_window_size}


def to_zoo(hf: HFConfig) -> dict:
    return {**llama.to_zoo(hf), **window_to_zoo(hf, 4096)}


def to_hf(cfg: ModelConfig) -> dict:
    return {**llama.to_hf(cfg), **window_to_hf(cfg)}


# MistralConfig has no attention_bias field: every projection is bias-free (modeling_mistral.py).
RENAMES = {k: v for k, v in llama.LLAMA_LIKE_RENAMES.items() if k != "attention_bias"}
FIXED = {k: v for k, v in llama.ROPE_DECODER.items() if k != "attention_pattern"}

FAMILY = llama.llama_like_family(
    llama.PRE_NORMS,
    model_type="mistral",
    hf_class="MistralForCausalLM",
    # HF MistralConfig's defaults (Mistral-7B-v0.1's shapes; eps and context differ from the released file).
    renames={
        **RENAMES,
        "intermediate_size": ("d_ff", 14336),
        "num_key_value_heads": ("num_kv_heads", 8),
        "max_position_embeddings": ("max_seq_len", 131072),
    },
    fixed={**FIXED, "attention_bias": False},
    unsupported={},
    to_zoo=to_zoo,
    to_hf=to_hf,
)
