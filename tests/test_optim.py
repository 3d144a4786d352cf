"""Training recipe: schedules match their papers' formulas, the built optax optimizers do what the
recipe says (decay mask, lr-power decay, Adafactor), and the presets carry the published
recipes, read back from the built objects where possible."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zoo.recipe import TrainConfig
from zoo.train.optim import decay_mask, make_optimizer, make_schedule


def _params(boxed=False):
    """A param tree with the module names the model uses (scanned layers lead with a `layers` axis)."""

    def p(*shape, names=None):
        x = jnp.ones(shape)
        return nn.LogicallyPartitioned(x, names) if boxed else x

    return {
        "params": {
            "token_embed": {"embedding": p(16, 8, names=("vocab", "embed"))},
            "position_embed": {"embedding": p(4, 8, names=("positions", "embed"))},
            "relative_bias": p(32, 2, names=("relpos_buckets", "heads")),  # T5's per-stack bias table
            "layers": {
                "pre_attn_norm": {
                    "scale": p(2, 8, names=("layers", "embed")),
                    "bias": p(2, 8, names=("layers", "embed")),
                },
                "attention": {
                    "query": {"kernel": p(2, 8, 2, 4, names=("layers", "embed", "heads", "head_dim"))},
                    "out": {
                        "kernel": p(2, 2, 4, 8, names=("layers", "heads", "head_dim", "embed")),
                        "bias": p(2, 8, names=("layers", "embed")),
                    },
                },
                "mlp": {"wi": {"kernel": p(2, 8, 32, names=("layers", "embed", "mlp"))}},
            },
            "final_norm": {"scale": p(8, names=("embed",))},
            "lm_head": {"kernel": p(8, 16, names=("embed", "vocab"))},
        }
    }


def _flat(tree):
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _step(tc, grads, params=None, at_step=0, d_model=8):
    """One update from a fresh state whose step counters read `at_step`."""
    params = _params() if params is None else params
    tx, _ = make_optimizer(tc, params, d_model)
    state = optax.tree_utils.tree_set(tx.init(params), count=jnp.asarray(at_step, jnp.int32))
    return jax.jit(tx.update)(grads, state, params)


def _random_like(tree, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), tree)


def _zeros():
    return jax.tree.map(jnp.zeros_like, _params())


# --- schedules -------------------------------------------------------------------------------------


def test_noam_matches_vaswani():
    tc = TrainConfig(optimizer="adam", weight_decay=0.0, schedule="noam", learning_rate=1.0, warmup_steps=4000)
    lr = make_schedule(tc, d_model=512)
    for step in (1, 4000, 16000):
        expected = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
        assert float(lr(step)) == pytest.approx(expected, rel=1e-5)
    assert float(lr(4000)) == pytest.approx(6.988e-4, rel=1e-3)  # the peak
    assert float(lr(16000)) == pytest.approx(float(lr(4000)) / 2, rel=1e-5)
    assert float(lr(0)) == float(lr(1))  # the formula starts at step 1


def test_inverse_sqrt_is_t5():
    tc = TrainConfig(
        optimizer="adafactor", weight_decay=0.0, schedule="inverse_sqrt", learning_rate=0.01, warmup_steps=10_000
    )
    lr = make_schedule(tc, d_model=768)
    for step in (0, 1, 5000, 10_000, 40_000, 1_000_000):
        assert float(lr(step)) == pytest.approx(1 / math.sqrt(max(step, 1e4)), rel=1e-5)


def test_cosine_warmup_and_floor():
    tc = TrainConfig(learning_rate=3e-4, warmup_steps=2000, total_steps=10_000, final_lr_fraction=0.1)
    lr = make_schedule(tc, d_model=8)
    assert float(lr(0)) == 0.0
    assert float(lr(1000)) == pytest.approx(1.5e-4)
    assert float(lr(2000)) == pytest.approx(3e-4)
    assert float(lr(6000)) == pytest.approx(3e-5 + 2.7e-4 * 0.5)  # half-way through the cosine
    assert float(lr(10_000)) == pytest.approx(3e-5)
    assert float(lr(50_000)) == pytest.approx(3e-5)  # holds the floor
    values = np.array([lr(s) for s in range(2000, 10_001, 500)])
    assert np.all(np.diff(values) < 0)


def test_linear_and_constant():
    lin = make_schedule(
        TrainConfig(schedule="linear", learning_rate=1.0, warmup_steps=10, total_steps=110, final_lr_fraction=0.0), 8
    )
    assert [float(lin(s)) for s in (5, 10, 60, 110, 200)] == pytest.approx([0.5, 1.0, 0.5, 0.0, 0.0])
    const = make_schedule(TrainConfig(schedule="constant", learning_rate=1e-3, warmup_steps=0), 8)
    assert [float(const(s)) for s in (0, 10, 10**6)] == pytest.approx([1e-3] * 3)


def test_wsd():
    tc = TrainConfig(
        schedule="wsd",
        learning_rate=1.0,
        warmup_steps=100,
        total_steps=1000,
        wsd_decay_fraction=0.2,
        final_lr_fraction=0.0,
    )
    lr = make_schedule(tc, 8)
    expected = {50: 0.5, 100: 1.0, 500: 1.0, 800: 1.0, 900: 0.5, 1000: 0.0, 2000: 0.0}
    assert {s: float(lr(s)) for s in expected} == pytest.approx(expected)


# --- validation ----------------------------------------------------------------------------------------


def test_validation_names_field_and_choices():
    with pytest.raises(ValueError, match=r"TrainConfig.schedule: .*cosine, linear, inverse_sqrt"):
        TrainConfig(schedule="cosin")
    with pytest.raises(ValueError, match=r"unknown TrainConfig field 'learning_rat'.*learning_rate"):
        TrainConfig.from_dict({"learning_rat": 1e-3})
    with pytest.raises(ValueError, match=r"TrainConfig.weight_decay: optimizer 'adam'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match=r"TrainConfig.weight_decay_lr_power"):
        TrainConfig(weight_decay=0.0, weight_decay_lr_power=2.0)
    with pytest.raises(ValueError, match=r"TrainConfig.grad_accum_steps"):
        TrainConfig(batch_size=10, grad_accum_steps=4)
    with pytest.raises(ValueError, match=r"TrainConfig.warmup_steps"):
        TrainConfig().replace(warmup_steps=10**9)
    assert TrainConfig(batch_size=8, grad_accum_steps=4, seq_len=16).micro_batch_size == 2
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


# --- the built optimizer ----------------------------------------------------------------------------


def test_decay_mask_follows_flags():
    default = _flat(decay_mask(_params(), TrainConfig()))
    assert {k for k, v in default.items() if not v} == {
        "params/layers/pre_attn_norm/scale",
        "params/layers/pre_attn_norm/bias",
        "params/layers/attention/out/bias",
        "params/final_norm/scale",
    }
    olmo = _flat(decay_mask(_params(), TrainConfig(decay_embeddings=False, decay_norms_and_biases=True)))
    assert {k for k, v in olmo.items() if not v} == {
        "params/token_embed/embedding",
        "params/position_embed/embedding",
        "params/relative_bias",
    }
    assert olmo["params/lm_head/kernel"]  # an untied head is a dense layer
    # Boxed params (straight from model.init) give the same mask.
    assert _flat(decay_mask(_params(boxed=True), TrainConfig())) == default


def test_adamw_decays_exactly_the_masked_params():
    tc = TrainConfig(schedule="constant", warmup_steps=0, learning_rate=1e-2, weight_decay=0.1)
    updates, _ = _step(tc, _zeros())  # zero gradients: the update is the decay alone
    mask = _flat(decay_mask(_params(), tc))
    for name, u in _flat(updates).items():
        np.testing.assert_allclose(u, -1e-3 if mask[name] else 0.0, rtol=1e-6, err_msg=name)


def test_adamw_matches_optax_adamw():
    tc = TrainConfig(
        schedule="constant",
        warmup_steps=0,
        learning_rate=1e-2,
        grad_clip_norm=None,
        beta2=0.99,
        eps=1e-6,
        weight_decay=0.05,
    )
    params = _params()
    ours, _ = make_optimizer(tc, params, 8)
    ref = optax.adamw(1e-2, b1=0.9, b2=0.99, eps=1e-6, weight_decay=0.05, mask=decay_mask(params, tc))
    s1, s2 = ours.init(params), ref.init(params)
    for i in range(3):
        grads = _random_like(params, seed=i)
        u1, s1 = jax.jit(ours.update)(grads, s1, params)
        u2, s2 = jax.jit(ref.update)(grads, s2, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), u1, u2)
        params = optax.apply_updates(params, u1)


def test_adafactor_builds_and_updates():
    params = {"dense": {"kernel": jnp.ones((256, 128)), "bias": jnp.zeros(128)}}
    grads = _random_like(params)
    for factored in (True, False):
        tc = TrainConfig(
            optimizer="adafactor",
            schedule="inverse_sqrt",
            learning_rate=0.01,
            warmup_steps=10,
            beta1=None,
            weight_decay=0.0,
            grad_clip_norm=None,
            adafactor_factored=factored,
        )
        tx, _ = make_optimizer(tc, params, 8)
        state = tx.init(params)
        state_size = sum(x.size for x in jax.tree.leaves(state))
        # Factored: a row and a column vector per matrix instead of a full second-moment matrix.
        assert (state_size < 256 * 128) == factored
        updates, state = jax.jit(tx.update)(grads, state, params)
        new = optax.apply_updates(params, updates)
        assert all(jnp.isfinite(x).all() for x in jax.tree.leaves(new))
        # Update clipping (1.0) and parameter scale (RMS 1): each entry moves by about lr = 0.01.
        rms = jnp.sqrt(jnp.mean(updates["dense"]["kernel"] ** 2))
        assert 0.5e-2 < float(rms) <= 1.0001e-2


def test_palm_lr_squared_decay():
    # After one step with zero gradients the update is the decay alone: lr(0)**2 * param = 1e-4 * param.
    tc = TrainConfig(
        optimizer="adafactor",
        schedule="inverse_sqrt",
        learning_rate=1e-2,
        warmup_steps=10_000,
        adafactor_factored=False,
        weight_decay=1.0,
        weight_decay_lr_power=2.0,
    )
    updates, _ = _step(tc, _zeros())
    np.testing.assert_allclose(_flat(updates)["params/layers/mlp/wi/kernel"], -1e-4, rtol=1e-5)
    assert float(_flat(updates)["params/final_norm/scale"].max()) == 0.0
    # Later, lr = 1/sqrt(40000) = 0.005, so the decay is 2.5e-5.
    updates, _ = _step(tc, _zeros(), at_step=40_000)
    np.testing.assert_allclose(_flat(updates)["params/lm_head/kernel"], -2.5e-5, rtol=1e-5)
    # The same power on AdamW: lr * (wd * lr) = lr**2.
    adamw = TrainConfig(
        schedule="constant", warmup_steps=0, learning_rate=1e-2, weight_decay=1.0, weight_decay_lr_power=2.0
    )
    updates, _ = _step(adamw, _zeros())
    np.testing.assert_allclose(_flat(updates)["params/lm_head/kernel"], -1e-4, rtol=1e-5)


def test_global_norm_clipping():
    # Adam's first moment after one step is (1 - beta1) * the gradient it saw: the clipped one.
    tc = TrainConfig(grad_clip_norm=1.0)
    grads = jax.tree.map(lambda p: 100.0 * jnp.ones_like(p), _params())
    _, state = _step(tc, grads)
    assert float(optax.tree_utils.tree_norm(optax.tree_utils.tree_get(state, "mu"))) == pytest.approx(0.1, rel=1e-5)


# --- presets: the published recipes ----------------------------------------------------------------


def _recipe(name) -> TrainConfig:
    from zoo.presets import get_recipe

    recipe = get_recipe(name)
    return recipe if isinstance(recipe, TrainConfig) else TrainConfig.from_dict(recipe)


def _adam_moments_after_one_step(tc):
    """Norm of Adam's first moment after one step on a gradient of global norm 100: (1 - beta1) * clip."""
    grads = jax.tree.map(lambda p: jnp.ones_like(p), _params())
    norm = optax.tree_utils.tree_norm(grads)
    grads = jax.tree.map(lambda g: 100.0 * g / norm, grads)
    _, state = _step(tc, grads)
    return float(optax.tree_utils.tree_norm(optax.tree_utils.tree_get(state, "mu")))


def _decay_per_step(tc, at_step, d_model=8):
    """Fraction of a decayed weight removed per step (zero gradients): read from the built optimizer."""
    updates, _ = _step(tc, _zeros(), at_step=at_step, d_model=d_model)
    return -float(_flat(updates)["params/lm_head/kernel"][0, 0])


def test_llama2_7b_recipe():
    tc = _recipe("llama2-7b")
    assert (tc.optimizer, tc.beta1, tc.beta2, tc.eps, tc.weight_decay) == ("adamw", 0.9, 0.95, 1e-5, 0.1)
    assert (tc.schedule, tc.warmup_steps, tc.final_lr_fraction) == ("cosine", 2000, 0.1)
    lr = make_schedule(tc, 4096)
    assert float(lr(2000)) == pytest.approx(3e-4)
    assert float(lr(tc.total_steps)) == pytest.approx(3e-5)
    assert _adam_moments_after_one_step(tc) == pytest.approx(0.1, rel=1e-4)  # (1 - 0.9) * clip 1.0
    assert _decay_per_step(tc, 2000) == pytest.approx(3e-4 * 0.1, rel=1e-4)
    assert tc.tokens_per_step == 4 * 2**20 and tc.seq_len == 4096


def test_t5_base_recipe():
    tc = _recipe("t5-base")
    assert tc.optimizer == "adafactor" and tc.beta1 is None and tc.adafactor_factored
    assert (tc.adafactor_decay_rate, tc.adafactor_clipping_threshold) == (0.8, 1.0)
    assert tc.adafactor_multiply_by_parameter_scale
    lr = make_schedule(tc, 768)
    assert [float(lr(s)) for s in (0, 10_000, 40_000)] == pytest.approx([0.01, 0.01, 0.005])
    assert tc.grad_clip_norm is None and _decay_per_step(tc, 0) == 0.0
    assert tc.seq_len == 512


def test_transformer_base_recipe():
    tc = _recipe("transformer-base")
    assert (tc.optimizer, tc.beta1, tc.beta2, tc.eps) == ("adam", 0.9, 0.98, 1e-9)
    assert tc.schedule == "noam" and tc.warmup_steps == 4000 and tc.label_smoothing == 0.1
    lr = make_schedule(tc, 512)
    assert float(lr(4000)) == pytest.approx(512**-0.5 * 4000**-0.5, rel=1e-5)
    assert _decay_per_step(tc, 4000, d_model=512) == 0.0 and tc.grad_clip_norm is None
    assert tc.total_steps == 100_000


def test_palm_540b_recipe():
    tc = _recipe("palm-540b")
    assert tc.optimizer == "adafactor" and tc.beta1 == 0.9 and not tc.adafactor_factored
    assert tc.adafactor_decay_rate == 0.8 and tc.adafactor_multiply_by_parameter_scale
    lr = make_schedule(tc, 18432)
    assert [float(lr(s)) for s in (0, 10_000, 40_000)] == pytest.approx([0.01, 0.01, 0.005])
    assert _decay_per_step(tc, 0) == pytest.approx(1e-4, rel=1e-4)  # lr ** 2
    assert _decay_per_step(tc, 40_000) == pytest.approx(2.5e-5, rel=1e-4)
    assert tc.grad_clip_norm == 1.0 and tc.seq_len == 2048


def test_olmo2_7b_recipe():
    tc = _recipe("olmo2-7b")
    assert (tc.optimizer, tc.beta1, tc.beta2, tc.eps, tc.weight_decay) == ("adamw", 0.9, 0.95, 1e-8, 0.1)
    mask = _flat(decay_mask(_params(), tc))
    assert not mask["params/token_embed/embedding"] and mask["params/final_norm/scale"]
    lr = make_schedule(tc, 4096)
    assert (tc.schedule, tc.warmup_steps) == ("cosine", 2000)
    assert float(lr(2000)) == pytest.approx(3e-4) and float(lr(tc.total_steps)) == pytest.approx(3e-5)
    assert _adam_moments_after_one_step(tc) == pytest.approx(0.1, rel=1e-4)
    assert (tc.batch_size, tc.seq_len) == (1024, 4096)


def test_gpt3_175b_recipe():
    tc = _recipe("gpt3-175b")
    # GPT-3's "Adam with weight decay 0.1" cites Loshchilov & Hutter: decoupled decay, i.e. adamw here.
    assert (tc.optimizer, tc.beta1, tc.beta2, tc.eps, tc.weight_decay) == ("adamw", 0.9, 0.95, 1e-8, 0.1)
    assert tc.schedule == "cosine" and tc.final_lr_fraction == 0.1
    lr = make_schedule(tc, 12288)
    assert float(lr(tc.warmup_steps)) == pytest.approx(0.6e-4)
    assert float(lr(tc.total_steps)) == pytest.approx(0.6e-5)
    assert _adam_moments_after_one_step(tc) == pytest.approx(0.1, rel=1e-4)
    # 3.2M-token batches (1536 x 2048); warmup over 375M tokens; cosine over 260B tokens.
    assert (tc.batch_size, tc.seq_len) == (1536, 2048)
    assert tc.warmup_steps * tc.tokens_per_step == pytest.approx(375e6, rel=0.05)
    assert tc.total_steps * tc.tokens_per_step == pytest.approx(260e9, rel=0.05)
