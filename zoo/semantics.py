"""Which ModelConfig fields decide what a model computes from its parameters.

Two configs with equal semantics give equal logits for equal parameters. The HF bridge uses this to tell
whether a family expresses a config exactly (zoo/hf/families.py); starting a run from a checkpoint uses it to
refuse a preset that disagrees with the checkpoint (zoo/train/init.py).
"""

from __future__ import annotations

import math
from typing import Any

from zoo.config import RUNTIME_FIELDS, TRAINING_FIELDS, ModelConfig


def semantics(cfg: ModelConfig) -> dict[str, Any]:
    """The fields that decide what the model computes from its parameters, with unused knobs dropped and
    defaults resolved: two configs with equal semantics give equal logits for equal parameters. Left out:
    how it runs (RUNTIME_FIELDS, scan_layers, param_dtype) and training-only fields (TRAINING_FIELDS)."""
    skip = {*RUNTIME_FIELDS, *TRAINING_FIELDS, "scan_layers", "param_dtype"}
    values = {k: v for k, v in cfg.to_dict().items() if k not in skip}
    values["query_scale"] = cfg.query_scale if cfg.query_scale is not None else cfg.head_dim ** -0.5
    values["attention_pattern"] = cfg.layer_kinds()
    values["rope_local_theta"] = cfg.rope_local_theta or cfg.rope_theta
    unused = set()
    if cfg.position_embedding != "rope":
        unused |= {k for k in values if k.startswith("rope_")}
    elif cfg.rope_scaling == "none":
        unused |= {"rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len"}
    elif cfg.rope_scaling == "linear":
        unused |= {"rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len"}
    if not any(k.startswith("local") for k in cfg.attention_pattern):
        unused |= {"sliding_window_size", "rope_local_theta", "rope_scaling_local"}
    if cfg.position_embedding != "relative_bias":
        unused |= {"relative_num_buckets", "relative_max_distance", "relative_bias_shared"}
    if cfg.position_embedding != "learned":
        unused.add("position_offset")
    if not cfg.parallel_layers:
        unused.add("parallel_shared_norm")
    if not cfg.is_encoder_decoder:
        unused.add("num_decoder_layers")
    return {k: v for k, v in values.items() if k not in unused}

def semantic_differences(cfg: ModelConfig, other: ModelConfig) -> list[tuple[str, Any, Any]]:
    """(field, cfg's value, other's) for every semantic field that differs (floats to a relative 1e-6; a field
    one config does not use shows as "<unused>"), sorted by field; attention_pattern, compared layer by
    layer, comes last, since it also differs when only num_layers does."""
    ours, theirs = semantics(cfg), semantics(other)
    out = []
    for name in sorted(ours.keys() | theirs.keys(), key=lambda n: (n == "attention_pattern", n)):
        a, b = ours.get(name, "<unused>"), theirs.get(name, "<unused>")
        close = isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-6)
        if a != b and not close:
            out.append((name, a, b))
    return out
