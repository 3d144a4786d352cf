"""Parity with Hugging Face transformers for the later families: Mistral, Yi (HF llama), Qwen2.5 (qwen2), Qwen3
and Phi-3, with tests/test_hf.py's recipe and helpers: a tiny random HF model whose shapes make every knob bind
(sequences longer than the sliding window, odd head counts over GQA, perturbed norm gains, nonzero q/k/v biases),
HF -> zoo -> HF logits to 1e-4; each -tiny preset through its HF class; one refused config per family; and every
named preset's exact parameter count against the transformers class built on torch's meta device."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_hf import _hf_logits, _random_model, _roundtrip, _tokens, torch, transformers

from zoo import count_params, hf
from zoo.presets import family_presets, get_config, published

BASE = dict(
    vocab_size=128,
    intermediate_size=40,
    num_hidden_layers=2,
    max_position_embeddings=64,
    initializer_range=0.1,
    attn_implementation="eager",
)
# Preset name prefix -> HF model_type.
MODEL_TYPES = {"mistral": "mistral", "yi": "llama", "qwen2.5": "qwen2", "qwen3": "qwen3", "phi": "phi3", "phi3": "phi3"}


def _model_type(preset: str) -> str:
    return MODEL_TYPES[preset.split("-")[0]]


def _hf_model(arch: str, **kw):
    """A random `{arch}ForCausalLM` on BASE + kw."""
    config = getattr(transformers, f"{arch}Config")(**{**BASE, **kw})
    return _random_model(getattr(transformers, f"{arch}ForCausalLM"), config)


def _assert_binds(arch, model, kw, change, tokens, ref):
    """The same weights under a config with `change` give other logits: the knob matters in this test."""
    other = _hf_model(arch, **{**kw, **change})
    other.load_state_dict(model.state_dict())
    assert np.abs(_hf_logits(other, tokens) - ref).max() > 1e-2, f"{change} does not change the logits"


# --------------------------------------------------------------------------------------------- mistral
def test_mistral(tmp_path):
    """Window 8 on every layer under sequences of 24; 6 query heads over 3 kv heads."""
    kw = dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=3, sliding_window=8)
    model, tokens = _hf_model("Mistral", **kw), _tokens(128, 24)
    cfg, _, ref = _roundtrip("mistral", model, tokens, tmp_path, family="mistral")
    assert cfg.attention_pattern == ("local",) and cfg.sliding_window_size == 8 and cfg.num_kv_heads == 3
    _assert_binds("Mistral", model, kw, {"sliding_window": None}, tokens, ref)
    assert hf.family_of(cfg).model_type == "mistral"  # LLaMA has no window


# ------------------------------------------------------------------------------------------------ qwen
def test_qwen2_biases_on_qkv_only(tmp_path):
    """Qwen2.5: q/k/v biases (perturbed away from 0), no o_proj bias; 7 query heads over 1 kv head; tied."""
    model = _hf_model("Qwen2", hidden_size=56, num_attention_heads=7, num_key_value_heads=1, tie_word_embeddings=True)
    attn = model.model.layers[0].self_attn
    assert attn.o_proj.bias is None and attn.k_proj.bias.abs().min() > 0
    cfg, params, _ = _roundtrip("qwen2", model, _tokens(128, 24), tmp_path)
    assert cfg.attention_bias and not cfg.attention_out_bias and cfg.tie_word_embeddings
    block = params["decoder"]["cycles"]["block_0"]["attention"]
    assert "bias" in block["key"] and "bias" not in block["out"]
    assert hf.family_of(cfg).model_type == "qwen2"  # LLaMA's attention_bias would add an o_proj bias


@pytest.mark.parametrize("attention_bias", [False, True])
def test_qwen3_per_head_qk_norm(tmp_path, attention_bias):
    """Per-head q/k RMSNorm gains (perturbed); head_dim 16 with 5 heads != d_model 32; one kv head; tied.
    attention_bias (false in every release) puts biases on all four projections."""
    kw = dict(
        hidden_size=32,
        num_attention_heads=5,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
        attention_bias=attention_bias,
    )
    model, tokens = _hf_model("Qwen3", **kw), _tokens(128, 24)
    cfg, params, _ = _roundtrip(f"qwen3 (bias={attention_bias})", model, tokens, tmp_path)
    assert cfg.qk_norm == "per_head" and cfg.attention_bias == cfg.attention_out_bias == attention_bias
    assert params["decoder"]["cycles"]["block_0"]["attention"]["key_norm"]["scale"].shape == (2, 16)


# ----------------------------------------------------------------------------------------------- phi3
def test_phi3_fused_projections(tmp_path):
    """qkv_proj (6 q heads, 2 kv heads: unequal parts) and gate_up_proj split on load and fused on save;
    window 8 on every layer under sequences of 24."""
    kw = dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=2, sliding_window=8, pad_token_id=None)
    model, tokens = _hf_model("Phi3", **kw), _tokens(128, 24)
    cfg, params, ref = _roundtrip("phi3", model, tokens, tmp_path, family="phi3")
    assert cfg.attention_pattern == ("local",) and cfg.sliding_window_size == 8
    attn = params["decoder"]["cycles"]["block_0"]["attention"]
    assert attn["key"]["kernel"].shape == (2, 48, 2, 8) and attn["query"]["kernel"].shape == (2, 48, 6, 8)
    saved = load_file(tmp_path / "zoo" / "model.safetensors")
    assert saved["model.layers.1.self_attn.qkv_proj.weight"].shape == ((6 + 2 * 2) * 8, 48)
    assert saved["model.layers.1.mlp.gate_up_proj.weight"].shape == (2 * 40, 48)
    assert not any(".q_proj" in name or ".gate_proj" in name for name in saved)
    _assert_binds("Phi3", model, kw, {"sliding_window": None}, tokens, ref)


# ----------------------------------------------------------------------------------- the -tiny presets
@pytest.mark.parametrize("name", ["mistral-tiny", "yi-tiny", "qwen2.5-tiny", "qwen3-tiny", "phi3-tiny"])
def test_tiny_preset_through_its_hf_class(tmp_path, name):
    """Each family's -tiny preset as its HF class (Yi: LlamaForCausalLM), sequences of 48 past the windows of 32."""
    assert_tiny_preset_round_trips(tmp_path, name, _model_type(name))


def assert_tiny_preset_round_trips(tmp_path, name, model_type):
    """Preset `name` as a random HF `model_type` model: HF -> zoo -> HF on sequences of 48, the same config back."""
    values = hf.config_to_hf(get_config(name), model_type)
    config = transformers.AutoConfig.for_model(
        values.pop("model_type"), **{**values, "initializer_range": 0.1}, attn_implementation="eager"
    )
    model = _random_model(getattr(transformers, values["architectures"][0]), config)
    cfg, _, _ = _roundtrip(name, model, _tokens(512, 48), tmp_path, family=model_type)
    assert cfg.replace(init_std=get_config(name).init_std) == get_config(name).replace(scan_layers=True)


# --------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "model_type, change, field",
    [
        (
            "mistral",
            {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e6, "factor": 4.0}},
            "rope_parameters.rope_type",
        ),
        ("mistral", {"sliding_window": 0}, "sliding_window"),
        # Qwen2.5 hub files carry sliding_window and max_window_layers, inert while use_sliding_window is false.
        ("qwen2", {"use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 21}, "use_sliding_window"),
        ("qwen3", {"num_hidden_layers": 2, "layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
        # Phi-3-mini-128k: LongRoPE.
        (
            "phi3",
            {
                "rope_parameters": {
                    "rope_type": "longrope",
                    "rope_theta": 1e4,
                    "short_factor": [1.0] * 48,
                    "long_factor": [1.0] * 48,
                }
            },
            "rope_parameters.rope_type",
        ),
        # The first Yi releases shipped model_type "Yi" (remote code) before moving to llama (recalled).
        ("Yi", {"rope_theta": 5e6}, "model_type"),
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, model_type, change, field):
    assert_refused(tmp_path, model_type, change, field)


def assert_refused(tmp_path, model_type, change, field):
    """hf.load of a config.json {model_type, **change} raises a ValueError naming HF field `field`."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, **change}))
    with pytest.raises(ValueError, match=f"field {field}="):
        hf.load(tmp_path)


# ------------------------------------------------------------------------------------ parameter counts
NAMED = [n for f in ("mistral", "yi", "qwen", "phi3") for n in family_presets(f) if not n.endswith("-tiny")]


@pytest.mark.parametrize("name", NAMED)
def test_exact_count_is_the_transformers_count(name):
    assert_exact_count(name, _model_type(name))


def assert_exact_count(name, model_type):
    """zoo.count_params == numel of the HF class built on the meta device (tied weights once) == published."""
    cfg = get_config(name)
    values = hf.config_to_hf(cfg, model_type)
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == values["architectures"][0]
    theirs = sum(p.numel() for p in model.parameters())
    print(f"count {name:18s} zoo {count_params(cfg):,}  HF {theirs:,}")  # shown with -s
    assert count_params(cfg) == theirs == published(name).params
