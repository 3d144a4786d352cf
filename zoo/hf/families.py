"""The family registry, and the round trip that decides which family expresses a ModelConfig exactly."""

from __future__ import annotations

import json
from pathlib import Path

from zoo.config import ModelConfig
from zoo.hf import (
    bloom,
    cohere,
    cohere2,
    dbrx,
    deepseek_v2,
    deepseek_v3,
    falcon,
    gemma2,
    gemma3,
    gpt2,
    gpt_neox,
    gpt_oss,
    gptj,
    llama,
    llama4,
    mistral,
    mixtral,
    nemotron,
    olmo2,
    olmoe,
    opt,
    phi3,
    qwen2,
    qwen2_moe,
    qwen3,
    qwen3_moe,
    switch_transformers,
    t5,
)
from zoo.hf.core import Family
from zoo.semantics import semantic_differences

# In the order `family_of` tries them. A new family: its module, and one entry here. Phi-3 after Mistral: a
# config both express saves as Mistral unless save(family="phi3") asks.
FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        gpt2.FAMILY,
        t5.FAMILY,
        switch_transformers.FAMILY,
        llama.FAMILY,
        gemma2.FAMILY,
        olmo2.FAMILY,
        olmoe.FAMILY,
        mistral.FAMILY,
        mixtral.FAMILY,
        qwen2.FAMILY,
        qwen2_moe.FAMILY,
        qwen3.FAMILY,
        qwen3_moe.FAMILY,
        deepseek_v2.FAMILY,
        deepseek_v3.FAMILY,
        phi3.FAMILY,
        opt.FAMILY,
        bloom.FAMILY,
        falcon.FAMILY,
        cohere.FAMILY,
        cohere2.FAMILY,
        gpt_neox.FAMILY,
        gptj.FAMILY,
        gemma3.FAMILY,
        nemotron.FAMILY,
        dbrx.FAMILY,
        gpt_oss.FAMILY,
        llama4.FAMILY,
    )
}


def _mismatches(cfg: ModelConfig, family: Family) -> list[str]:
    """Why `cfg` cannot be saved as `family` (empty when it can): the fields that change on a round trip."""
    try:
        back = family.config_to_zoo(family.config_to_hf(cfg))
    except ValueError as e:
        return [str(e)]
    # zoo.semantics leaves out how the model runs and training-only fields: `save` exports those
    # where HF has them and does not hold the family to them.
    return [
        f"ModelConfig.{name}={a!r} cannot be expressed as HF {family.model_type} (it would load back as {b!r})"
        for name, a, b in semantic_differences(cfg, back)
    ]


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
    raise ValueError(
        "no HF family expresses this ModelConfig:\n"
        + "\n".join(f"  {name}: {'; '.join(p)}" for name, p in report.items())
    )


def hf_family(values: dict) -> Family:
    """The family of an HF config dict, by its model_type."""
    model_type = values.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"HF config field model_type={model_type!r}: not supported; supported: {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def config_from_hf(values: dict | str | Path, **overrides) -> ModelConfig:
    """An HF config (dict, config.json or its directory) -> ModelConfig; `overrides` replace any field."""
    if isinstance(values, dict):
        config = values
    else:
        path = Path(values)
        config = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    return hf_family(config).config_to_zoo(config, **overrides)


def config_to_hf(cfg: ModelConfig, family: str | None = None) -> dict:
    """ModelConfig -> the HF config.json dict of the family that expresses it exactly."""
    return family_of(cfg, family).config_to_hf(cfg)
