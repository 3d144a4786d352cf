"""The benchmark's model shapes, built from the presets' families so every knob but size is the family's.

LLaMA-shaped: "25m" is the issue's model (d_model 512, 6 layers, 8 heads, d_ff 1376, vocab 8192: 27.4M
parameters); "110m" is GPT-2-small-sized (768, 12, 12, 2048, vocab 16384: 110M); "1b" is the accelerator's
(2048, 22, 16 heads / 8 KV, 5632, vocab 32000: 1.17B, TinyLlama's shape). Gemma-2- and PaLM-style siblings
keep d_model, depth, heads, d_ff and vocab and switch on their family's knobs.
"""

from __future__ import annotations

import os

import zoo
from zoo.config import ModelConfig

SIZES = {
    # name: d_model, num_layers, num_heads, num_kv_heads, d_ff, vocab
    "smoke": (128, 2, 4, 4, 344, 1024),
    "25m": (512, 6, 8, 8, 1376, 8192),
    "110m": (768, 12, 12, 12, 2048, 16384),
    "1b": (2048, 22, 16, 8, 5632, 32000),
}


def sized(cfg: ModelConfig, shape: str | tuple, max_seq_len: int, **extra) -> ModelConfig:
    """`cfg` at `shape`: a SIZES name or its (d_model, num_layers, num_heads, num_kv_heads, d_ff, vocab)."""
    d, layers, heads, kv, ff, vocab = SIZES[shape] if isinstance(shape, str) else shape
    values = dict(
        vocab_size=vocab,
        d_model=d,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=d // heads,
        d_ff=ff,
        max_seq_len=max_seq_len,
    )
    return cfg.replace(**{**values, **extra})


def llama(size: str, max_seq_len: int = 2048, **extra) -> ModelConfig:
    """LLaMA: pre-RMSNorm, SwiGLU, RoPE, untied head, serial block."""
    return sized(zoo.get_config("llama-tiny"), size, max_seq_len, **extra)


def gemma2(size: str, max_seq_len: int = 2048, window: int | None = None, **extra) -> ModelConfig:
    """Gemma 2: local/global alternation (window = half the context by default, as 4096 of 8192), attention
    and final-logit soft-caps, four norms per block, GeGLU, tied and scaled embeddings."""
    d, _, heads, *_ = SIZES[size]
    return sized(
        zoo.get_config("gemma2-tiny"),
        size,
        max_seq_len,
        query_scale=(d // heads) ** -0.5,
        sliding_window_size=window or max(max_seq_len // 2, 1),
        **extra,
    )


def palm(size: str, max_seq_len: int = 2048, **extra) -> ModelConfig:
    """PaLM: parallel attention + MLP from one LayerNorm, multi-query attention, tied head, z-loss."""
    return sized(zoo.get_config("palm-tiny"), size, max_seq_len, **{"num_kv_heads": 1, **extra})


# The accelerator plan's size; BENCH_GPU_SIZE=smoke runs that plan's code at a tiny size (on CPU, with
# BENCH_ALLOW_CPU=1) to check it before a GPU session spends its minutes.
GPU_SIZE = os.environ.get("BENCH_GPU_SIZE", "1b")
GPU_SEQ, GPU_NEW = (2048, 256) if GPU_SIZE != "smoke" else (128, 16)

FAMILIES = {"llama": llama, "gemma2": gemma2, "palm": palm}
