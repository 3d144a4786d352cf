"""Data pipeline and tokenizers: determinism, resume, round trips."""

from __future__ import annotations

import json
import sys
import sysconfig
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from zoo.train import data, data_cache
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


def test_compressed_jsonl_and_parquet_inputs(tmp_path, monkeypatch):
    import gzip

    import zstandard

    docs = [f"document {i} ünïcode\u2028line" for i in range(50)]
    lines = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    assert data.read_documents(tmp_path / "a.jsonl.gz") == docs
    assert data.read_documents(tmp_path / "b.jsonl.zst") == docs
    assert data.read_documents(tmp_path) == docs + docs  # a folder: each file by its format, in name order
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        data.read_documents(tmp_path / "bad.jsonl")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    pq.write_table(pyarrow.table({"id": list(range(50)), "body": docs}), tmp_path / "c.parquet", row_group_size=7)
    assert data.read_documents(tmp_path / "c.parquet", text_field="body") == docs
    with pytest.raises(ValueError, match="no column 'text'"):
        data.read_documents(tmp_path / "c.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    with pytest.raises(ValueError, match=r'pip install -e "\.\[parquet\]"'):
        data.read_documents(tmp_path / "c.parquet", text_field="body")


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
    assert state == {"step": 7, "seed": 3, "num_rows": [len(rows)], "taken": [7 * 32]}  # a few global ints


def test_hosts_read_their_rows_and_together_make_the_global_batch():
    """Two hosts (index = their halves of the batch) read exactly the rows of the one-host batch, and a
    state saved by two hosts resumes on one (and back): the state is global."""
    rows = data.pack(np.arange(5000, dtype=np.int32), 9, stride=8)
    one = data.TrainStream(rows, batch_size=16, seed=1)
    hosts = [data.TrainStream(rows, 16, 1, index=np.arange(8) + 8 * i) for i in range(2)]
    for _ in range(50):
        np.testing.assert_array_equal(next(one), np.concatenate([next(h) for h in hosts]))
    assert hosts[0].state == hosts[1].state == one.state
    resumed = data.TrainStream(rows, 16, 1, state=json.loads(json.dumps(hosts[0].state)))
    two = [data.TrainStream(rows, 16, 1, state=one.state, index=np.arange(i, 16, 2)) for i in range(2)]
    for _ in range(5):
        batch = next(resumed)
        np.testing.assert_array_equal(batch, next(one))
        np.testing.assert_array_equal(batch[0::2], next(two[0]))
        np.testing.assert_array_equal(batch[1::2], next(two[1]))


# --- mixtures ------------------------------------------------------------------------------------------------


def _two_sources():
    """Source 0's tokens are < 100_000, source 1's >= 100_000: a row tells where it came from."""
    return [data.pack(np.arange(4000, dtype=np.int32), 9, 8), data.pack(100_000 + np.arange(900, dtype=np.int32), 9, 8)]


def test_mixture_is_deterministic_follows_the_weights_and_resumes_exactly():
    sources = _two_sources()
    stream = data.TrainStream(sources, 64, seed=5, weights=[0.7, 0.3])
    again = data.TrainStream(sources, 64, seed=5, weights=[0.7, 0.3])
    batches = [next(stream) for _ in range(150)]  # source 1 (112 rows) wraps around many epochs
    for b in batches[:20]:
        np.testing.assert_array_equal(b, next(again))
    from_1 = np.concatenate(batches)[:, 0] >= 100_000
    assert abs(from_1.mean() - 0.3) < 0.015, from_1.mean()  # 9600 rows: 3 sigma = 0.014
    assert stream.state["taken"] == [int((~from_1).sum()), int(from_1.sum())]
    state = json.loads(json.dumps(stream.state))
    rest = [next(stream) for _ in range(30)]
    resumed = data.TrainStream(sources, 64, seed=5, weights=[0.7, 0.3], state=state)
    for a in rest:
        np.testing.assert_array_equal(a, next(resumed))
    # Each source visits its rows once per epoch: source 1's first 112 rows are a permutation of its rows.
    ones = np.concatenate([b[b[:, 0] >= 100_000] for b in batches])[: len(sources[1])]
    assert sorted(ones[:, 0]) == sorted(sources[1][:, 0])
    other = data.TrainStream(sources, 64, seed=6, weights=[0.7, 0.3])
    assert not np.array_equal(next(other), batches[0])
    with pytest.raises(ValueError, match="different stream"):
        data.TrainStream(sources[:1], 64, seed=5, state=state)


def test_sources_setting_parses_and_rejects_bad_weights():
    from zoo.train.config import UserError, resolve
    from zoo.train.data_sources import parse_sources

    assert parse_sources(["a.jsonl:0.7", "b/:0.3", "c.txt", "C:/x.txt:2"]) == [
        ("a.jsonl", 0.7),
        ("b/", 0.3),
        ("c.txt", 1.0),
        ("C:/x.txt", 2.0),
    ]
    assert resolve("llama-tiny", ["data.sources=a.jsonl:0.7,b/:0.3"]).data.sources == ("a.jsonl:0.7", "b/:0.3")
    with pytest.raises(
        UserError,
        match=r"DataConfig.sources: 'b:-1': the weight must be a positive number.*"
        r"from the command line",
    ):
        resolve("llama-tiny", ["data.sources=a:1,b:-1"])
    with pytest.raises(UserError, match="both name the training text"):
        resolve("llama-tiny", ["data.sources=a:1", "data.path=b"])


def test_mixture_through_the_cache(tmp_path):
    """data.sources: each source cached on its own; the stream mixes them by weight, validation holds both."""
    from zoo.train import data_setup
    from zoo.train.sections import DataConfig

    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": "a" * 300 + str(i)}) + "\n" for i in range(300)))
    (tmp_path / "b").mkdir()
    for i in range(300):
        (tmp_path / "b" / f"{i}.txt").write_text("b" * 300 + str(i))
    cfg = DataConfig(
        sources=(f"{tmp_path / 'a.jsonl'}:3", f"{tmp_path / 'b'}:1"),
        cache_dir=str(tmp_path / "cache"),
        validation_percent=10,
    )
    tok = tk.ByteTokenizer()
    run = data_setup.open_training_data(cfg, tok, 65, 64, batch_size=32, seed=0, val_limit=40, progress=False)
    rows = np.concatenate([next(run.stream) for _ in range(100)])
    share_b = np.mean(rows[:, 10] == ord("b") + 3)
    assert abs(share_b - 0.25) < 0.03, share_b
    assert len(list((tmp_path / "cache").iterdir())) == 2 and "mixture" in run.message
    assert len(run.val_rows) == 40 and {ord("a") + 3, ord("b") + 3} <= set(run.val_rows[:, 10].tolist())


def test_validation_batches_fixed_and_limited():
    rows = data.pack(np.arange(1000, dtype=np.int32), 11, stride=10)
    batches = data.validation_batches(rows, batch_size=8, max_batches=5)
    assert len(batches) == 5 and batches[0].shape == (8, 11)
    np.testing.assert_array_equal(batches[1][0], rows[8])
    assert len(data.validation_batches(rows, batch_size=8)) == len(rows) // 8
    assert data.validation_batches(rows[:3], batch_size=8) == []


def test_unigram_entropy():
    """Of a frequency table (the token cache's train counts)."""
    assert data_cache.unigram_entropy(np.bincount([5, 5, 5])) == 0.0
    assert data_cache.unigram_entropy(np.bincount([1, 2, 3, 4])) == pytest.approx(np.log(4))
    tokens = data.tokenize_documents(tk.ByteTokenizer(), default_corpus().validation)
    assert 2.0 < data_cache.unigram_entropy(np.bincount(tokens)) < np.log(256)
