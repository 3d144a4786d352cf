"""Qwen2 / Qwen2.5 (Qwen2ForCausalLM): LLaMA's tensors and config with biases on q, k and v but not on the
output projection, which transformers hard-codes (models/qwen2/modeling_qwen2.py); no sliding window (every
released Qwen2.5 has use_sliding_window false). Qwen3 shares the window check."""

from __future__ import annotations

from zoo.hf import llama
from zoo.hf.core import HFConfig


def to_zoo(hf: HFConfig) -> dict:
    # transformers 5 writes layer_types; sliding layers only exist with use_sliding_window, refused below.
    if any(kind != "full_attention" for kind in hf.get("layer_types") or ()):
        hf.fail("layer_types", "sliding-window layers are not supported for this family")
    return llama.to_zoo(hf)


# Qwen2Config has no attention_bias field (the biases are fixed); transformers reads head_dim when present.
RENAMES = {
    **{k: v for k, v in llama.LLAMA_LIKE_RENAMES.items() if k != "attention_bias"},
    "vocab_size": ("vocab_size", 151936),
    "intermediate_size": ("d_ff", 22016),
    "max_position_embeddings": ("max_seq_len", 32768),
}
# use_sliding_window true makes layers max_window_layers.. local, a split the cycled attention_pattern lacks.
NO_WINDOW = {"use_sliding_window": (False, None)}

FAMILY = llama.llama_like_family(
    llama.PRE_NORMS,
    model_type="qwen2",
    hf_class="Qwen2ForCausalLM",
    presets="qwen",
    renames=RENAMES,
    fixed={**llama.ROPE_DECODER, "attention_bias": True, "attention_out_bias": False},
    unsupported=NO_WINDOW,
    to_zoo=to_zoo,
    to_hf=llama.to_hf,
)
