"""Faults in a run's inputs (issue 17, "Inputs"): nothing is dropped silently, every read error names the file
and the line, the token cache is keyed by content, and a damaged cache entry is refused on open."""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
from pathlib import Path

import jax
import numpy as np
import pytest
import zstandard

from zoo.train import data, data_cache, data_setup
from zoo.train import tokenizer as tk
from zoo.train.config import UserError, resolve
from zoo.train.setup import prepare

GOOD = [json.dumps({"text": f"document {i}"}).encode() for i in range(100)]


def _jsonl(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _open(path, tmp_path, **kw):
    return data_cache.open_tokens(path, tk.ByteTokenizer(), cache_dir=tmp_path / "cache", progress=False, **kw)


def _text(corpus) -> str:
    tokens = np.concatenate([corpus.train.tokens, corpus.validation.tokens])
    return tk.ByteTokenizer().decode(tokens)


def _error(read) -> str:
    with pytest.raises(ValueError) as caught:
        read()
    return str(caught.value)


def test_a_bad_byte_at_line_101_fails_the_folder_and_the_file_alike(tmp_path):
    """The reported case: a folder whose JSONL has one non-UTF-8 byte at line 101 trained on 100 documents."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    bad = folder / "bad.jsonl"
    bad.write_bytes(_jsonl([*GOOD, b'{"text": "caf\xe9"}', *GOOD]))
    (folder / "good.txt").write_text("another document")
    offset = len(_jsonl(GOOD)) + len(b'{"text": "caf')
    expected = f"{bad}:101: not UTF-8 (invalid continuation byte at byte {offset} of the file)"
    assert _error(lambda: data.read_documents(bad)) == expected
    assert _error(lambda: data.read_documents(folder)) == expected
    assert _error(lambda: _open(folder, tmp_path)) == expected
    assert not list((tmp_path / "cache").iterdir())  # no entry, not even a partial one


def test_a_text_file_that_is_not_utf8_fails_and_only_binaries_are_skipped(tmp_path):
    """In a folder a binary (not UTF-8, a NUL byte near its start) is skipped; a text file in another
    encoding, its first non-UTF-8 byte past 8 KB, fails naming the line, as it does alone."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("a document")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert data.read_documents(folder) == ["a document"]
    legacy = folder / "legacy.txt"
    legacy.write_bytes(b"plain ascii\n" * 5000 + "café\n".encode("latin-1"))
    expected = f"{legacy}:5001: not UTF-8 (invalid continuation byte at byte {12 * 5000 + 3})"
    assert _error(lambda: data.read_documents(legacy)) == expected
    assert _error(lambda: data.read_documents(folder)) == expected


BAD_BYTE_AT = len(_jsonl(GOOD[:2])) + len(b'{"text": "')  # of the fault on line 3 below
RECORD_FAULTS = [
    (b'{"text": "cut', r"not JSON \("),
    (b'{"body": "no text field"}', r"expected a JSON object with a string field 'text'"),
    (b'{"text": 5}', r"expected a JSON object with a string field 'text'"),
    (b'{"text": "\xff"}', rf"not UTF-8 \(invalid start byte at byte {BAD_BYTE_AT} of the (decompressed text|file)\)"),
    (b'{"text": "a\\ud800"}', r"'text' holds a lone surrogate"),  # a JSON escape no UTF-8 encoder takes
]


def test_each_record_fault_names_the_file_and_line_in_every_container(tmp_path):
    """Plain, gzip and zstandard JSONL, alone, in a folder and through the cache: file:line and the fault. (Bad
    UTF-8 named no line, or was skipped in a folder; a lone surrogate failed later, in the tokenizer, unnamed.)"""
    for k, (line, problem) in enumerate(RECORD_FAULTS):
        raw = _jsonl([GOOD[0], GOOD[1], line, GOOD[2]])
        for name, content in [
            ("f.jsonl", raw),
            ("f.jsonl.gz", gzip.compress(raw)),
            ("f.jsonl.zst", zstandard.ZstdCompressor().compress(raw)),
        ]:
            folder = tmp_path / f"{k}-{name}"
            folder.mkdir()
            (folder / name).write_bytes(content)
            pattern = rf"^{re.escape(str(folder / name))}:3: {problem}"
            for read in (
                functools.partial(data.read_documents, folder / name),
                functools.partial(data.read_documents, folder),
                functools.partial(_open, folder, tmp_path),
            ):
                message = _error(read)
                assert re.match(pattern, message), (message, pattern)


def test_a_zst_cut_at_a_block_boundary_is_refused_and_whole_frames_all_read(tmp_path):
    """A stream cut where a block ends decodes cleanly up to the cut (before: half the documents, silently)."""
    raw = _jsonl(GOOD)
    half = len(_jsonl(GOOD[:50]))
    compressor = zstandard.ZstdCompressor().compressobj()
    head = compressor.compress(raw[:half]) + compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    whole = head + compressor.compress(raw[half:]) + compressor.flush()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(head) == raw[:half]  # a clean cut
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(head)
    message = _error(lambda: data.read_documents(path))
    assert message.startswith(f"{path}: the compressed stream is corrupt or truncated after line 50"), message
    path.write_bytes(whole)
    assert len(data.read_documents(path)) == 100
    frames = zstandard.ZstdCompressor().compress(raw[:half]) + zstandard.ZstdCompressor().compress(raw[half:])
    path.write_bytes(frames)  # several frames (zstd -c a b, pzstd): every frame is read
    assert len(data.read_documents(path)) == 100


def test_a_truncated_or_corrupt_gz_is_a_value_error_naming_the_file(tmp_path):
    """Before: an EOFError (or BadGzipFile) traceback naming no file."""
    packed = gzip.compress(_jsonl(GOOD))
    path = tmp_path / "docs.jsonl.gz"
    for content in (packed[: len(packed) // 2], packed[:-4], packed[:-8] + b"\0" * 8):  # cut, cut, bad CRC
        path.write_bytes(content)
        message = _error(lambda: data.read_documents(path))
        assert message.startswith(f"{path}: the compressed stream is corrupt or truncated after line"), message


def test_a_parquet_null_or_a_cut_parquet_file_is_an_error_naming_it(tmp_path):
    """Before: a null text was skipped silently, and a cut file raised pyarrow's error naming no file."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    path = tmp_path / "docs.parquet"
    pq.write_table(pyarrow.table({"text": ["one", "two", None, "four"]}), path)
    assert _error(lambda: data.read_documents(path)) == f"{path}: row 3: 'text' holds None, not a string"
    pq.write_table(pyarrow.table({"text": ["a document"] * 100}), path)
    path.write_bytes(path.read_bytes()[:-20])
    assert _error(lambda: data.read_documents(path)).startswith(f"{path}: unreadable Parquet after row 0 (")


def test_a_same_size_edit_with_its_mtime_restored_rebuilds_and_a_touch_reuses(tmp_path, monkeypatch):
    """The key is the content: an edit that keeps size and mtime gets the new tokens; a touch that changes
    nothing hashes the file once more and reuses the entry; an unchanged file is not read to open it."""
    path = tmp_path / "corpus.txt"
    path.write_text("alpha beta\n" * 200)
    first = _open(path, tmp_path)
    before = path.stat()
    path.write_text("alpha BETA\n" * 200)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = _open(path, tmp_path)
    assert not second.hit and second.directory != first.directory
    assert "BETA" in _text(second) and "beta" not in _text(second)

    hashed = []
    file_digest = data_cache.hashlib.file_digest
    monkeypatch.setattr(
        data_cache.hashlib, "file_digest", lambda f, name: hashed.append(f.name) or file_digest(f, name)
    )
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # touched, unchanged
    third = _open(path, tmp_path)
    assert third.hit and third.directory == second.directory and hashed == [str(path)]
    assert _open(path, tmp_path).hit and hashed == [str(path)]  # its new stamp is remembered: not read again


def _damage_message(directory: Path, reopen, change) -> str:
    """The error opening the entry in `directory` after `change()`; every file is put back afterwards."""
    saved = {file: file.read_bytes() for file in directory.iterdir()}
    change()
    try:
        return _error(reopen)
    finally:
        for file, content in saved.items():
            file.write_bytes(content)


def test_a_damaged_cache_entry_is_refused_on_open(tmp_path):
    """Before: a zeroed region trained, and an out-of-vocab id surfaced much later as a non-finite loss."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i:02d}.txt").write_text(f"document number {i} " * 10)
    directory = _open(folder, tmp_path).directory
    tokens = np.fromfile(directory / "train.tokens", np.uint16)
    offsets = np.load(directory / "train.offsets.npy")
    end = int(offsets[3]) - 1  # the EOS that ends the third document

    def tokens_with(index, value):
        def change():
            damaged = tokens.copy()
            damaged[index] = value
            damaged.tofile(directory / "train.tokens")

        return change

    cases = [
        ("train.tokens", tokens_with(slice(end - 40, end - 20), 0), "its CRC-32 is not the one recorded"),
        ("train.tokens", tokens_with(slice(end - 8, end + 8), 0), "document 2 does not end in EOS (id 1)"),
        ("train.tokens", tokens_with(end - 5, 300), f"id 300 at token {end - 5} is outside the vocab of 259"),
        ("train.tokens", lambda: tokens[:-1].tofile(directory / "train.tokens"), "bytes, not the"),
        ("train.offsets.npy", lambda: np.save(directory / "train.offsets.npy", offsets[::-1]), "increasing offsets"),
        ("train.counts.npy", lambda: np.save(directory / "train.counts.npy", np.zeros(259, np.int64)), "counts"),
        ("train.*", lambda: (directory / "train.offsets.npy").write_text("not numpy"), "unreadable (ValueError"),
        ("meta.json", lambda: (directory / "meta.json").write_text("{"), "unreadable (JSONDecodeError"),
    ]
    for name, change, problem in cases:
        message = _damage_message(directory, lambda: _open(folder, tmp_path), change)
        assert message.startswith(f"{directory / name}: ") and problem in message, (name, problem, message)
        assert message.endswith(f"; the token cache entry is damaged: delete {directory} to rebuild it"), message
    assert _open(folder, tmp_path).hit  # every file put back: it opens again


def _config(tmp_path, corpus):
    return resolve(
        "llama-tiny",
        [
            "train.batch_size=8",
            "train.seq_len=32",
            "train.total_steps=2",
            "train.warmup_steps=1",
            "run.eval_interval=-1",
            f"run.dir={tmp_path / 'run'}",
            f"data.path={corpus}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )


def test_the_trainer_reports_a_bad_corpus_and_a_damaged_cache_in_one_line(tmp_path):
    """zoo.train.setup.prepare turns both into a UserError naming data.path and the file."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "bad.jsonl").write_bytes(_jsonl([*GOOD, b'{"text": "caf\xe9"}']))
    config = _config(tmp_path, folder)
    with pytest.raises(UserError) as caught:
        prepare(config, devices=jax.devices("cpu")[:1])
    message = str(caught.value)
    assert message.startswith(f"data.path: {folder / 'bad.jsonl'}:101: not UTF-8") and "\n" not in message
    # A BPE tokenizer reads the corpus first, while it trains: still the data's error, not data.tokenizer's.
    with pytest.raises(UserError, match=rf"^data.path: {re.escape(str(folder / 'bad.jsonl'))}:101: not UTF-8"):
        prepare(config.replace(data=config.data.replace(tokenizer="bpe", bpe_vocab_size=300)), jax.devices("cpu")[:1])

    (folder / "bad.jsonl").write_bytes(_jsonl(GOOD * 20))
    [(_, _, corpus)] = data_setup.open_sources(config.data, tk.ByteTokenizer(), progress=False)  # what prepare opens
    tokens = np.fromfile(corpus.directory / "train.tokens", np.uint16)
    tokens[100:200] = 0
    tokens.tofile(corpus.directory / "train.tokens")
    with pytest.raises(UserError) as caught:
        prepare(config, devices=jax.devices("cpu")[:1])
    message = str(caught.value)
    assert message.startswith(f"data.path: {corpus.directory / 'train.tokens'}: ") and "\n" not in message
    assert message.endswith(f"delete {corpus.directory} to rebuild it")
