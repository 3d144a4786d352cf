"""Generation for real use: batched prompts of different lengths (left padding), stop tokens, streaming, one
compile per bucket, a sharded model, stop strings and streamed text; and the model inputs they rest on
(per-row positions, segment ids for packed documents) and the max-logit instrumentation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.generate import _programs
from zoo.presets import get_config
from zoo.sharding import make_mesh
from zoo.train.sampling import generate_text
from zoo.train.tokenizer import ByteTokenizer

from conftest import init_params, jitted_apply

# One per position scheme and cache kind: RoPE + GQA, local ring buffers + soft-caps (Gemma 2), learned
# positions (GPT-2), ALiBi (BLOOM), Transformer-XL terms (Gopher), encoder-decoder with T5 buckets.
PRESETS = ["llama-tiny", "gemma2-tiny", "gpt2-tiny", "bloom-tiny", "gopher-tiny", "t5-tiny"]


@functools.cache
def tiny(name):
    cfg = get_config(name)
    return cfg, zoo.build(cfg), init_params(cfg)


def prompts(cfg, lengths, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, cfg.vocab_size, n).astype(np.int32) for n in lengths]


def encoder_inputs(cfg, n):
    return prompts(cfg, [9, 5, 12][:n], seed=2) if cfg.is_encoder_decoder else None


@pytest.mark.parametrize("name", PRESETS)
def test_batch_of_different_lengths_equals_each_alone(name):
    """Left padding with per-row positions: row i of a batched call == prompt i generated alone (greedy).
    40 new tokens run past the tiny presets' 32-token sliding windows."""
    cfg, model, params = tiny(name)
    rows = prompts(cfg, [3, 11, 6]) if not cfg.is_encoder_decoder else [np.zeros(1, np.int32)] * 3
    encoder = encoder_inputs(cfg, 3)
    batched = zoo.generate(model, params, rows, 40, encoder_tokens=encoder)
    assert isinstance(batched, list) and [len(r) for r in batched] == [len(p) + 40 for p in rows]
    for i, row in enumerate(rows):
        extra = {"encoder_tokens": [encoder[i]]} if encoder else {}
        alone = zoo.generate(model, params, row[None], 40, **extra)
        np.testing.assert_array_equal(batched[i], np.asarray(alone)[0])


def test_stop_tokens_end_rows_and_the_loop():
    """A row repeats its stop token once sampled; the others go on; the loop stops when every row has."""
    cfg, model, params = tiny("llama-tiny")
    rows = prompts(cfg, [4, 7])
    free = [np.asarray(r) for r in zoo.generate(model, params, rows, 12)]
    stop = int(free[0][4 + 2])  # row 0's third new token
    out = zoo.generate(model, params, rows, 12, stop_tokens=[stop])
    for i in range(2):
        new, reference = out[i][len(rows[i]) :], free[i][len(rows[i]) :]
        hits = np.flatnonzero(reference == stop)
        end = hits[0] if hits.size else len(reference)
        np.testing.assert_array_equal(new[: end + 1], reference[: end + 1])
        assert (new[end:] == stop).all()


@pytest.mark.slow  # ~14 s
def test_stream_yields_the_same_tokens_and_stops_early():
    cfg, model, params = tiny("gemma2-tiny")
    rows = prompts(cfg, [5, 9])
    whole = zoo.generate(model, params, rows, 20)
    steps = list(zoo.generate_stream(model, params, rows, 20))
    assert len(steps) == 20 and all(s.shape == (2,) for s in steps)
    np.testing.assert_array_equal(np.stack(steps, 1), np.stack([w[-20:] for w in whole]))
    first = [int(s[0]) for s in steps]
    k = next(j for j in range(1, 20) if first[j] not in first[:j])  # a token row 0 first samples at step k
    stopped = list(zoo.generate_stream(model, params, [rows[0]], 20, stop_tokens=[first[k]]))
    assert [int(s[0]) for s in stopped] == first[: k + 1]


def test_one_compile_per_bucket():
    """Prompt lengths 9..16 and 10..16 new tokens share a bucket: one program, whatever the lengths."""
    cfg, model, params = tiny("llama-tiny")
    _programs.cache_clear()
    for length, new in [(9, 10), (12, 16), (16, 13)]:
        zoo.generate(model, params, prompts(cfg, [length]), new)
    assert _programs.cache_info().misses == 1
    zoo.generate(model, params, prompts(cfg, [17]), 10)  # the next prompt bucket: one more
    assert _programs.cache_info().misses == 2


def test_sharded_sampling_equals_one_device():
    """Parameters (fsdp x tensor) and KV cache sharded over 8 emulated devices: the same tokens."""
    cfg, model, params = tiny("llama-tiny")
    rows = prompts(cfg, [6, 3, 8, 5])
    mesh = make_mesh(2, 2, 2)
    sharded = zoo.generate(model, params, rows, 16, mesh=mesh)
    for a, b in zip(sharded, zoo.generate(model, params, rows, 16), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # ~20 s
def test_positions_and_segment_ids_make_packed_documents_independent():
    """A row packing two documents (positions restarting at 0, segment ids 1 and 2) gives each token the
    logits it has when its document runs alone."""
    for name in ["llama-tiny", "gpt2-tiny", "bloom-tiny", "gemma2-tiny"]:
        cfg, _, params = tiny(name)
        apply = jitted_apply(cfg)  # compiled: the op-by-op forward takes longer than the compile
        a, b = prompts(cfg, [7, 9], seed=3)
        packed = np.concatenate([a, b])[None]
        positions = np.concatenate([np.arange(7), np.arange(9)])[None]
        segments = np.concatenate([np.full(7, 1), np.full(9, 2)])[None]
        out = apply(
            {"params": params}, jnp.asarray(packed), positions=jnp.asarray(positions), segment_ids=jnp.asarray(segments)
        )
        alone = [apply({"params": params}, jnp.asarray(d)[None])[0] for d in (a, b)]
        np.testing.assert_allclose(out[0], np.concatenate(alone), atol=2e-5, err_msg=name)
        unmasked = apply({"params": params}, jnp.asarray(packed))
        assert np.abs(np.asarray(unmasked[0, 7:]) - np.asarray(alone[1])).max() > 1e-3, name


@pytest.mark.slow  # ~8 s
def test_max_logit_is_sown_when_asked():
    """With 'intermediates' mutable each layer sows the largest unmasked pre-softmax logit; soft-capping
    bounds it by the cap."""
    cfg, _, params = tiny("gemma2-tiny")
    tokens = jnp.asarray(prompts(cfg, [24])[0])[None]
    big = jax.tree_util.tree_map(lambda p: p * 4.0, params)

    def max_logits(c):
        model = zoo.build(c)
        logits, state = model.apply({"params": big}, tokens, mutable=["intermediates"])
        np.testing.assert_allclose(logits, model.apply({"params": big}, tokens), atol=1e-5)  # observing is free
        found = [float(np.max(x)) for x in jax.tree_util.tree_leaves(state["intermediates"])]
        assert len(found) == cfg.num_layers // len(cfg.attention_pattern) * len(cfg.attention_pattern) // 2
        return found

    free = max_logits(cfg.replace(attn_logits_soft_cap=None))
    cap = max(free) / 2
    capped = max_logits(cfg.replace(attn_logits_soft_cap=cap))
    assert max(capped) <= cap and max(capped) > cap * np.tanh(1.0)  # tanh-bounded, and still large


def test_generate_text_stop_strings_and_streaming():
    """Stop strings cut the text before them; streamed pieces add up to the returned text and never show
    a stop string's beginning that is then cut."""
    cfg, model, params = tiny("llama-tiny")
    tok = ByteTokenizer()
    cfg = cfg.replace(vocab_size=tok.vocab_size)
    model, params = zoo.build(cfg), init_params(cfg)
    full = generate_text(model, params, tok, ["ab", "xyz1"], 30, temperature=0.0)
    stop = full[0][5:7]
    pieces = {0: [], 1: []}
    cut = generate_text(
        model,
        params,
        tok,
        ["ab", "xyz1"],
        30,
        temperature=0.0,
        stop=[stop],
        on_text=lambda row, piece: pieces[row].append(piece),
    )
    assert cut[0] == full[0][: full[0].index(stop)]
    assert cut[1] == (full[1][: full[1].index(stop)] if stop in full[1] else full[1])
    assert ["".join(pieces[i]) for i in range(2)] == cut
