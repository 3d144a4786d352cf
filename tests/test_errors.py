"""Bad input gets a ValueError that names the field (and the allowed values or a close match)."""

import sys

import jax
import jax.numpy as jnp
import pytest

import zoo
from zoo.config import ModelConfig
from zoo.presets import get_config

BASE = dict(vocab_size=64, d_model=32, num_layers=2, num_heads=4, d_ff=64, max_seq_len=16)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(num_heads=5), r"num_heads.*d_model=32 is not divisible by num_heads=5"),
        (dict(num_kv_heads=3), r"num_kv_heads: 3 does not divide num_heads=4"),
        (dict(norm_position="sandwich"), r"norm_position: got 'sandwich'; allowed: pre, post, double, output"),
        (dict(mlp_activations=("swish",)), r"mlp_activations.*relu, gelu"),
        (dict(attention_pattern=("local", "global")), r"sliding_window_size: local layers"),
        (
            dict(attention_pattern=("global", "global", "local"), sliding_window_size=4),
            r"attention_pattern: its length 3",
        ),
        (
            dict(sliding_window_size=8),
            r"sliding_window_size: only applies with a local .*; here attention_pattern: \[global\]",
        ),
        (
            dict(position_embedding="rope", relative_num_buckets=8),
            r"relative_num_buckets: only applies with position_embedding: relative_bias; here position_embedding: rope",
        ),
        (
            dict(position_embedding="alibi", rope_scaling="llama3"),
            r"rope_scaling: only applies with position_embedding: rope",
        ),
        (
            dict(norm_type="rmsnorm", norm_use_bias=True),
            r"norm_use_bias: only applies with norm_type: layernorm; here norm_type: rmsnorm",
        ),
        (dict(norm_position="post"), r"final_norm: a post-norm stack already ends in a norm"),
        (dict(rope_fraction=0.3), r"rope_fraction"),
        (dict(attn_logits_soft_cap=-1.0), r"attn_logits_soft_cap: must be > 0"),
        (dict(residual_dropout=1.0), r"residual_dropout: must be in \[0, 1\)"),
        (dict(vocab_size=0), r"vocab_size: must be a positive integer"),
    ],
)
def test_config_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**BASE, **changes})


def test_replace_validates_again_and_rejects_unknown_fields():
    cfg = ModelConfig(**BASE)
    with pytest.raises(ValueError, match="num_kv_heads"):
        cfg.replace(num_kv_heads=3)
    with pytest.raises(ValueError, match=r"unknown ModelConfig field 'num_layer'. Did you mean: num_layers"):
        cfg.replace(num_layer=3)
    with pytest.raises(ValueError, match=r"unknown ModelConfig field 'd_mdl'"):
        ModelConfig.from_dict({**BASE, "d_mdl": 3})


def test_unknown_preset_suggests_close_matches():
    with pytest.raises(ValueError, match=r"llama2-7b"):
        get_config("llama2-7")
    with pytest.raises(ValueError, match=r"gemma2-9b"):
        get_config("gema2-9b")


@pytest.fixture(scope="module")
def small():
    cfg = ModelConfig(**BASE, position_embedding="learned")
    return cfg, zoo.build(cfg), zoo.init_params(cfg, jax.random.key(0))


def test_token_ids_outside_the_vocab(small):
    cfg, model, params = small
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=64\); got min 1, max 64"):
        model.apply({"params": params}, jnp.array([[1, 2, 64]]))
    with pytest.raises(ValueError, match=r"vocab_size=64"):
        model.apply({"params": params}, jnp.array([[-1, 2]]))


def test_sequence_longer_than_positions_allow(small):
    cfg, model, params = small
    with pytest.raises(
        ValueError,
        match=r"sequence length 17 exceeds ModelConfig.max_seq_len=16 "
        r"\(position_embedding='learned'\)",
    ):
        model.apply({"params": params}, jnp.zeros((1, 17), jnp.int32))
    with pytest.raises(ValueError, match=r"sequence length 20 exceeds ModelConfig.max_seq_len=16"):
        zoo.generate(model, params, jnp.zeros((1, 10), jnp.int32), 10)


def test_generate_argument_errors(small):
    cfg, model, params = small
    prompt = jnp.zeros((1, 2), jnp.int32)
    with pytest.raises(ValueError, match="top_k"):
        zoo.generate(model, params, prompt, 2, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        zoo.generate(model, params, prompt, 2, temperature=1.0, top_p=1.5)
    with pytest.raises(ValueError, match="encoder_tokens"):
        t5 = get_config("t5-tiny")
        zoo.generate(zoo.build(t5), None, prompt, 2)


def test_replace_keeps_a_presets_relations():
    """A value the preset derives (num_kv_heads = num_heads, head_dim = d_model / num_heads) follows what it
    derives from; a value the paper sets apart (GQA's 8 KV heads, T5's d_kv = 64) stays pinned."""
    small = get_config("llama2-7b").replace(num_layers=2, d_model=256, num_heads=4, d_ff=688, vocab_size=512)
    assert (small.num_kv_heads, small.head_dim) == (4, 64)
    assert get_config("llama2-70b").replace(num_heads=16, d_model=1024).num_kv_heads == 8
    assert get_config("t5-small").replace(d_model=256).head_dim == 64
    assert get_config("gpt2", num_heads=4).head_dim == 192  # the same through get_config overrides
    with pytest.raises(ValueError, match=r"num_kv_heads: 8 does not divide num_heads=12"):
        get_config("llama2-70b").replace(num_heads=12, d_model=960)


def test_errors_say_where_each_value_came_from():
    from zoo.train.config import UserError, resolve

    with pytest.raises(
        UserError,
        match=r"TrainConfig.warmup_steps: 30 exceeds total_steps=12 \(train.warmup_steps=30 "
        r"from configs/gpt2.yaml preset 'gpt2-tiny'; train.total_steps=12 from the "
        r"command line\)",
    ):
        resolve("gpt2-tiny", ["train.total_steps=12"])
    with pytest.raises(
        UserError,
        match=r"at most one axis .* \(mesh.data=-1 by default; mesh.fsdp=-1 from the "
        r"command line\)",
    ):
        resolve("llama-tiny", ["mesh.fsdp=-1"])
    with pytest.raises(
        ValueError,
        match=r"num_kv_heads: 2 does not divide num_heads=3; .* \(model.num_kv_heads=2 from "
        r"configs/llama.yaml preset 'llama-tiny'; model.num_heads=3 from "
        r"get_config\('llama-tiny'\) overrides\)",
    ):
        get_config("llama-tiny", num_heads=3, d_model=192)


def test_cross_section_errors_say_where_each_value_came_from():
    """A check between sections (the recipe against the model) names both fields and where each was set;
    document masking on an encoder-decoder was silently ignored before."""
    from zoo.train.config import UserError, resolve

    with pytest.raises(
        UserError,
        match=r"^train.document_masking=true applies to decoder-only models .* set it false "
        r"\(train.document_masking from the command line; model.architecture from t5-tiny \(preset or default\)\)$",
    ):
        resolve("t5-tiny", ["train.document_masking=true"])
    with pytest.raises(
        UserError, match=r"exceeds model.max_seq_len=256 \(train.seq_len from the command line; model.max_seq_len from"
    ):
        resolve("t5-tiny", ["train.seq_len=100000"])
    assert resolve("llama-tiny", ["train.document_masking=true"]).train.document_masking


def test_the_console_script_names_itself_in_its_errors(monkeypatch, capsys):
    from zoo.commands import train

    for argv0, prog in (("/venv/bin/zoo-train", "zoo-train"), ("train.py", "train.py")):
        monkeypatch.setattr(sys, "argv", [argv0])
        assert train(["train.learnig_rate=1e-3"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{prog}: error: ") and "Did you mean: train.learning_rate" in err, err
