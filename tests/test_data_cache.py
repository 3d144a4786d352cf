"""The tokenized corpus cache: built once, a memory map after; keyed by corpus and tokenizer; a corpus bigger
than the memory the process may allocate tokenizes and trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from zoo.train import data, data_cache
from zoo.train import tokenizer as tk

ROOT = Path(__file__).resolve().parents[1]


class CountingTokenizer(tk.ByteTokenizer):
    """The byte tokenizer, counting the documents it encodes."""

    calls = 0

    def encode_batch(self, texts):
        CountingTokenizer.calls += len(texts)
        return super().encode_batch(texts)


def _open(path, tmp_path, tok=None, **kw):
    return data_cache.open_tokens(path, tok or CountingTokenizer(), cache_dir=tmp_path / "cache", progress=False, **kw)


def test_second_open_is_a_hit_and_a_changed_file_invalidates(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(60):
        (corpus / f"{i:02d}.txt").write_text(f"document {i}\n" * (i + 1))
    CountingTokenizer.calls = 0
    first = _open(corpus, tmp_path)
    assert not first.hit and CountingTokenizer.calls == 60
    second = _open(corpus, tmp_path)
    assert second.hit and CountingTokenizer.calls == 60  # nothing tokenized
    assert second.directory == first.directory and isinstance(second.train.tokens, np.memmap)
    np.testing.assert_array_equal(second.train.tokens, first.train.tokens)
    # What the cache holds is exactly the in-memory path's tokens (evaluate.py's), split for split.
    memory = data.load_corpus(corpus)
    np.testing.assert_array_equal(second.train.tokens, data.tokenize_documents(tk.ByteTokenizer(), memory.train))
    np.testing.assert_array_equal(
        second.validation.tokens, data.tokenize_documents(tk.ByteTokenizer(), memory.validation)
    )
    assert second.train.documents == len(memory.train) and second.train.bytes == memory.stats()["train_bytes"]
    assert second.counts.sum() == len(second.train.tokens)
    (corpus / "07.txt").write_text("an edit\n")  # a changed file: a new entry, tokenized again
    CountingTokenizer.calls = 0
    third = _open(corpus, tmp_path)
    assert not third.hit and CountingTokenizer.calls == 60 and third.directory != first.directory
    assert len(third.train.tokens) + len(third.validation.tokens) < len(first.train.tokens) + len(
        first.validation.tokens
    )
    # Another tokenizer or split setting is another entry too; the old entries stay usable.
    assert not _open(corpus, tmp_path, tok=CountingTokenizer(num_sentinels=4)).hit
    assert not _open(corpus, tmp_path, validation_percent=10).hit
    assert _open(corpus, tmp_path, validation_percent=10).hit
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary build directories left behind


@pytest.mark.parametrize("percent", [2, 99])
def test_few_document_split_fallback_matches_the_in_memory_split(tmp_path, percent):
    """One text file (the last document is cut), and all-but-the-last in validation (they become train)."""
    (tmp_path / "one.txt").write_text("".join(f"line {i}\n" for i in range(1000)))
    (tmp_path / "few").mkdir()
    for i in range(3):
        (tmp_path / "few" / f"{i}.txt").write_text(f"doc {i}\n" * 50)
    for path in (tmp_path / "one.txt", tmp_path / "few"):
        memory = data.split_documents(data.read_documents(path), percent)
        cached = _open(path, tmp_path, validation_percent=percent)
        assert memory.train and memory.validation
        for split in ("train", "validation"):
            np.testing.assert_array_equal(
                getattr(cached, split).tokens, data.tokenize_documents(tk.ByteTokenizer(), getattr(memory, split))
            )
        assert cached.counts.sum() == len(cached.train.tokens)
        texts = data.TrainTexts((str(path),), validation_percent=percent)
        assert list(texts.train) == memory.train  # what a BPE trains on


def test_a_corpus_bigger_than_the_memory_limit_tokenizes_and_trains(tmp_path):
    """A subprocess may allocate 64 MB beyond what it holds after its imports (RLIMIT_DATA); the corpus is a
    ~90 MB .jsonl.zst (~90 MB of text). Reading it into memory fails there; tokenizing into the cache and
    drawing batches from the memory map works, and the tokens add up."""
    import zstandard

    rng = np.random.default_rng(0)
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "\n"])
    path = tmp_path / "big.jsonl.zst"
    expected_sum = expected_tokens = 0
    with open(path, "wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f) as out:
        for _ in range(9000):
            text = " ".join(rng.choice(words, size=int(rng.integers(1000, 3000))))
            raw = text.encode()
            expected_sum += int(np.frombuffer(raw, np.uint8).sum()) + 3 * len(raw) + 1  # byte ids + EOS (1)
            expected_tokens += len(raw) + 1
            out.write((json.dumps({"text": text}) + "\n").encode())
    assert expected_tokens > 80e6
    script = textwrap.dedent(f"""
        import resource, sys
        import numpy as np
        from zoo.train import data, data_cache
        from zoo.train.tokenizer import ByteTokenizer

        def vm_data():
            return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmData"))

        limit = vm_data() + (64 << 20)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        corpus = data_cache.open_tokens({str(path)!r}, ByteTokenizer(), cache_dir={str(tmp_path / "cache")!r},
                                        progress=False)
        total, count = 0, 0
        for split in (corpus.train, corpus.validation):
            for i in range(0, len(split.tokens), 1 << 20):
                chunk = np.asarray(split.tokens[i:i + (1 << 20)], np.int64)
                total, count = total + int(chunk.sum()), count + len(chunk)
        stream = data.TrainStream(data.pack(corpus.train.tokens, 1025, 1024), 16, seed=0)
        for _ in range(300):
            batch = next(stream)
            assert batch.shape == (16, 1025) and batch.min() >= 1 and batch.max() < 259
        print("tokens", count, "sum", total, "hit", corpus.hit, "peak_data", vm_data() - limit + (64 << 20))
        try:  # the limit bites: the corpus does not fit in what the process may allocate
            data.read_documents({str(path)!r})
            print("READ INTO MEMORY")
        except MemoryError:
            print("reading into memory: MemoryError")
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", MALLOC_ARENA_MAX="2")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[1] == "reading into memory: MemoryError", lines
    words = lines[0].split()
    assert (int(words[1]), int(words[3]), words[5]) == (expected_tokens, expected_sum, "False"), lines
