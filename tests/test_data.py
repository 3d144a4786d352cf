"""Data pipeline and tokenizers: determinism, resume, round trips."""

from __future__ import annotations

import json
import sysconfig
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from zoo.train import data
from zoo.train import tokenizer as tk


@cache
def default_corpus() -> data.Corpus:
    return data.load_corpus()


# --- corpus --------------------------------------------------------------------------------------------------


def test_default_corpus_nonempty_deterministic_and_split_disjoint():
    corpus = default_corpus()
    stats = corpus.stats()
    assert stats["train_documents"] > 500 and stats["validation_documents"] > 5
    assert stats["train_bytes"] > 5_000_000
    again = data.load_corpus()
    assert again.train == corpus.train and again.validation == corpus.validation
    assert not set(corpus.train) & set(corpus.validation)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = set(corpus.train + corpus.validation)
    assert (stdlib / "json" / "decoder.py").read_text() in docs
    test_file = stdlib / "test" / "test_json" / "test_decode.py"
    assert not test_file.exists() or test_file.read_text() not in docs  # test directories are left out


def test_folder_and_jsonl_inputs(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.txt").write_text("second doc")
    (tmp_path / "a.md").write_text("first doc")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00binary")  # not UTF-8: skipped
    (tmp_path / ".hidden").write_text("hidden")
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "json doc 1"}) + "\n\n" + json.dumps({"body": "json 2"}))
    assert data.read_documents(tmp_path, text_field="body") == ["first doc", "second doc", "json doc 1", "json 2"]
    assert data.read_documents(tmp_path / "c.jsonl", text_field="body") == ["json doc 1", "json 2"]
    with pytest.raises(ValueError, match="'text'"):
        data.read_documents(tmp_path / "c.jsonl")


def test_single_text_file_still_gets_both_splits(tmp_path):
    text = "".join(f"line {i}\n" for i in range(1000))
    (tmp_path / "one.txt").write_text(text)
    corpus = data.load_corpus(tmp_path / "one.txt")
    assert corpus.train and corpus.validation
    assert "".join(corpus.train + corpus.validation) == text
    assert corpus.validation[0].startswith("line ")  # cut at a line boundary
    assert 0.01 < len(corpus.validation[0]) / len(text) < 0.03


def test_missing_path_and_empty_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_corpus(tmp_path / "nope")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="no documents"):
        data.load_corpus(tmp_path)
    with pytest.raises(ValueError, match="too small"):
        data.TrainStream(data.pack(np.zeros(5, np.int32), 9, 8), batch_size=1)


# --- tokenizers ----------------------------------------------------------------------------------------------


def test_byte_tokenizer_layout_and_round_trip(tmp_path):
    tok = tk.ByteTokenizer(num_sentinels=125)
    assert (tok.pad_id, tok.eos_id, tok.vocab_size, tk.model_vocab_size(tok)) == (0, 1, 384, 384)
    assert tk.model_vocab_size(tk.ByteTokenizer()) == 384
    text = "héllo → wörld ✓\n"
    ids = tok.encode(text)
    assert ids[:1] == [ord("h") + 3] and tok.decode(ids) == text
    s0, s1 = tok.sentinel_ids(2)
    assert (s0, s1) == (383, 382)
    assert tok.decode([*ids[:2], s0, tok.eos_id]) == "h\ufffd<extra_id_0></s>"  # half a character -> U+FFFD
    tok.save(tmp_path)
    loaded = tk.load_tokenizer(tmp_path)
    assert isinstance(loaded, tk.ByteTokenizer) and loaded.vocab_size == 384
    with pytest.raises(ValueError, match="sentinels"):
        tk.ByteTokenizer().sentinel_ids(1)


def test_bpe_trains_round_trips_saves_and_loads(tmp_path):
    train = default_corpus().train[:60]
    tok = tk.make_tokenizer("bpe", train_texts=train, vocab_size=600, num_sentinels=4)
    assert (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 1, 600)
    assert tok.sentinel_ids(4) == [599, 598, 597, 596]
    text = default_corpus().validation[0][:2000] + " literal </s> and ünïcödé"
    ids = tok.encode(text)
    assert tok.eos_id not in ids and tok.decode(ids) == text  # "</s>" in text is text, not EOS
    assert len(ids) < len(text.encode()) / 1.5  # merges learned something
    tok.save(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    loaded = tk.load_tokenizer(tmp_path)
    assert loaded.encode(text) == ids and (loaded.eos_id, loaded.pad_id) == (1, 0)
    assert [list(a) for a in loaded.encode_batch([text, "x"])] == [ids, loaded.encode("x")]
    # A bare tokenizer.json (as in an HF checkpoint dir) works too; EOS found by name.
    bare = tmp_path / "hf"
    bare.mkdir()
    (bare / "tokenizer.json").write_text((tmp_path / "tokenizer.json").read_text())
    assert tk.load_tokenizer(bare / "tokenizer.json").eos_id == 1


# --- packing and batches -------------------------------------------------------------------------------------


def test_packing_round_trips_text():
    tok = tk.ByteTokenizer()
    docs = default_corpus().validation
    tokens = data.tokenize_documents(tok, docs)
    assert tokens.dtype == np.int32 and (tokens == tok.eos_id).sum() == len(docs)
    seq_len = 128
    rows = data.pack(tokens, seq_len + 1, stride=seq_len)
    assert rows.shape == ((len(tokens) - 1) // seq_len, seq_len + 1)
    np.testing.assert_array_equal(rows[1:, 0], rows[:-1, -1])  # one-token overlap: every target used once
    stream = np.concatenate([rows[0], *[r[1:] for r in rows[1:]]])
    assert tok.decode(stream).split("</s>")[:3] == docs[:3]


def test_resume_from_saved_state_gives_identical_batches():
    rows = data.pack(np.arange(10_000, dtype=np.int32), 17, stride=16)
    stream = data.TrainStream(rows, batch_size=32, seed=3)
    assert stream.steps_per_epoch == len(rows) // 32
    n = stream.steps_per_epoch + 5  # crosses an epoch boundary
    for _ in range(7):
        next(stream)
    state = json.loads(json.dumps(stream.state))  # a checkpoint round trip
    rest = [next(stream) for _ in range(n)]
    resumed = data.TrainStream(rows, batch_size=32, seed=3, state=state)
    for a, b in zip(rest, [next(resumed) for _ in range(n)], strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.int32 and a.shape == (32, 17)
    fresh = data.TrainStream(rows, batch_size=32, seed=3)
    first = [next(fresh) for _ in range(fresh.steps_per_epoch)]
    seen = np.concatenate([b[:, 0] for b in first])
    assert len(np.unique(seen)) == len(seen)  # an epoch visits each row at most once
    assert not np.array_equal(next(fresh), first[0])  # and the next epoch reshuffles
    with pytest.raises(ValueError, match="different stream"):
        data.TrainStream(rows[:-40], batch_size=32, seed=3, state=state)


def test_validation_batches_fixed_and_limited():
    rows = data.pack(np.arange(1000, dtype=np.int32), 11, stride=10)
    batches = data.validation_batches(rows, batch_size=8, max_batches=5)
    assert len(batches) == 5 and batches[0].shape == (8, 11)
    np.testing.assert_array_equal(batches[1][0], rows[8])
    assert len(data.validation_batches(rows, batch_size=8)) == len(rows) // 8
    assert data.validation_batches(rows[:3], batch_size=8) == []


def test_unigram_entropy():
    assert data.unigram_entropy(np.array([5, 5, 5])) == 0.0
    assert data.unigram_entropy(np.array([1, 2, 3, 4])) == pytest.approx(np.log(4))
    tokens = data.tokenize_documents(tk.ByteTokenizer(), default_corpus().validation)
    assert 2.0 < data.unigram_entropy(tokens) < np.log(256)
