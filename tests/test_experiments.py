"""zoo.experiments on tiny real runs: seeds repeat and differ, variants get their overrides, the summary is numpy's
mean / std of the curves, stopped runs are kept, position_losses evaluates past the training length, and a probe
(zoo.stability.SoftmaxProbe) measures every checkpoint."""

import dataclasses

import jax
import numpy as np
import pytest

from zoo import experiments as ex
from zoo.experiment_plots import smooth_curve
from zoo.model import build
from zoo.scales import SIZES, Sizes, base_overrides, glu_d_ff
from zoo.stability import PROBE_KEYS, SoftmaxProbe, softmax_stats

TINY = Sizes(
    steps=4,
    seeds=2,
    d_model=16,
    num_layers=1,
    num_heads=2,
    batch_size=8,
    seq_len=16,
    warmup_steps=1,
    learning_rate=3e-3,
    eval_interval=2,
    max_documents=100,
)


@pytest.fixture(scope="module")
def experiment():
    variants = {"base": [], "layernorm": ["model.norm_type=layernorm", "model.mlp_activations=[gelu]", "model.d_ff=64"]}
    return ex.run_variants(variants, base=base_overrides(TINY), seeds=[0, 1, 0], log=None)


def test_same_seed_same_curves_different_seed_different(experiment):
    runs = [r for r in experiment.runs if r.variant == "base"]
    assert [r.seed for r in runs] == [0, 1, 0]
    losses = [[h["loss"] for h in r.history] for r in runs]
    assert losses[0] == losses[2]  # a fresh run directory, the same seed: the same run
    assert losses[0] != losses[1]
    assert [e["val_loss"] for e in runs[0].evals] == [e["val_loss"] for e in runs[2].evals]


def test_variants_get_their_overrides(experiment):
    base, other = experiment.run("base", 0).config.model, experiment.run("layernorm", 0).config.model
    assert (base.norm_type, base.mlp_activations, base.d_ff) == ("rmsnorm", ("silu", "linear"), glu_d_ff(16))
    assert (other.norm_type, other.mlp_activations, other.d_ff) == ("layernorm", ("gelu",), 64)
    for model in (base, other):  # the base overrides reach every variant
        assert (model.d_model, model.num_layers, model.max_seq_len) == (16, 1, 4 * TINY.seq_len)
    assert experiment.run("base", 1).config.run.seed == 1
    assert len(experiment.run("base", 1).history) == TINY.steps


def test_tidy_rows_and_curves(experiment):
    rows = experiment.rows
    assert len(rows) == len(experiment.runs) * TINY.steps
    assert set(ex.CURVE_KEYS) <= set(rows[0]) and {"variant", "seed", "step"} <= set(rows[0])
    steps, values = experiment.curve("layernorm", "grad_norm")
    assert steps.tolist() == [1, 2, 3, 4] and values.shape == (3, 4)
    want = [r["grad_norm"] for r in rows if r["variant"] == "layernorm" and r["seed"] == 1]
    assert values[1].tolist() == want
    eval_steps, val = experiment.val_curve("base")
    assert eval_steps.tolist() == [2, 4] and np.isfinite(val).all()


def test_summary_is_numpy_over_the_curves(experiment):
    row = next(r for r in experiment.summary(tail=2) if r["variant"] == "layernorm")
    _, loss = experiment.curve("layernorm", "loss")
    per_seed = loss[:, -2:].mean(axis=1)
    assert row["train_loss"] == pytest.approx(np.mean(per_seed))
    assert row["train_loss_std"] == pytest.approx(np.std(per_seed, ddof=1))
    _, val = experiment.val_curve("layernorm")
    assert row["val_loss"] == pytest.approx(np.mean(val[:, -1]))
    assert row["val_loss_std"] == pytest.approx(np.std(val[:, -1], ddof=1))
    assert row["seeds"] == 3 and row["stopped"] == 0 and row["params"] > 0
    assert "| layernorm |" in experiment.markdown(baseline="base")
    assert experiment.markdown(["base"]).count("\n") == 2


def test_a_diverging_run_is_kept_with_its_curve():
    sizes = dataclasses.replace(TINY, steps=3, seeds=1)
    exp = ex.run_variants(
        {
            "huge lr": [
                "train.learning_rate=1e12",
                "train.warmup_steps=0",
                "train.grad_clip_norm=null",
                "model.norm_position=post",
                "model.final_norm=false",
            ]
        },
        base=base_overrides(sizes),
        seeds=1,
        log=None,
        probe=SoftmaxProbe(every=1, rows=1),
    )
    run = exp.runs[0]
    assert run.stopped and "non-finite" in run.stopped and run.params is None
    assert 1 <= len(run.history) < 3  # the steps before the non-finite one, read back from metrics.jsonl
    assert [p["step"] for p in run.probes] == list(range(1, len(run.history) + 1))  # checkpoints before the stop
    assert exp.summary()[0]["stopped"] == 1 and np.isnan(exp.summary()[0]["val_loss"])


def test_position_losses_past_the_training_length(experiment):
    run, n = experiment.run("base", 0), TINY.seq_len
    losses = ex.position_losses(run, [n, 4 * n], max_rows=4)
    assert sorted(losses) == [n, 4 * n] and losses[4 * n].shape == (4 * n,)
    assert np.isfinite(losses[4 * n]).all() and (losses[4 * n] > 0).all()
    rows = ex.validation_tokens(run.config)[: n + 1][None]  # the first row, by hand through the model
    logits = build(run.config.model).apply({"params": run.params}, rows[:, :-1])
    want = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), rows[:, 1:, None], -1)[0, :, 0]
    assert ex.position_losses(run, [n], max_rows=1)[n] == pytest.approx(want, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="max_seq_len"):
        ex.position_losses(run, [4 * n + 1])


def test_smoothing_and_sizes():
    values = np.array([[1.0, 3.0, 5.0, np.nan]])
    assert np.allclose(smooth_curve(values, 2)[0, :3], [1.0, 2.0, 4.0])
    assert np.isnan(smooth_curve(values, 2)[0, 3])
    assert set(SIZES) == {"ci", "laptop", "accelerator"}
    laptop, big = SIZES["laptop"], SIZES["accelerator"]
    assert 10 <= big.tokens / laptop.tokens <= 50  # the same experiments at 10-50x the tokens
    assert glu_d_ff(96) == 256  # 3 x 96 x 256 = 2 x 96 x 384: GLU and plain MLP parameters match


@pytest.fixture(scope="module")
def probed():
    variants = {"base": [], "capped": ["model.attn_logits_soft_cap=0.01"]}
    return ex.run_variants(variants, base=base_overrides(TINY), seeds=1, log=None, probe=SoftmaxProbe(every=3))


def test_probe_measures_every_checkpoint(probed):
    base, capped = probed.run("base", 0), probed.run("capped", 0)
    assert [p["step"] for p in base.probes] == [3, 4]  # every 3 steps and the last
    assert set(PROBE_KEYS) <= set(base.probes[0]) and all(np.isfinite(p[k]) for p in base.probes for k in PROBE_KEYS)
    steps, log_z = probed.probe_curve("base", "log_z")
    assert steps.tolist() == [3, 4] and log_z.shape == (1, 2) and log_z[0, 0] != log_z[0, 1]
    # the last checkpoint is the final params: log Z by hand from the logits the model returns
    tokens = SoftmaxProbe(every=3, rows=2).tokens(base.config)
    logits = np.asarray(build(base.config.model).apply({"params": base.params}, tokens), np.float64)
    log_z_hand = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    stats = softmax_stats(base.config.model, base.params, tokens)
    assert stats["log_z"] == pytest.approx(log_z_hand.mean(), rel=1e-5)
    assert stats["max_output_logit"] == pytest.approx(logits.max(), rel=1e-5)
    assert 0 < capped.probes[-1]["max_attn_logit"] <= 0.01 < base.probes[-1]["max_attn_logit"]  # the cap bounds it
