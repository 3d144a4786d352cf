"""Command A (Cohere2ForCausalLM): Command R's block (zoo/hf/cohere.py) without q/k norms, in a repeating pattern of
sliding-window layers with RoPE and full-attention layers without positions (models/cohere2/modeling_cohere2.py:
RoPE only where sliding_window is set; transformers docs/source/en/model_doc/cohere2.md)."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import cohere
from zoo.hf.core import HFConfig, layer_types_to_hf, layer_types_to_zoo
from zoo.hf.llama import llama_like_family

_LAYER_TYPES = {"sliding_attention": "local", "full_attention": "global_nope"}


def _to_zoo(hf: HFConfig) -> dict:
    # Cohere2Config's default layout (and 4.x configs' sliding_window_pattern): every pattern-th layer is global.
    pattern = hf.get("sliding_window_pattern", 4)
    return {**layer_types_to_zoo(hf, _LAYER_TYPES, lambda i: (i + 1) % pattern != 0, 40), **cohere.to_zoo(hf, 10000.0)}


def _to_hf(cfg: ModelConfig) -> dict:
    return {**layer_types_to_hf(cfg, _LAYER_TYPES, "HF cohere2 (RoPE on sliding layers only)"), **cohere.to_hf(cfg)}


FAMILY = llama_like_family(
    {"input_layernorm": "attn_norm"},
    model_type="cohere2",
    hf_class="Cohere2ForCausalLM",
    presets="cohere",
    renames=cohere.RENAMES,
    fixed={k: v for k, v in cohere.FIXED.items() if k != "attention_pattern"},
    unsupported={},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
