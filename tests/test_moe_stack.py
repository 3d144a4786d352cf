"""Mixture-of-experts knobs at the level of the layer stack: dense_prefix_layers (DeepSeekMoE's dense first
layers) computes what the same per-layer MLP kinds spelled as one long moe_pattern compute, scanned or unrolled,
through the KV cache, with the same counts, semantics and router statistics. (HF parity: tests/test_hf_moe.py,
test_dense_prefix_layers_both_ways_scanned_and_unrolled.)"""

import jax
import jax.numpy as jnp
import numpy as np

import zoo
from zoo.model import stack_layers
from zoo.presets import get_config
from zoo.semantics import semantic_differences
from zoo.train.router_losses import RouterLosses

# Two dense layers, then MoE ones: one scanned cycle of one block after a prefix group of two cycles.
PREFIXED = get_config("qwen2-moe-tiny").replace(num_layers=4, dense_prefix_layers=2, moe_pattern=("moe",))
TOKENS = jax.random.randint(jax.random.key(1), (2, 12), 0, PREFIXED.vocab_size)


def _as_one_pattern(params):
    """Unrolled params of PREFIXED (prefix_cycle_0..1, cycle_0..1, one block each) as the params of one cycle of
    four blocks (cycle_0/block_0..3), the layout of moe_pattern = the four layers' kinds."""
    decoder = params["decoder"]
    blocks = [decoder[f"prefix_cycle_{i}"]["block_0"] for i in range(2)]
    blocks += [decoder[f"cycle_{c}"]["block_0"] for c in range(2)]
    rest = {k: v for k, v in decoder.items() if "cycle" not in k}
    return {**params, "decoder": {**rest, "cycle_0": {f"block_{j}": b for j, b in enumerate(blocks)}}}


def test_a_dense_prefix_is_the_same_layers_as_one_long_pattern():
    unrolled = PREFIXED.replace(scan_layers=False)
    spelled = unrolled.replace(dense_prefix_layers=0, moe_pattern=("dense", "dense", "moe", "moe"))
    assert unrolled.mlp_kinds() == spelled.mlp_kinds() == ("dense", "dense", "moe", "moe")
    assert (unrolled.cycle_length, spelled.cycle_length) == (1, 4)
    assert semantic_differences(unrolled, spelled) == []  # so the HF bridge and init.hf treat them as one model
    assert zoo.count_params(unrolled) == zoo.count_params(spelled)
    assert zoo.count_params(unrolled, active=True) == zoo.count_params(spelled, active=True)

    params = zoo.init_params(unrolled, jax.random.key(0))
    assert "moe" not in params["decoder"]["prefix_cycle_1"]["block_0"]
    assert "mlp" not in params["decoder"]["cycle_0"]["block_0"]
    losses = RouterLosses.of(unrolled)
    logits, layers = losses.apply(zoo.build(unrolled), {"params": params}, TOKENS)
    spelled_logits, spelled_layers = losses.apply(zoo.build(spelled), {"params": _as_one_pattern(params)}, TOKENS)
    np.testing.assert_array_equal(logits, spelled_logits)
    assert layers["router_z_loss"].shape == (2,)  # one entry per MoE layer, none for the prefix
    jax.tree.map(np.testing.assert_array_equal, layers, spelled_layers)

    scanned = zoo.build(PREFIXED).apply({"params": stack_layers(params)}, TOKENS)
    np.testing.assert_allclose(scanned, logits, rtol=1e-5, atol=1e-5)


def test_a_dense_prefix_decodes_through_the_cache_as_the_full_forward():
    """Greedy tokens through the KV cache (both scanned groups carry one) equal re-running the full forward."""
    model = zoo.build(PREFIXED)
    params = zoo.init_params(PREFIXED, jax.random.key(0))
    out = zoo.generate(model, params, TOKENS[:, :4], 8)
    forward = jax.jit(model.apply)
    buf = jnp.zeros_like(out).at[:, :4].set(TOKENS[:, :4])
    for t in range(4, 12):
        buf = buf.at[:, t].set(jnp.argmax(forward({"params": params}, buf)[:, t - 1], -1))
    np.testing.assert_array_equal(out, buf)
