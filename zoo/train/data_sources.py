"""Where documents come from: the input formats, streamed one document at a time, and what identifies a corpus.

    for text in iter_documents("docs.jsonl.zst"):    # never the whole corpus in memory
        ...
    parse_sources(("a.jsonl:0.7", "b/:0.3"))         # -> [("a.jsonl", 0.7), ("b/", 0.3)]

Formats, by file name:

  *.jsonl, *.jsonl.gz, *.jsonl.zst   one JSON object per line, the text in `text_field` (zstandard for .zst)
  *.parquet                          the string column `text_field` (pyarrow: pip install -e ".[parquet]")
  anything else                      a UTF-8 text file: one document
  a folder                           every non-hidden file below it, recursively, in sorted order, each by its
                                     name as above; a file that is not UTF-8 and holds a NUL byte in its first
                                     8000 bytes (git's test for a binary file) is skipped

Nothing is dropped silently: a file is read to its end or the read fails with a ValueError naming the file and
the line (JSONL, text), row (Parquet) or byte: bad UTF-8, a line that is not JSON, a missing or non-string text
field, a compressed stream that is corrupt or cut short (a .zst must end at the end of a frame, a .gz must pass
gzip's length and CRC checks), the same whether the file was named alone or found in a folder.

`corpus_files(path)` names a corpus and lists its files for the token cache (zoo/train/data_cache.py, which
keys entries by their contents; the default corpus: this interpreter's version and its standard library files).

The train/validation split (`assign_splits`) is streamed too: a document goes to validation when a hash of its
text says so (zoo/train/data.py states the rule); only the last document is held back, for the few-documents
fallback.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import math
import os
import sys
import sysconfig
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


class CorpusError(ValueError):
    """A corpus file that cannot be read; the message names the file and the line (or row, or byte)."""


JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")


# --- the default corpus ----------------------------------------------------------------------------------------


def _stdlib_files() -> tuple[str, list[str]]:
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]  # prune: never walk site-packages
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        files += [
            f if rel == "." else f"{rel}/{f}"
            for f in filenames
            if f.endswith(".py") and not f.startswith("_sysconfigdata")
        ]
    return root, sorted(files)


def iter_stdlib_documents() -> Iterator[str]:
    """The default corpus: the interpreter's stdlib sources (~730 files, ~12 MB), then the pydoc topics."""
    root, files = _stdlib_files()
    for rel in files:
        try:
            text = Path(root, rel).read_bytes().decode("utf-8")
        except UnicodeDecodeError:  # a legacy-encoded source: not text we want to learn from
            continue
        if text:
            yield text
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    yield from (topics[k] for k in sorted(topics))


# --- reading -----------------------------------------------------------------------------------------------------


class _Counter(io.RawIOBase):
    """A binary file that adds the bytes read from disk to `progress` (compressed bytes for .gz/.zst)."""

    def __init__(self, f, progress):
        self.f, self.progress = f, progress

    def readable(self):
        return True

    def readinto(self, buffer):
        n = self.f.readinto(buffer)
        if self.progress is not None:
            self.progress.update(n)
        return n


class _BadStream(Exception):
    """A compressed stream that is corrupt or ends early (the reader adds the file and the line)."""


def _chunks(path: Path, progress) -> Iterator[bytes]:
    """The bytes of a JSONL file, decompressed, in pieces; _BadStream unless a compressed stream is whole."""
    with open(path, "rb") as f:
        raw = io.BufferedReader(_Counter(f, progress), 1 << 20)
        if path.name.endswith(".gz"):
            try:  # gzip checks each member's CRC and length, and raises EOFError when the last one is cut
                with gzip.GzipFile(fileobj=raw) as stream:
                    yield from iter(lambda: stream.read(1 << 20), b"")
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise _BadStream(e) from None
        elif path.name.endswith(".zst"):
            yield from _zstd_chunks(raw)
        else:
            yield from iter(lambda: raw.read(1 << 20), b"")


def _zstd_chunks(raw) -> Iterator[bytes]:
    """Every frame of a zstandard stream, decompressed. A stream cut at a block boundary decodes cleanly up to
    the cut, so the frame must be seen to end (`eof`): input that stops inside a frame is _BadStream."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    frame, inside = dctx.decompressobj(), False
    try:
        while data := raw.read(1 << 18):  # compressed input; bounds what one decompress call returns
            while data:
                yield frame.decompress(data)
                data, inside = b"", True
                if frame.eof:  # the next frame (if any) starts in what this one left over
                    data, frame, inside = frame.unused_data, dctx.decompressobj(), False
    except zstandard.ZstdError as e:
        raise _BadStream(e) from None
    if inside:
        raise _BadStream("the input ends inside a zstandard frame")


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a byte stream, without their b"\\n"; only b"\\n" ends a line (JSON Lines: not U+2028,
    which JSON strings may hold)."""
    head: list[bytes] = []  # the start of a line that spans chunks
    for chunk in chunks:
        *lines, tail = chunk.split(b"\n")
        if lines:
            lines[0] = b"".join([*head, lines[0]])
            head = []
            yield from lines
        if tail:
            head.append(tail)
    if head:
        yield b"".join(head)


def _read_jsonl(path: Path, text_field: str, progress) -> Iterator[str]:
    n, offset = 0, 0  # the line, and the byte where it starts (in the decompressed text)
    try:
        for n, line in enumerate(_lines(_chunks(path, progress)), 1):
            if line.strip():
                yield from _record_text(path, n, offset, line, text_field)
            offset += len(line) + 1
    except _BadStream as e:
        raise CorpusError(
            f"{path}: the compressed stream is corrupt or truncated after line {n} (byte {offset} of the "
            f"decompressed text): {e}"
        ) from None


def _record_text(path: Path, n: int, offset: int, line: bytes, text_field: str) -> Iterator[str]:
    """The text of the JSON object on line `n` of `path` (none when empty); ValueError naming the line."""
    bom = 3 if n == 1 and line.startswith(codecs.BOM_UTF8) else 0  # a byte order mark may open the file
    try:
        text = line[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        text = "the decompressed text" if path.name.endswith((".gz", ".zst")) else "the file"
        raise CorpusError(f"{path}:{n}: not UTF-8 ({e.reason} at byte {offset + bom + e.start} of {text})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}:{n}: not JSON ({e.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise CorpusError(f"{path}:{n}: expected a JSON object with a string field {text_field!r}")
    value = record[text_field]
    if not value.isascii():  # a "\ud800" escape decodes to a lone surrogate, which no UTF-8 encoder takes
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise CorpusError(f"{path}:{n}: {text_field!r} holds a lone surrogate ({e.reason})") from None
    if value:
        yield value


def _read_parquet(path: Path, text_field: str, progress) -> Iterator[str]:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f'{path}: reading Parquet needs pyarrow: pip install -e ".[parquet]"') from None
    row = 0
    try:
        file = pq.ParquetFile(path)
        if text_field not in file.schema_arrow.names:
            raise CorpusError(f"{path}: no column {text_field!r} (columns: {', '.join(file.schema_arrow.names)})")
        for batch in file.iter_batches(columns=[text_field], batch_size=1024):
            for text in batch.column(0).to_pylist():
                row += 1
                if not isinstance(text, str):
                    raise CorpusError(f"{path}: row {row}: {text_field!r} holds {text!r}, not a string")
                if text:
                    yield text
    except pyarrow.ArrowException as e:  # a truncated or corrupt file
        raise CorpusError(f"{path}: unreadable Parquet after row {row} ({' '.join(str(e).split())})") from None
    if progress is not None:
        progress.update(path.stat().st_size)


def _read_text(path: Path, progress, in_folder: bool) -> Iterator[str]:
    data = path.read_bytes()
    if progress is not None:
        progress.update(len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if in_folder and b"\0" in data[:8000]:  # git's test for a binary file: skipped in a folder walk
            return
        line = data.count(b"\n", 0, e.start) + 1
        raise CorpusError(f"{path}:{line}: not UTF-8 ({e.reason} at byte {e.start})") from None
    if text:
        yield text


def _read_file(path: Path, text_field: str, progress, in_folder: bool) -> Iterator[str]:
    if path.name.endswith(JSONL_SUFFIXES):
        yield from _read_jsonl(path, text_field, progress)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path, text_field, progress)
    else:
        yield from _read_text(path, progress, in_folder)


def _files(path: Path) -> list[Path]:
    """The files a path stands for: itself, or every non-hidden file below a folder in sorted order."""
    if not path.exists():
        raise FileNotFoundError(f"data path does not exist: {path}")
    if not path.is_dir():
        return [path]
    rels = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    return [path / rel for rel in rels if not any(part.startswith(".") for part in rel.split("/"))]


def iter_documents(path: str | os.PathLike | None, text_field: str = "text", progress=None) -> Iterator[str]:
    """The documents of `path` in order (None: the default corpus), one at a time; empty ones are dropped.
    `progress`, when given, is a tqdm bar counting the bytes read from disk. Anything unreadable is a ValueError
    naming the file and the line (or row) where reading stopped: never a silent early end."""
    if path is None:
        yield from iter_stdlib_documents()
        return
    path = Path(path)
    for file in _files(path):
        yield from _read_file(file, text_field, progress, in_folder=path.is_dir())


def corpus_files(path: str | os.PathLike | None) -> tuple[dict, list[tuple[str, Path]]]:
    """What names the corpus at `path` (None: the default corpus), and its files in reading order, each with
    the name the token cache's key records (zoo/train/data_cache.py hashes their contents)."""
    if path is None:
        root, files = _stdlib_files()
        import pydoc_data.topics

        paths = [Path(root, rel) for rel in files] + [Path(pydoc_data.topics.__file__)]
        return {"corpus": "stdlib", "python": sys.version, "root": root}, [(str(f), f) for f in paths]
    path = Path(path).resolve()
    return {"corpus": str(path)}, [
        (f.relative_to(path).as_posix() if path.is_dir() else f.name, f) for f in _files(path)
    ]


# --- the split -----------------------------------------------------------------------------------------------------


def is_validation(text: str, validation_percent: int) -> bool:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little") % 100 < validation_percent


def assign_splits(docs: Iterable[str], validation_percent: int) -> Iterator[tuple[str, str]]:
    """("train" | "validation", text) for each document, streamed, by the content-hash rule. When that would
    leave a split empty, the last document is cut at a line near the corpus' last `validation_percent` %:
    ("swap", "") first if every earlier document went to validation (they all become train), then
    ("train", head) and ("validation", tail)."""
    counts, chars, last = {"train": 0, "validation": 0}, 0, None
    for text in docs:
        if last is not None:
            split = "validation" if is_validation(last, validation_percent) else "train"
            counts[split] += 1
            yield split, last
        last, chars = text, chars + len(text)
    if last is None:
        return
    split = "validation" if is_validation(last, validation_percent) else "train"
    counts[split] += 1
    if validation_percent == 0 or (counts["train"] and counts["validation"]):
        yield split, last
        return
    # Too few documents to split by document: cut the last one at a line near the corpus' last N%.
    need = chars * validation_percent // 100 or 1
    cut = max(len(last) - need, 0)
    newline = last.rfind("\n", max(cut - need, 0), cut)  # prefer a line boundary just before the cut
    cut = newline + 1 if newline >= 0 else cut
    if counts["train"] == 0 and counts["validation"] > 1:
        yield "swap", ""
    if last[:cut]:
        yield "train", last[:cut]
    yield "validation", last[cut:]


# --- mixtures ------------------------------------------------------------------------------------------------------


def parse_sources(items: Iterable[str]) -> list[tuple[str, float]]:
    """("a.jsonl:0.7", "b/:0.3") -> [("a.jsonl", 0.7), ("b/", 0.3)]; a source without ":weight" weighs 1.
    Raises ValueError naming the bad item."""
    out = []
    for item in items:
        path, sep, weight = item.rpartition(":")
        if not sep or not path:
            path, weight = item, "1"
        try:
            value = float(weight)
        except ValueError:
            path, value = item, 1.0  # a ':' that is part of the path
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{item!r}: the weight must be a positive number, got {weight!r}")
        if not path:
            raise ValueError(f"{item!r}: expected PATH:WEIGHT")
        out.append((path, value))
    return out
