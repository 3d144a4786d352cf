"""The family registry, and the round trip that decides which family expresses a ModelConfig exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

from zoo.config import RUNTIME_FIELDS, TRAINING_FIELDS, ModelConfig
from zoo.hf import gemma2, gpt2, llama, olmo2, t5
from zoo.hf.core import Family

# In the order `family_of` tries them. A new family: its module, and one entry here.
FAMILIES: dict[str, Family] = {f.model_type: f for f in (gpt2.FAMILY, t5.FAMILY, llama.FAMILY, gemma2.FAMILY,
                                                         olmo2.FAMILY)}

# Fields `save` does not hold to the family: how the model runs (the layout and storage dtype of the params
# included), and training-only settings.
_NOT_COMPARED = {*RUNTIME_FIELDS, *TRAINING_FIELDS, "scan_layers", "param_dtype"}


def _semantics(cfg: ModelConfig) -> dict:
    """The fields that decide what the model computes, with unused knobs dropped and defaults resolved."""
    values = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_COMPARED}
    values["query_scale"] = cfg.query_scale if cfg.query_scale is not None else cfg.head_dim ** -0.5
    values["attention_pattern"] = cfg.layer_kinds()
    unused = set()
    if cfg.position_embedding != "rope":
        unused |= {k for k in values if k.startswith("rope_")}
    elif cfg.rope_scaling == "none":
        unused |= {"rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len"}
    elif cfg.rope_scaling == "linear":
        unused |= {"rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len"}
    if not any(k.startswith("local") for k in cfg.attention_pattern):
        unused |= {"sliding_window_size", "rope_local_theta"}
    if cfg.position_embedding != "relative_bias":
        unused |= {"relative_num_buckets", "relative_max_distance", "relative_bias_shared"}
    if not cfg.parallel_layers:
        unused.add("parallel_shared_norm")
    if not cfg.is_encoder_decoder:
        unused.add("num_decoder_layers")
    return {k: v for k, v in values.items() if k not in unused}


def _mismatches(cfg: ModelConfig, family: Family) -> list[str]:
    """Why `cfg` cannot be saved as `family` (empty when it can): the fields that change on a round trip."""
    try:
        back = family.config_to_zoo(family.config_to_hf(cfg))
    except ValueError as e:
        return [str(e)]
    ours, theirs = _semantics(cfg), _semantics(back)
    out = []
    for name in ours.keys() | theirs.keys():
        a, b = ours.get(name, "<unused>"), theirs.get(name, "<unused>")
        same = (math.isclose(a, b, rel_tol=1e-6) if isinstance(a, float) and isinstance(b, float) else a == b)
        if not same:
            out.append(f"ModelConfig.{name}={a!r} cannot be expressed as HF {family.model_type} "
                       f"(it would load back as {b!r})")
    return sorted(out)


def family_of(cfg: ModelConfig, family: str | None = None) -> Family:
    """The HF family that expresses `cfg` exactly (or check the one named); ValueError naming the fields if none."""
    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"unknown HF family {family!r}; supported: {', '.join(FAMILIES)}")
        problems = _mismatches(cfg, FAMILIES[family])
        if problems:
            raise ValueError("; ".join(problems))
        return FAMILIES[family]
    report = {}
    for name, candidate in FAMILIES.items():
        problems = _mismatches(cfg, candidate)
        if not problems:
            return candidate
        report[name] = problems
    raise ValueError("no HF family expresses this ModelConfig:\n" +
                     "\n".join(f"  {name}: {'; '.join(p)}" for name, p in report.items()))


def hf_family(values: dict) -> Family:
    """The family of an HF config dict, by its model_type."""
    model_type = values.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"HF config field model_type={model_type!r}: not supported; supported: "
                         f"{', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def config_from_hf(values: dict | str | Path, **overrides) -> ModelConfig:
    """An HF config (dict, config.json or its directory) -> ModelConfig; `overrides` replace any field."""
    if not isinstance(values, dict):
        path = Path(values)
        values = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    return hf_family(values).config_to_zoo(values, **overrides)


def config_to_hf(cfg: ModelConfig, family: str | None = None) -> dict:
    """ModelConfig -> the HF config.json dict of the family that expresses it exactly."""
    return family_of(cfg, family).config_to_hf(cfg)
