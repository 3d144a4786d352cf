"""Which ModelConfig fields decide what a model computes from its parameters.

Two configs with equal semantics give equal logits for equal parameters. The HF bridge uses this to tell
whether a family expresses a config exactly (zoo/hf/families.py); starting a run from a checkpoint uses it to
refuse a preset that disagrees with the checkpoint (zoo/train/init.py).
"""

from __future__ import annotations

import math
from typing import Any

from zoo.applicability import unused_fields
from zoo.config import ModelConfig

# Fields that change how a model is computed, not what its parameters mean: a checkpoint saved with one
# value loads with another (switch on bf16 compute or remat after a restart).
RUNTIME_FIELDS = ("dtype", "remat_policy", "attention_impl", "moe_matmul")
# Fields that matter only while training: initialisation, regularisation, the auxiliary losses, the multi-token
# prediction modules (extra parameters the model's logits never read).
TRAINING_FIELDS = (
    "init_scheme",
    "init_std",
    "z_loss_multiplier",
    "mtp_depth",
    "load_balancing_multiplier",
    "load_balancing_per_sequence",
    "router_z_loss_multiplier",
    "router_jitter",
    "embedding_dropout",
    "attention_dropout",
    "residual_dropout",
    "mlp_hidden_dropout",
    "final_norm_dropout",
)


def semantics(cfg: ModelConfig) -> dict[str, Any]:
    """The fields that decide what the model computes from its parameters, with defaults resolved and the
    fields zoo.applicability says the rest of the config makes meaningless dropped: two configs with equal
    semantics give equal logits for equal parameters. Left out too: how it runs (RUNTIME_FIELDS,
    scan_layers, param_dtype) and training-only fields (TRAINING_FIELDS)."""
    skip = {*RUNTIME_FIELDS, *TRAINING_FIELDS, "scan_layers", "param_dtype", *unused_fields(cfg)}
    values = {k: v for k, v in cfg.to_dict().items() if k not in skip}
    values["query_scale"] = cfg.query_scale if cfg.query_scale is not None else cfg.head_dim**-0.5
    values["attention_pattern"] = cfg.layer_kinds()
    if "moe_pattern" in values:  # layer by layer: one list of MLP kinds has several (prefix, pattern) spellings
        kinds = cfg.mlp_kinds()
        values["moe_pattern"] = kinds
        values["dense_prefix_layers"] = kinds.index("moe")  # the dense layers before the first MoE one
    if "rope_local_theta" in values:
        values["rope_local_theta"] = cfg.rope_local_theta or cfg.rope_theta
    return values


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
