"""Parity with Hugging Face transformers (Levanter's recipe): build a tiny *random* HF model in code,
save_pretrained, zoo.hf.load, compare logits; zoo.hf.save, from_pretrained, compare again.

Each test makes its feature matter: sequences longer than the sliding window and than T5's bucket distance,
soft-caps that bind, GQA/MQA, RoPE scaling, an untied T5 head, norm weights that are not all ones (every 1-D
parameter is perturbed), initializer_range raised so the blocks, not the embeddings alone, set the logits.
HF runs in fp32, eval mode, eager attention (the fused kernels skip soft-capping).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
# The HF side is written against transformers 5 (rope_parameters, T5's scale_decoder_outputs, from_pretrained's
# dtype=); zoo.hf itself also reads transformers 4.x configs (test_transformers_4_configs).
transformers = pytest.importorskip("transformers", minversion="5.0")

from safetensors.numpy import load_file  # noqa: E402

from zoo import hf  # noqa: E402
from zoo.config import ModelConfig  # noqa: E402
from zoo.model import build  # noqa: E402

TOL = 1e-4  # max |logit| difference, fp32


def _random_model(cls, config, seed=0):
    """An HF model with random weights; every 1-D parameter (norm gains, biases) perturbed away from its init."""
    torch.manual_seed(seed)
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _tokens(vocab, *lengths, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, vocab, (2, n)) for n in lengths)


def _hf_logits(model, tokens):
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            enc, dec = tokens
            out = model(input_ids=torch.tensor(enc), decoder_input_ids=torch.tensor(dec))
        else:
            out = model(torch.tensor(tokens[0]))
    return out.logits.float().numpy()


def _zoo_logits(cfg, params, tokens):
    return np.asarray(jax.jit(build(cfg).apply)({"params": params}, *map(jnp.asarray, tokens)))


def _roundtrip(name, model, tokens, tmp_path, shard_size=None, family=None, **load_kwargs):
    """HF -> zoo -> HF, each step checked against the HF model's logits; `family` as in hf.save (by default the
    first that expresses the config). Returns (cfg, params, hf logits)."""
    model.save_pretrained(tmp_path / "hf", **({"max_shard_size": shard_size} if shard_size else {}))
    cfg, params = hf.load(tmp_path / "hf", **load_kwargs)
    ref = _hf_logits(model, tokens)
    err = float(np.abs(_zoo_logits(cfg, params, tokens) - ref).max())
    print(f"parity {name:28s} max|dlogit| = {err:.1e}   (max|logit| = {np.abs(ref).max():.1f})")  # shown with -s
    assert err < TOL, f"{name}: zoo vs HF max |dlogit| = {err:.2e}"

    hf.save(cfg, params, tmp_path / "zoo", family=family, **({"max_shard_size": shard_size} if shard_size else {}))
    auto = transformers.AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else transformers.AutoModelForCausalLM
    back = auto.from_pretrained(tmp_path / "zoo", attn_implementation="eager").eval()
    assert type(back) is type(model)
    err = float(np.abs(_hf_logits(back, tokens) - ref).max())
    assert err < TOL, f"{name}: HF(zoo.hf.save) vs HF max |dlogit| = {err:.2e}"
    return cfg, params, ref


# ------------------------------------------------------------------------------------------------- gpt2
def test_gpt2(tmp_path):
    config = transformers.GPT2Config(
        vocab_size=128,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        initializer_range=0.1,
        attn_implementation="eager",
    )
    cfg, _, _ = _roundtrip("gpt2", _random_model(transformers.GPT2LMHeadModel, config), _tokens(128, 24), tmp_path)
    assert (cfg.position_embedding, cfg.norm_type, cfg.mlp_activations) == ("learned", "layernorm", ("gelu_tanh",))


# --------------------------------------------------------------------------------------------------- t5
def _t5_config(**kw):
    # 8 buckets reaching 16 positions, sequences of 40: most pairs fall in the far, log-spaced buckets.
    return transformers.T5Config(
        vocab_size=128,
        d_model=32,
        num_layers=2,
        num_decoder_layers=3,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        attn_implementation="eager",
        **kw,
    )


def test_t5_v1_0(tmp_path):
    """Relu MLP, head tied to the embedding with the d_model**-0.5 rescale."""
    model = _random_model(
        transformers.T5ForConditionalGeneration, _t5_config(d_kv=8, d_ff=64, feed_forward_proj="relu")
    )
    cfg, _, _ = _roundtrip("t5 v1.0", model, _tokens(128, 40, 40), tmp_path)
    assert cfg.tie_word_embeddings and cfg.scale_logits_by_inv_sqrt_d_model and cfg.num_decoder_layers == 3


def test_t5_v1_1(tmp_path):
    """Gated-GELU MLP, separate head, no rescale, heads * d_kv != d_model."""
    model = _random_model(
        transformers.T5ForConditionalGeneration,
        _t5_config(d_kv=16, d_ff=48, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    )
    # transformers 5 builds T5 tied whatever the config says; v1.1 checkpoints carry their own lm_head.
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
    cfg, _, _ = _roundtrip("t5 v1.1", model, _tokens(128, 40, 40), tmp_path)
    assert not cfg.tie_word_embeddings and not cfg.scale_logits_by_inv_sqrt_d_model
    assert cfg.mlp_activations == ("gelu_tanh", "linear") and cfg.head_dim * cfg.num_heads != cfg.d_model


# ------------------------------------------------------------------------------------------------ llama
def _llama(**kw):
    base = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        initializer_range=0.1,
        attn_implementation="eager",
    )
    return _random_model(transformers.LlamaForCausalLM, transformers.LlamaConfig(**{**base, **kw}))


def test_llama_mha_with_biases(tmp_path):
    model = _llama(attention_bias=True, mlp_bias=True, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    cfg, _, _ = _roundtrip("llama MHA (+biases)", model, _tokens(128, 24), tmp_path)
    assert cfg.attention_bias and cfg.mlp_bias and cfg.rope_theta == 500.0 and not cfg.tie_word_embeddings

    # A tensor the config gives no place to (here: biases under attention_bias: false) is an error, not dropped.
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "attention_bias": False}))
    with pytest.raises(ValueError, match="no place in the zoo llama model.*self_attn.k_proj.bias"):
        hf.load(tmp_path / "hf")


def test_llama_gqa_sharded_linear_rope(tmp_path):
    """4 query heads over 2 kv heads, head_dim 16 != 48 / 4, tied head, linear RoPE scaling; the checkpoint
    (both ways) is sharded with an index."""
    model = _llama(
        hidden_size=48,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    )
    cfg, _, _ = _roundtrip("llama GQA (sharded)", model, _tokens(128, 24), tmp_path, shard_size="20KB")
    for d in ("hf", "zoo"):
        assert (tmp_path / d / "model.safetensors.index.json").exists()
        assert len(list((tmp_path / d).glob("model-*.safetensors"))) > 1
    assert (cfg.num_kv_heads, cfg.head_dim, cfg.rope_scaling) == (2, 16, "linear") and cfg.tie_word_embeddings


def test_llama_mqa_llama3_rope(tmp_path):
    """One kv head; Llama 3.1 frequency bands around an original context of 16, sequences of 32."""
    rope = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    cfg, _, _ = _roundtrip(
        "llama MQA + llama3 RoPE", _llama(num_key_value_heads=1, rope_parameters=rope), _tokens(128, 32), tmp_path
    )
    assert (cfg.num_kv_heads, cfg.rope_scaling, cfg.rope_original_max_len) == (1, "llama3", 16)


def test_bfloat16_checkpoint(tmp_path):
    """bf16 tensors are read (as ml_dtypes.bfloat16) and written back as bf16."""
    _llama().to(torch.bfloat16).save_pretrained(tmp_path / "hf")
    tokens = _tokens(128, 16)
    fp32 = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", dtype=torch.float32, attn_implementation="eager"
    )
    ref = _hf_logits(fp32.eval(), tokens)  # the bf16 weights, computed in fp32
    cfg, params = hf.load(tmp_path / "hf")
    assert params["token_embed"]["embedding"].dtype == jnp.float32
    assert np.abs(_zoo_logits(cfg, params, tokens) - ref).max() < TOL
    cfg, params = hf.load(tmp_path / "hf", param_dtype="bfloat16")
    hf.save(cfg, params, tmp_path / "zoo")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "zoo", attn_implementation="eager")
    assert back.model.embed_tokens.weight.dtype == torch.bfloat16
    back = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "zoo", dtype=torch.float32, attn_implementation="eager"
    )
    assert np.abs(_hf_logits(back.eval(), tokens) - ref).max() < TOL


@pytest.mark.parametrize(
    "dtype, param_dtype", [("bfloat16", "bfloat16"), ("bfloat16", "float32"), ("float16", "float32")]
)
def test_half_precision_tensors_are_exact(tmp_path, dtype, param_dtype):
    """bf16 and fp16 checkpoints load bit for bit (kept as bf16, or widened to fp32), and save writes back the
    same values."""
    model = _llama().to(getattr(torch, dtype))
    model.save_pretrained(tmp_path / "hf")
    weights = {name: w.float().numpy() for name, w in model.state_dict().items()}
    cfg, params = hf.load(tmp_path / "hf", param_dtype=param_dtype)
    embed = params["token_embed"]["embedding"]
    assert embed.dtype == jnp.dtype(param_dtype)
    np.testing.assert_array_equal(np.asarray(embed, np.float32), weights["model.embed_tokens.weight"])
    q = weights["model.layers.1.self_attn.q_proj.weight"]  # [heads * head_dim, d]
    kernel = params["decoder"]["cycles"]["block_0"]["attention"]["query"]["kernel"][1]  # [d, heads, head_dim]
    np.testing.assert_array_equal(np.asarray(kernel, np.float32).reshape(q.shape[1], -1), q.T)

    hf.save(cfg, params, tmp_path / "zoo")
    ours, theirs = (load_file(tmp_path / d / "model.safetensors") for d in ("zoo", "hf"))
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours[name].dtype == jnp.dtype(param_dtype), name
        np.testing.assert_array_equal(ours[name], tensor.astype(ours[name].dtype), err_msg=name)


# ----------------------------------------------------------------------------------------------- gemma2
def _gemma2(**kw):
    base = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        query_pre_attn_scalar=24,
        sliding_window=8,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
        initializer_range=0.3,
        attn_implementation="eager",
    )
    return _random_model(transformers.Gemma2ForCausalLM, transformers.Gemma2Config(**{**base, **kw}))


def test_gemma2(tmp_path):
    """Sliding window 8 under sequences of 24, soft-caps that bind, query_pre_attn_scalar != head_dim, GQA,
    (1 + w) norms, sqrt(d) embedding scale, and the unrolled layout loading to the same logits."""
    model, tokens = _gemma2(), _tokens(128, 24)
    cfg, params, ref = _roundtrip("gemma2", model, tokens, tmp_path)
    assert cfg.attention_pattern == ("local", "global") and cfg.sliding_window_size == 8
    assert cfg.query_scale == pytest.approx(24**-0.5)

    # The features bind: the final cap saturates, and lifting either cap or the window changes the logits.
    assert np.abs(ref).max() > 0.8 * 3.0
    for change in ({"attn_logit_softcapping": None}, {"final_logit_softcapping": None}, {"sliding_window": 64}):
        other = _gemma2(**change)
        other.load_state_dict(model.state_dict())
        assert np.abs(_hf_logits(other, tokens) - ref).max() > 1e-2, f"{change} does not change the logits"

    cfg_u, params_u = hf.load(tmp_path / "hf", scan_layers=False)
    assert "cycle_1" in params_u["decoder"] and "cycles" not in params_u["decoder"]
    err = np.abs(_zoo_logits(cfg_u, params_u, tokens) - _zoo_logits(cfg, params, tokens)).max()
    assert err < 1e-5
    hf.save(cfg_u, params_u, tmp_path / "zoo_unrolled")  # the unrolled layout saves too
    assert hf.load(tmp_path / "zoo_unrolled")[0] == cfg


# ------------------------------------------------------------------------------------------------ olmo2
def test_olmo2(tmp_path):
    """Norms on sublayer outputs, q/k norms over the whole projection (shape [heads * head_dim]), GQA."""
    config = transformers.Olmo2Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.1,
        attn_implementation="eager",
    )
    cfg, params, _ = _roundtrip(
        "olmo2", _random_model(transformers.Olmo2ForCausalLM, config), _tokens(128, 24), tmp_path
    )
    assert (cfg.norm_position, cfg.qk_norm) == ("output", "full")
    assert params["decoder"]["cycles"]["block_0"]["attention"]["key_norm"]["scale"].shape == (2, 2, 8)


# ------------------------------------------------------------------------------ transformers 4.x configs
def test_transformers_4_configs():
    """Hub configs written by transformers 4.x spell RoPE as rope_theta + rope_scaling, let T5 v1.1 say
    tie_word_embeddings: false (which also meant no rescale), and may omit Gemma 2's layer_types."""
    cfg = hf.config_from_hf(
        {
            "model_type": "llama",
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        }
    )
    assert (cfg.rope_theta, cfg.rope_scaling, cfg.rope_scaling_factor) == (500000.0, "llama3", 8.0)
    cfg = hf.config_from_hf({"model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert (cfg.rope_theta, cfg.rope_scaling, cfg.rope_scaling_factor) == (10000.0, "linear", 2.0)
    cfg = hf.config_from_hf({"model_type": "t5", "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False})
    assert not cfg.tie_word_embeddings and not cfg.scale_logits_by_inv_sqrt_d_model
    cfg = hf.config_from_hf({"model_type": "gemma2", "num_hidden_layers": 4, "hidden_act": "gelu_pytorch_tanh"})
    assert cfg.attention_pattern == ("local", "global") and cfg.mlp_activations == ("gelu_tanh", "linear")


# --------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "model_type, change, field",
    [
        (
            "llama",
            {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, "factor": 4.0}},
            "rope_parameters.rope_type",
        ),
        ("llama", {"rope_theta": 1e4, "rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling.type"),
        ("llama", {"sliding_window": 16}, "sliding_window"),
        ("llama", {"hidden_act": "gelu_accurate"}, "hidden_act"),
        ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ("gemma2", {"use_bidirectional_attention": True}, "use_bidirectional_attention"),
        ("gemma2", {"layer_types": ["sliding_attention", "chunked_attention"], "num_hidden_layers": 2}, "layer_types"),
        ("t5", {"feed_forward_proj": "gated-tanh"}, "feed_forward_proj"),
        ("mamba", {}, "model_type"),  # no attention at all
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, model_type, change, field):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, **change}))
    with pytest.raises(ValueError, match=f"field {field}="):
        hf.load(tmp_path)


def _tiny(**kw):
    return ModelConfig(**{**dict(vocab_size=64, d_model=32, num_layers=2, num_heads=4, d_ff=64, max_seq_len=32), **kw})


@pytest.mark.parametrize(
    "cfg, family, field",
    [
        (_tiny(norm_position="double"), "llama", "norm_position"),
        (
            _tiny(
                num_kv_heads=2,
                position_embedding="learned",
                norm_type="layernorm",
                norm_use_bias=True,
                mlp_activations=("gelu_tanh",),
                mlp_bias=True,
                attention_bias=True,
            ),
            "gpt2",
            "num_kv_heads",
        ),
        (
            _tiny(
                architecture="encoder_decoder",
                position_embedding="relative_bias",
                relative_bias_shared=False,
                query_scale=1.0,
                mlp_activations=("relu",),
                scale_logits_by_inv_sqrt_d_model=True,
            ),
            "t5",
            "relative_bias_shared",
        ),
        (_tiny(position_embedding="alibi"), None, "position_embedding"),
    ],
)
def test_save_refuses_what_the_family_cannot_express(tmp_path, cfg, family, field):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}="):
        hf.save(cfg, {}, tmp_path, family=family)
    assert not (tmp_path / "config.json").exists()
