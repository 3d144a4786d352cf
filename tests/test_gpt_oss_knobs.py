"""gpt-oss's two block knobs against direct numpy references (issue 19 point 5; the family itself is not built yet):
attention sinks (a learned logit per head in each softmax's denominator) on the fused, blocked-causal and cached
paths, and the clamped GLU (gate clamped above, linear branch clamped and offset by 1, quick_gelu on the gate)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.layers.attend import attend, position_mask
from zoo.layers.mlp import hidden
from zoo.presets import get_config


def _reference(q, k, v, sinks, mask, scale):
    """softmax over [q.k scaled and masked, the head's sink], the sink's column dropped, times v; GQA by repeat."""
    b, t, h, d = q.shape
    k = np.repeat(k, h // k.shape[2], axis=2)
    v = np.repeat(v, h // v.shape[2], axis=2)
    logits = np.einsum("bthd,bshd->bhts", q, k) * scale
    logits = np.where(mask, logits, -np.inf)
    logits = np.concatenate([logits, np.broadcast_to(sinks[None, :, None, None], (b, h, t, 1))], axis=-1)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = probs / probs.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", probs[..., :-1], v)


@pytest.mark.parametrize("length", [16, 256])  # 256: causal attention in two query blocks
def test_sinks_equal_the_reference_on_the_causal_paths(length):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, length, 4, 8)).astype(np.float32)
    k, v = (rng.normal(size=(2, length, 2, 8)).astype(np.float32) for _ in range(2))
    sinks = np.array([-1.0, 0.0, 2.0, 5.0], np.float32)
    mask = np.asarray(position_mask(jnp.arange(length)[None], jnp.arange(length)[None], causal=True))
    want = _reference(q, k, v, sinks, mask, 8**-0.5)
    got = attend(q, k, v, scale=8**-0.5, is_causal=True, sinks=jnp.asarray(sinks))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    without = attend(q, k, v, scale=8**-0.5, is_causal=True)
    assert np.abs(np.asarray(without) - want).max() > 1e-2  # the sinks took weight away from the keys
    vanishing = attend(q, k, v, scale=8**-0.5, is_causal=True, sinks=jnp.full(4, -1e4))
    np.testing.assert_allclose(vanishing, without, rtol=1e-5, atol=1e-6)


def test_a_model_with_sinks_decodes_through_the_cache_as_the_full_forward():
    """Sliding and full layers (the window of 8 shorter than the 20 tokens) with sinks: greedy tokens through the
    KV cache and its ring buffers equal re-running the full forward; the sinks are a [heads] parameter per layer."""
    cfg = get_config("llama-tiny").replace(
        attention_sinks=True, attention_pattern=("local", "global"), sliding_window_size=8, num_layers=2
    )
    model, params = zoo.build(cfg), zoo.init_params(cfg, jax.random.key(0))
    assert params["decoder"]["cycles"]["block_0"]["attention"]["sinks"].shape == (1, cfg.num_heads)
    prompt = jax.random.randint(jax.random.key(1), (2, 4), 0, cfg.vocab_size)
    out = zoo.generate(model, params, prompt, 16)
    forward = jax.jit(model.apply)
    buf = jnp.zeros_like(out).at[:, :4].set(prompt)
    for t in range(4, 20):
        buf = buf.at[:, t].set(jnp.argmax(forward({"params": params}, buf)[:, t - 1], -1))
    np.testing.assert_array_equal(out, buf)


def test_clamped_glu_equals_gpt_oss_gate():
    """transformers' GptOssExperts._apply_gate: gate = min(gate, limit); up = clip(up, -limit, limit);
    (up + 1) * gate * sigmoid(1.702 gate)."""
    cfg = get_config("llama-tiny").replace(
        mlp_activations=("quick_gelu", "linear"), mlp_glu_limit=7.0, mlp_glu_linear_offset=1.0
    )
    gate = np.array([-20.0, -1.0, 0.5, 6.9, 7.5, 30.0], np.float32)
    up = np.array([-9.0, -0.3, 2.0, 7.1, -7.2, 0.0], np.float32)
    g, u = np.minimum(gate, 7.0), np.clip(up, -7.0, 7.0)
    want = (u + 1.0) * g / (1.0 + np.exp(-1.702 * g))
    np.testing.assert_allclose(hidden(cfg, [jnp.asarray(gate), jnp.asarray(up)]), want, rtol=1e-6)
    plain = hidden(cfg.replace(mlp_glu_limit=None, mlp_glu_linear_offset=0.0), [jnp.asarray(gate), jnp.asarray(up)])
    assert np.abs(np.asarray(plain) - want).max() > 1.0


def test_glu_knobs_need_a_gated_mlp():
    with pytest.raises(ValueError, match="ModelConfig.mlp_glu_limit: only applies with two mlp_activations"):
        get_config("gpt2-tiny").replace(mlp_glu_limit=7.0)
