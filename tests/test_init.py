"""Initialisation and recipe values read back from what zoo builds: the initialised parameters' statistics
per `init_scheme`, and the optimizer's behaviour where a recipe value hides inside it (Adafactor's
epsilon1). Each expected value cites its source."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.presets import get_config, get_train_config
from zoo.train.objectives import make_objective
from zoo.train.optim import make_optimizer
from zoo.train.tokenizer import make_tokenizer


@functools.cache
def params(preset: str):
    return zoo.init_params(get_config(preset), jax.random.key(0))


def leaf(preset: str, *path: str) -> np.ndarray:
    tree = params(preset)
    for key in path:
        tree = tree[key]
    return np.asarray(tree, np.float64)


BLOCK = ("decoder", "cycles", "block_0")


def test_gpt2_scaled_init():
    """openai/gpt-2 src/model.py: wte N(0, 0.02) (line 155), wpe N(0, 0.01) (line 152-153); Radford 2019
    §2.3: residual projections / sqrt(N residual layers), N = 2 x layers."""
    cfg = get_config("gpt2-tiny")
    assert leaf("gpt2-tiny", "token_embed", "embedding").std() == pytest.approx(0.02, rel=0.03)
    assert leaf("gpt2-tiny", "position_embed", "embedding").std() == pytest.approx(0.01, rel=0.03)
    assert leaf("gpt2-tiny", *BLOCK, "attention", "query", "kernel").std() == pytest.approx(0.02, rel=0.03)
    scaled = 0.02 / (2 * cfg.num_layers) ** 0.5
    assert leaf("gpt2-tiny", *BLOCK, "attention", "out", "kernel").std() == pytest.approx(scaled, rel=0.03)
    assert leaf("gpt2-tiny", *BLOCK, "mlp", "wo", "kernel").std() == pytest.approx(scaled, rel=0.03)


def test_truncated_normal_init_is_cut_at_three_std():
    """OLMo 2: N(0, 0.02) truncated at 3 std (OLMo-core init `trunc_normal_(std=0.02, a=-3std, b=3std)`)."""
    w = leaf("olmo2-tiny", *BLOCK, "mlp", "wi_0", "kernel")
    assert np.abs(w).max() <= 3 * 0.02 + 1e-6 and w.std() == pytest.approx(0.02 * 0.9866, rel=0.03)


def test_fan_in_init():
    """PaLM §2: kernels N(0, 1/fan_in), embeddings N(0, 1)."""
    cfg = get_config("palm-tiny")
    assert leaf("palm-tiny", "token_embed", "embedding").std() == pytest.approx(1.0, rel=0.03)
    wo = leaf("palm-tiny", *BLOCK, "mlp", "wo", "kernel")  # (layers, d_ff, d_model): fan-in d_ff
    assert wo.std() == pytest.approx(cfg.d_ff**-0.5, rel=0.05)


@pytest.mark.parametrize("preset", ["t5-small", "palm-8b"])
def test_adafactor_epsilon1_is_1e_30(preset):
    """Mesh TF's Adafactor adds epsilon1 = 1e-30 to the squared gradients (mesh_tensorflow/optimize.py:218;
    T5X t5x/adafactor.py:210). With gradients of 1e-12 the normalised update is then ~1 (the update's RMS
    is clipped at 1 and scaled by the parameters' RMS, 1 here), so the first step is the learning rate
    (times 1 - beta1 for PaLM's momentum, plus its decay lr^2 x param); with epsilon1 = 1e-8 the gradient's
    part would be ~1e-8 of that."""
    tc = get_train_config(preset)
    w = {"w": jnp.ones((256, 256))}
    tx, schedule = make_optimizer(tc, w, d_model=256)
    updates, _ = tx.update({"w": jnp.full((256, 256), 1e-12)}, tx.init(w), w)
    step = float(jnp.sqrt(jnp.mean(updates["w"] ** 2)))
    lr = float(schedule(0))
    decay = tc.weight_decay * lr ** (tc.weight_decay_lr_power or 1.0)
    assert tc.eps == 1e-30 and step == pytest.approx((1 - (tc.beta1 or 0.0)) * lr + decay, rel=0.05)


def test_t5_trains_with_z_loss():
    """t5x/examples/t5/t5_1_0/base.gin:10 and t5_1_1/base.gin:10: Z_LOSS = 0.0001, in the loss the step takes."""
    for preset in ("t5-small", "t5-v1_1-base", "t5-tiny"):
        cfg = get_config(preset)
        objective = make_objective(cfg, get_train_config(preset), make_tokenizer("byte", num_sentinels=100), 0)
        assert objective.z_loss == 1e-4, preset


def test_t5_init_follows_mesh_tensorflow():
    """mesh_tensorflow: attention normal with fan-in scaling and the query absorbing 1/sqrt(d_kv)
    (transformer/attention.py:436-443); MLP kernels a tf truncated normal of std 1/sqrt(fan_in), cut at 2 std
    and not corrected (layers.py:310-364); the relative-bias table Glorot uniform (ops.py:4193-4196)."""
    cfg = get_config("t5-tiny")
    q = leaf("t5-tiny", "encoder", "cycles", "block_0", "attention", "query", "kernel")
    assert q.std() == pytest.approx((cfg.d_model * cfg.head_dim) ** -0.5, rel=0.03)
    wi = leaf("t5-tiny", "encoder", "cycles", "block_0", "mlp", "wi_0", "kernel")
    std = cfg.d_model**-0.5
    assert np.abs(wi).max() <= 2 * std + 1e-6 and wi.std() == pytest.approx(0.8796 * std, rel=0.03)
    table = leaf("t5-tiny", "encoder", "relative_bias")
    limit = (6 / sum(table.shape)) ** 0.5
    assert np.abs(table).max() <= limit and table.std() == pytest.approx(limit / 3**0.5, rel=0.3)
