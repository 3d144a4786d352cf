"""YaRN RoPE scaling (Peng 2023; rope_scaling: yarn): the frequencies and attention factor equal transformers'
_compute_yarn_parameters for the ways configs spell them (betas, truncate, attention_factor, mscale over
mscale_all_dim, a factor left to max_position_embeddings), and a Llama and a Qwen2 with YaRN give HF's logits
both ways on sequences three times the original context; each YaRN detail changes the logits."""

import math

import numpy as np
import pytest
from test_hf import _roundtrip, _tokens, _zoo_logits, torch, transformers
from test_hf_moe import _hf_model

from zoo import hf
from zoo.layers.positions import rope_attention_factor, rope_frequencies
from zoo.presets import get_config

YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 8}
CASES = {
    "paper defaults": {},
    "betas": {"beta_fast": 16, "beta_slow": 2},
    "untruncated, explicit factor": {"truncate": False, "attention_factor": 1.3},
    "mscale over mscale_all_dim": {"mscale": 1.0, "mscale_all_dim": 0.5},
}


@pytest.mark.parametrize("change", CASES.values(), ids=CASES.keys())
def test_frequencies_and_attention_factor_equal_transformers(change):
    from transformers.modeling_rope_utils import _compute_yarn_parameters

    params = {k: v for k, v in {**YARN, **change}.items() if v is not None}
    config = transformers.LlamaConfig(
        hidden_size=64, num_attention_heads=2, max_position_embeddings=40, rope_parameters=params
    )
    want, want_factor = _compute_yarn_parameters(config)
    cfg = hf.config_from_hf(config.to_dict())
    assert cfg.rope_scaling == "yarn" and cfg.head_dim == 32
    np.testing.assert_allclose(rope_frequencies(cfg, cfg.rope_theta), want.numpy(), rtol=1e-6)
    assert math.isclose(rope_attention_factor(cfg), want_factor, rel_tol=1e-7)
    assert rope_attention_factor(cfg, scaled=False) == 1.0  # local layers under rope_scaling_local: false


def test_a_missing_factor_is_the_context_ratio():
    """transformers' _compute_yarn_parameters takes max_position_embeddings / original_max_position_embeddings
    when the factor is absent (DeepSeek-V3's note there); its config validation refuses such a config, so this
    reads the hub dict directly."""
    params = {k: v for k, v in YARN.items() if k != "factor"}
    cfg = hf.config_from_hf({"model_type": "llama", "max_position_embeddings": 40, "rope_parameters": params})
    assert cfg.rope_scaling_factor == 5.0


def _parity(tmp_path, arch, rope, **kw):
    """A random tiny HF `arch` with RoPE `rope`, HF -> zoo -> HF on 24 tokens (3x the original context of 8; the
    context after extension, max_position_embeddings, is 4 x 8)."""
    model = _hf_model(arch, rope_parameters={**YARN, **rope}, max_position_embeddings=32, **kw)
    return _roundtrip(f"{arch} yarn", model, (TOKENS,), tmp_path)


TOKENS = _tokens(128, 24)[0]


def _differs(cfg, params, ref, **change):
    return np.abs(_zoo_logits(cfg.replace(**change), params, (TOKENS,)) - ref).max() > 1e-3


def test_llama_yarn_both_ways_and_each_detail_matters(tmp_path):
    cfg, params, ref = _parity(
        tmp_path, "Llama", {"beta_fast": 8, "beta_slow": 2, "truncate": False}, hidden_size=64, num_attention_heads=4
    )
    assert (cfg.rope_scaling, cfg.rope_scaling_factor, cfg.rope_original_max_len) == ("yarn", 4.0, 8)
    assert (cfg.rope_yarn_beta_fast, cfg.rope_yarn_beta_slow, cfg.rope_yarn_truncate) == (8.0, 2.0, False)
    assert cfg.rope_attention_factor is None  # the paper's 0.1 ln 4 + 1
    assert _differs(cfg, params, ref, rope_attention_factor=1.0)
    assert _differs(cfg, params, ref, rope_yarn_truncate=True)
    assert _differs(cfg, params, ref, rope_yarn_beta_slow=1.0)
    assert _differs(cfg, params, ref, rope_original_max_len=16)


def test_qwen2_yarn_with_mscale_both_ways(tmp_path):
    """mscale / mscale_all_dim set the attention factor (1.1 / 1.05 of yarn_get_mscale's), exported explicitly."""
    rope = {"mscale": 1.0, "mscale_all_dim": 0.5}
    cfg, params, ref = _parity(tmp_path, "Qwen2", rope, hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
    scale = lambda m: 0.1 * m * math.log(4.0) + 1.0  # noqa: E731
    assert math.isclose(cfg.rope_attention_factor, scale(1.0) / scale(0.5), rel_tol=1e-12)
    saved = hf.config_to_hf(cfg, "qwen2")["rope_parameters"]
    assert saved["rope_type"] == "yarn" and math.isclose(saved["attention_factor"], cfg.rope_attention_factor)
    assert _differs(cfg, params, ref, rope_attention_factor=None)


def test_yarn_fields_are_refused_without_yarn_and_checked_with_it():
    llama = get_config("llama-tiny")
    with pytest.raises(ValueError, match="ModelConfig.rope_yarn_beta_fast: only applies with rope_scaling: yarn"):
        llama.replace(rope_yarn_beta_fast=16.0)
    with pytest.raises(ValueError, match="ModelConfig.rope_yarn_beta_fast: yarn scaling needs"):
        llama.replace(rope_scaling="yarn", rope_scaling_factor=4.0, rope_yarn_beta_fast=0.5)
    with pytest.raises(ValueError, match="ModelConfig.rope_attention_factor: must be > 0"):
        llama.replace(rope_scaling="yarn", rope_scaling_factor=4.0, rope_attention_factor=0.0)
    assert torch is not None
