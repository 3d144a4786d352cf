"""Training objectives: the loss formulas against hand and numpy computations, and T5 span corruption
against T5's lengths and statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.train import data, objectives
from zoo.train import tokenizer as tk

# --- objectives ----------------------------------------------------------------------------------------------


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_causal_lm_loss_matches_hand_computation():
    logits = np.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]], np.float32)  # [1, 2, 3]
    targets = np.array([[0, 1]])
    expected = -(np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))) + np.log(np.exp(0.5) / (2 * np.exp(0.5) + np.exp(3))))
    loss, m = objectives.causal_lm_loss(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), targets)
    assert float(loss) == pytest.approx(expected / 2, rel=1e-5)
    assert float(m["accuracy"]) == 0.5 and float(m["tokens"]) == 2
    loss, _ = objectives.causal_lm_loss(logits, targets, mask=np.array([[1, 0]]))
    assert float(loss) == pytest.approx(-np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))), rel=1e-5)


def test_label_smoothing_and_z_loss_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32) * 3
    targets = rng.integers(0, 7, size=(2, 5))
    mask = rng.integers(0, 2, size=(2, 5)).astype(np.float32)
    ls, zl = 0.1, 1e-3
    logp = _log_softmax(logits.astype(np.float64))
    q = (1 - ls) * np.eye(7)[targets] + ls / 7
    lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    per_token = -(q * logp).sum(-1) + zl * lse**2
    expected = (per_token * mask).sum() / mask.sum()
    loss, m = jax.jit(lambda *a: objectives.causal_lm_loss(*a, label_smoothing=ls, z_loss=zl))(logits, targets, mask)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(m["z_loss"]) == pytest.approx((zl * lse**2 * mask).sum() / mask.sum(), rel=1e-5)
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    assert float(m["nll"]) == pytest.approx((nll * mask).sum() / mask.sum(), rel=1e-5)
    # The encoder-decoder loss is the same with pad targets masked out.
    targets[0, :2] = 0
    l1, _ = objectives.encoder_decoder_loss(logits, targets, pad_id=0)
    l2, _ = objectives.causal_lm_loss(logits, targets, mask=targets != 0)
    assert float(l1) == pytest.approx(float(l2))


# --- T5 span corruption --------------------------------------------------------------------------------------


def test_span_corruption_lengths_match_t5():
    assert objectives.span_corruption_lengths(512) == (568, 114)  # t5.data.preprocessors.random_spans_helper
    assert objectives.span_corruption_lengths(512, 0.5, 3.0)[1] <= 512


def _split_on(seq, is_sentinel):
    """Pieces of `seq` after each sentinel: {sentinel: tokens up to the next sentinel or EOS}."""
    out, cur = {}, None
    for t in seq:
        if is_sentinel(t):
            cur = int(t)
            out[cur] = []
        elif cur is not None:
            out[cur].append(int(t))
    return out


def test_span_corruption_reconstructs_and_has_t5_statistics():
    tok = tk.ByteTokenizer(num_sentinels=100)
    sentinels = tok.sentinel_ids(100)
    tokens_length, targets_length = objectives.span_corruption_lengths(512)
    rows = data.pack(data.tokenize_documents(tok, data.load_corpus().validation), tokens_length)[:64]
    rng = np.random.default_rng(0)
    inputs, targets = objectives.span_corrupt(
        rows, rng, sentinel_ids=sentinels, eos_id=tok.eos_id, pad_id=tok.pad_id, inputs_length=512
    )
    assert inputs.shape == (64, 512) and targets.shape == (64, targets_length)
    assert inputs.dtype == targets.dtype == np.int32
    is_sentinel = lambda t: t in set(sentinels)  # noqa: E731
    noise_fraction, span_lengths = [], []
    for row, inp, tgt in zip(rows, inputs, targets, strict=True):
        assert tgt[-1] == tok.eos_id and tgt[0] == sentinels[0]
        inp = inp[inp != tok.pad_id]  # byte ids and sentinels are never 0
        assert inp[-1] == tok.eos_id
        inp = inp[:-1]
        spans = _split_on(tgt[:-1], is_sentinel)
        # Put each noise span back where its sentinel sits in the inputs.
        rebuilt = [t for x in inp for t in (spans[int(x)] if is_sentinel(x) else [int(x)])]
        assert rebuilt == list(row)
        noise_fraction.append(sum(map(len, spans.values())) / len(row))
        span_lengths += [len(s) for s in spans.values()]
    assert np.mean(noise_fraction) == pytest.approx(0.15, abs=0.01)
    assert np.mean(span_lengths) == pytest.approx(3.0, abs=0.15)
    assert np.std(span_lengths) > 1 and min(span_lengths) == 1  # lengths vary: spans are random, not fixed
    # Different rows (and rng draws) place spans differently; the same rng seed reproduces them.
    again, _ = objectives.span_corrupt(
        rows, np.random.default_rng(0), sentinel_ids=sentinels, eos_id=1, inputs_length=512
    )
    np.testing.assert_array_equal(again, inputs)
    assert not np.array_equal(
        inputs[0, :100],
        objectives.span_corrupt(rows, np.random.default_rng(1), sentinel_ids=sentinels, eos_id=1, inputs_length=512)[0][
            0, :100
        ],
    )
    decoder_inputs = objectives.shift_right(targets, tok.pad_id)
    assert (decoder_inputs[:, 0] == 0).all() and (decoder_inputs[:, 1:] == targets[:, :-1]).all()
