"""Parity with transformers' GptOssForCausalLM (gpt-oss-20b, gpt-oss-120b): a random tiny model whose every
gpt-oss knob binds (sinks; a window of 8 on even layers, shorter than the 24 tokens; YaRN x4 over an original
context of 64, whose ramp ends are fractional, so truncate matters; a biased router taking the top 2 of 5 logits;
biased experts whose clamped GLU clips, the gate and up weights scaled up so some pre-activations pass 7),
HF -> zoo -> HF logits to 1e-4, scanned and unrolled; each detail changes the logits; the -tiny preset through the
class; the exact counts against the class on the meta device and OpenAI's published figures; configs the zoo
cannot express are refused naming the field."""

import numpy as np
import pytest
from test_hf import _roundtrip, _tokens, _zoo_logits, torch, transformers
from test_hf_more import assert_refused

from zoo import count_params, hf
from zoo.presets import get_config, published

TOKENS = _tokens(128, 24)


def _hf_gpt_oss(**kw):
    """A random tiny GptOssForCausalLM: every parameter drawn N(0, 0.1^2) (HF initialises biases at zero), the
    experts' gate/up kernel times 5 so the clamp at 7 binds."""
    config = transformers.GptOssConfig(
        **{
            "vocab_size": 128,
            "hidden_size": 48,
            "intermediate_size": 24,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "num_local_experts": 5,
            "num_experts_per_tok": 2,
            "sliding_window": 8,
            "max_position_embeddings": 256,
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 150000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 64,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "truncate": False,
            },
            "attn_implementation": "eager",
            **kw,
        }
    )
    torch.manual_seed(0)
    model = transformers.GptOssForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (1.0 if name.endswith("norm.weight") else 0.1))
            if name.endswith("norm.weight"):
                p.add_(1.0)
            if name.endswith("experts.gate_up_proj"):
                p.mul_(5.0)
    return model


def _differs(cfg, params, ref, **change):
    return np.abs(_zoo_logits(cfg.replace(**change), params, TOKENS) - ref).max() > 1e-3


def test_gpt_oss_both_ways_and_each_detail_matters(tmp_path):
    cfg, params, ref = _roundtrip("gpt_oss", _hf_gpt_oss(), TOKENS, tmp_path)
    assert cfg.attention_pattern == ("local", "global") and cfg.sliding_window_size == 8
    assert (cfg.rope_scaling, cfg.rope_yarn_truncate, cfg.rope_theta) == ("yarn", False, 150000.0)
    assert (cfg.router, cfg.router_bias, cfg.mlp_bias, cfg.attention_sinks) == ("topk_softmax", True, True, True)
    assert (cfg.mlp_activations, cfg.mlp_glu_limit, cfg.mlp_glu_linear_offset) == (("quick_gelu", "linear"), 7.0, 1.0)
    block = params["decoder"]["cycles"]["block_0"]
    assert block["attention"]["sinks"].shape == (2, 4) and block["moe"]["wi_1"]["bias"].shape == (2, 5, 24)
    for change in (
        dict(attention_sinks=False),
        dict(mlp_glu_limit=None),
        dict(mlp_glu_linear_offset=0.0),
        dict(router="softmax_topk"),
        dict(rope_yarn_truncate=True),
        dict(mlp_activations=("silu", "linear")),
    ):
        assert _differs(cfg, params, ref, **change), change
    cfg_unrolled, unrolled = hf.load(tmp_path / "zoo", scan_layers=False)
    assert np.abs(_zoo_logits(cfg_unrolled, unrolled, TOKENS) - ref).max() < 1e-4


def test_tiny_preset_through_its_hf_class(tmp_path):
    preset = get_config("gpt-oss-tiny")
    assert hf.family_of(preset).model_type == "gpt_oss"
    values = hf.config_to_hf(preset, "gpt_oss")
    config = transformers.AutoConfig.for_model(
        values.pop("model_type"), **{**values, "initializer_range": 0.1}, attn_implementation="eager"
    )
    torch.manual_seed(0)
    model = transformers.GptOssForCausalLM(config).eval()
    cfg, _, _ = _roundtrip("gpt-oss-tiny", model, _tokens(512, 48), tmp_path, family="gpt_oss")
    untracked = ("init_scheme", "init_std")
    assert cfg.replace(**{f: getattr(preset, f) for f in untracked}) == preset.replace(scan_layers=True)


@pytest.mark.parametrize("name", ["gpt-oss-20b", "gpt-oss-120b"])
def test_exact_total_and_active_counts_are_the_transformers_counts(name):
    """Total: numel of GptOssForCausalLM on the meta device == zoo.count_params == published; active: every routed
    expert tensor scaled by k/E. Less the input embedding, OpenAI's 3.6B and 5.1B."""
    cfg = get_config(name)
    values = hf.config_to_hf(cfg, "gpt_oss")
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if "experts." in n)
    active = total - routed + routed * cfg.experts_per_token // cfg.num_experts
    assert count_params(cfg) == total == published(name).params
    assert count_params(cfg, active=True) == active == published(name).active
    without_input_embedding = active - cfg.vocab_size * cfg.d_model
    assert round(without_input_embedding / 1e8) / 10 == float(published(name).active_label.rstrip("B"))


def test_absent_fields_take_the_class_defaults():
    from zoo.semantics import semantic_differences

    written = transformers.AutoConfig.for_model("gpt_oss").to_dict()
    assert semantic_differences(hf.config_from_hf({"model_type": "gpt_oss"}), hf.config_from_hf(written)) == []


@pytest.mark.parametrize(
    "change, field",
    [
        ({"swiglu_alpha": 1.5}, "swiglu_alpha"),
        ({"num_hidden_layers": 2, "layer_types": ["sliding_attention", "chunked_attention"]}, "layer_types"),
        ({"num_local_experts": 4, "num_experts_per_tok": 5}, "num_experts_per_tok"),
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, change, field):
    assert_refused(tmp_path, "gpt_oss", change, field)
