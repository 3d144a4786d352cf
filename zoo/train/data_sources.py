"""Where documents come from: the input formats, streamed one document at a time, and what identifies a corpus.

    for text in iter_documents("docs.jsonl.zst"):    # never the whole corpus in memory
        ...
    parse_sources(("a.jsonl:0.7", "b/:0.3"))         # -> [("a.jsonl", 0.7), ("b/", 0.3)]

Formats, by file name:

  *.jsonl, *.jsonl.gz, *.jsonl.zst   one JSON object per line, the text in `text_field` (zstandard for .zst)
  *.parquet                          the string column `text_field` (pyarrow: pip install -e ".[parquet]")
  anything else                      a UTF-8 text file: one document
  a folder                           every non-hidden file below it, recursively, in sorted order; files that
                                     are not UTF-8 (binaries) are skipped

`fingerprint(path)` names a corpus for the token cache (zoo/train/data_cache.py): the resolved path and every
file's relative path, size and modification time, so an edited, added or removed file gives a new cache entry
(the default corpus: this interpreter's version and its standard library files).

The train/validation split (`assign_splits`) is streamed too: a document goes to validation when a hash of its
text says so (zoo/train/data.py states the rule); only the last document is held back, for the few-documents
fallback.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
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


def _jsonl_lines(path: Path, progress) -> Iterator[bytes]:
    raw = _Counter(open(path, "rb"), progress)  # noqa: SIM115  (closed below)
    stream: io.RawIOBase | io.BufferedIOBase | BinaryIO  # the raw file, gzip's or zstandard's reader
    try:
        if path.name.endswith(".gz"):
            stream = gzip.GzipFile(fileobj=io.BufferedReader(raw, 1 << 20))
        elif path.name.endswith(".zst"):
            import zstandard

            stream = zstandard.ZstdDecompressor().stream_reader(io.BufferedReader(raw, 1 << 20))
        else:
            stream = raw
        yield from io.BufferedReader(stream, 1 << 20)
    finally:
        raw.f.close()


def _read_jsonl(path: Path, text_field: str, progress) -> Iterator[str]:
    # Lines end at b"\n" only (not U+2028, which JSON strings may hold), as JSON Lines says.
    for n, line in enumerate(_jsonl_lines(path, progress), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise ValueError(f"{path}:{n}: expected a JSON object with a string field {text_field!r}")
        if record[text_field]:
            yield record[text_field]


def _read_parquet(path: Path, text_field: str, progress) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f'{path}: reading Parquet needs pyarrow: pip install -e ".[parquet]"') from None
    file = pq.ParquetFile(path)
    if text_field not in file.schema_arrow.names:
        raise ValueError(f"{path}: no column {text_field!r} (columns: {', '.join(file.schema_arrow.names)})")
    for batch in file.iter_batches(columns=[text_field], batch_size=1024):
        yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str) and t)
    if progress is not None:
        progress.update(path.stat().st_size)


def _read_file(path: Path, text_field: str, progress) -> Iterator[str]:
    if path.name.endswith(JSONL_SUFFIXES):
        yield from _read_jsonl(path, text_field, progress)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path, text_field, progress)
    else:
        data = path.read_bytes()
        if progress is not None:
            progress.update(len(data))
        text = data.decode("utf-8")
        if text:
            yield text


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
    `progress`, when given, is a tqdm bar counting the bytes read from disk."""
    if path is None:
        yield from iter_stdlib_documents()
        return
    path = Path(path)
    files = _files(path)
    for file in files:
        if not path.is_dir():
            try:
                yield from _read_file(file, text_field, progress)
            except UnicodeDecodeError as e:
                raise ValueError(f"{file} is not UTF-8 text ({e.reason} at byte {e.start})") from None
            continue
        try:
            yield from _read_file(file, text_field, progress)
        except UnicodeDecodeError:
            continue  # binaries and other non-text files in a folder


def fingerprint(path: str | os.PathLike | None) -> dict:
    """What identifies the corpus at `path` for the cache: every file's relative path, size and mtime."""
    if path is None:
        root, files = _stdlib_files()
        import pydoc_data.topics

        paths = [Path(root, rel) for rel in files] + [Path(pydoc_data.topics.__file__)]
        return {"corpus": "stdlib", "python": sys.version, "root": root, "files": [[str(f), *_stat(f)] for f in paths]}
    path = Path(path).resolve()
    return {
        "corpus": str(path),
        "files": [[f.relative_to(path).as_posix() if path.is_dir() else f.name, *_stat(f)] for f in _files(path)],
    }


def _stat(file: Path) -> list[int]:
    st = file.stat()
    return [st.st_size, st.st_mtime_ns]


def corpus_bytes(fp: dict) -> int:
    """Bytes on disk of a fingerprinted corpus (the progress bar's total)."""
    return sum(f[1] for f in fp["files"])


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
