"""Document masking: packing gives segment ids and per-document positions; with them a packed row's per-token
losses equal each document's run alone; the recipe field turns it on (on for the Llama 3 presets)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.train import data
from zoo.train.config import resolve
from zoo.train.objectives import CausalLM, make_objective
from zoo.train.tokenizer import ByteTokenizer

EOS = 1


def test_segments_and_positions_restart_after_each_eos():
    tokens = np.array([[5, 6, EOS, 7, 8, 9, EOS, EOS, 4], [3, 3, 3, 3, 3, 3, 3, 3, 3]])
    segments, positions = data.document_segments(tokens, EOS)
    np.testing.assert_array_equal(segments, [[1, 1, 1, 2, 2, 2, 2, 3, 4], [1] * 9])
    np.testing.assert_array_equal(positions, [[0, 1, 2, 0, 1, 2, 3, 0, 0], list(range(9))])
    assert segments.dtype == positions.dtype == np.int32


def test_the_recipe_field_turns_it_on_for_llama3():
    assert resolve("llama3-8b").train.document_masking and resolve("llama3.1-405b").train.document_masking
    assert not resolve("llama-7b").train.document_masking and not resolve("gpt3-tiny").train.document_masking
    config = resolve("llama-tiny", ["train.document_masking=true"])
    objective = make_objective(config.model, config.train, ByteTokenizer(), 0)
    rows = np.array([[5, 6, EOS, 7, 8]])
    batch = objective.make_batch(rows, 0)
    np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 2]])
    np.testing.assert_array_equal(batch["positions"], [[0, 1, 2, 0]])
    plain = make_objective(config.model, config.train.replace(document_masking=False), ByteTokenizer(), 0)
    assert set(plain.make_batch(rows, 0)) == {"inputs", "targets"}


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt2-tiny"])  # RoPE; learned absolute positions
def test_packed_losses_equal_each_document_alone(preset):
    cfg = zoo.get_config(preset).replace(vocab_size=384)
    model = zoo.build(cfg)
    params = zoo.init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 259, n).astype(np.int32) for n in (13, 7, 30, 5, 40)]
    stream = np.concatenate([np.append(d, EOS) for d in docs]).astype(np.int32)
    seq_len = 40
    rows = data.pack(stream, seq_len + 1, seq_len)[:2]  # two rows; documents cross the row boundary
    objective = CausalLM(seq_len, document_masking=True, eos_id=EOS)
    batch = objective.make_batch(np.asarray(rows), 0)

    @jax.jit
    def per_token(tokens, targets, positions=None, segment_ids=None):
        logits = model.apply({"params": params}, tokens, positions=positions, segment_ids=segment_ids)
        picked = jnp.take_along_axis(logits.astype(jnp.float32), targets[..., None], -1)[..., 0]
        return jax.nn.logsumexp(logits.astype(jnp.float32), -1) - picked

    # One call (one compile): the packed rows with their masks, each document alone at the start of a row of
    # its own (the rest is filler a causal model cannot see), and the packed rows without masks.
    spans = [(r, batch["segment_ids"][r] == s) for r in range(len(rows)) for s in np.unique(batch["segment_ids"][r])]
    inputs, targets = np.full((2, len(spans), seq_len), 3, np.int32)
    for i, (r, at) in enumerate(spans):
        inputs[i, : at.sum()], targets[i, : at.sum()] = batch["inputs"][r, at], batch["targets"][r, at]
    plain_positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (len(spans) + 2, seq_len))
    losses = np.asarray(
        per_token(
            np.concatenate([batch["inputs"], inputs, batch["inputs"]]),
            np.concatenate([batch["targets"], targets, batch["targets"]]),
            np.concatenate([batch["positions"], plain_positions]),
            np.concatenate([batch["segment_ids"], np.ones((len(spans) + 2, seq_len), np.int32)]),
        )
    )
    packed, unmasked = losses[:2], losses[-2:]
    alone = np.zeros_like(packed)
    for i, (r, at) in enumerate(spans):
        alone[r, at] = losses[2 + i, : at.sum()]
    np.testing.assert_allclose(packed, alone, atol=1e-5, rtol=0)
    assert np.abs(unmasked - alone).max() > 1e-2  # without the mask, documents do see each other
    # Through the objective's loss (what the train step and evaluation call): the mean of the same numbers.
    loss = jax.jit(lambda b: objective.loss(model, params, b, None)[0])(batch)
    assert float(loss) == pytest.approx(float(alone.mean()), abs=1e-5)
