"""The tokenized corpus cache: tokenize once, then open a memory map on every later start and resume.

    corpus = open_tokens("docs.jsonl.zst", tokenizer)     # builds the cache entry on the first call
    rows = data.pack(corpus.train.tokens, seq_len + 1, seq_len)   # windows into the memmap, nothing read yet

Layout: `<cache_dir>/<name>-<key>/` holds, per split, `<split>.tokens` (the flat token stream, uint16 when the
vocab fits, else uint32: each document's ids followed by EOS), `<split>.offsets.npy` (int64 [documents + 1],
where each document starts), `train.counts.npy` (int64 token frequencies, for the unigram entropy), `meta.json`
(what the entry was built from, token and document counts, each token file's CRC-32) and `stamps.json` (below):
raw numpy, nothing pickled. `key` hashes the corpus (its location, every file's name, size and sha256), the
tokenizer (its saved files), the split settings and FORMAT_VERSION. An entry is built in a temporary directory
and renamed into place when complete, so a killed build leaves no entry that looks whole.

Why whole-file hashes: a (path, size, mtime) key reused stale tokens after a same-size edit whose mtime was set
back; a hash of sampled blocks misses edits between its samples. Hashing reads the corpus once (sha256, ~0.6
GB/s), little next to tokenizing it, and an entry's stamps.json keeps each file's hash with its stamp (size,
mtime, ctime, inode): an unchanged corpus is only stat()ed; a file touched or rewritten alike is hashed again
and finds its entry. Residual risk: content changed with the stamp kept keeps its old hash; the kernel sets ctime
to now on every write, truncate, chmod or utime and nothing sets it back, so that takes a clock set backwards, a
write to the raw device, or a filesystem without a real ctime (some FUSE/object-store mounts: an mtime key's risk).

Opening checks an entry (a pass over its tokens: ~25 ms for the default corpus' 12M byte ids): file sizes and
offsets against meta.json's counts, the EOS ending every document, ids below the tokenizer's vocab, and each
token file's CRC-32 (a zeroed region anywhere); ValueError naming the file and the directory to delete.

Why numpy memory maps and not grain + ArrayRecord: a packed row is a window into one flat token array, so the
random-access "dataset" is an mmap and a stride; the page cache caches, a batch reads only its rows' pages, and
memory stays flat however large the corpus. grain (and ArrayRecord) would add a framework for two arrays and an index.

Building reads the documents once (zoo/train/data_sources.py) and tokenizes chunks of them on a thread pool (HF
tokenizers release the GIL; the byte tokenizer is a numpy view), with a tqdm bar over the bytes read on a tty.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import glob
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from zoo.train import data_sources as sources_lib

FORMAT_VERSION = 2  # 2: keyed by content hashes; meta.json holds the token files' CRC-32s
CACHE_ENV = "ZOO_DATA_CACHE"
SPLITS = ("train", "validation")
_CHUNK_CHARS, _CHUNK_DOCS = 1 << 18, 1024  # documents per tokenizer call: ~256 KB of text or 1024 documents


def cache_root(setting: str | os.PathLike | None = None) -> Path:
    """data.cache_dir, else $ZOO_DATA_CACHE, else ~/.cache/zoo/data."""
    if setting is not None:
        return Path(setting).expanduser()
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "zoo" / "data").expanduser()


def tokenizer_identity(tokenizer) -> str:
    """sha256 of the files `tokenizer.save` writes: equal for tokenizers that encode alike."""
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save(directory)
        digest = hashlib.sha256()
        for file in sorted(Path(directory).rglob("*")):
            if file.is_file():
                digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class TokenSplit:
    """One split of a cached corpus: `tokens` (a read-only memmap) and document `offsets`."""

    tokens: np.ndarray
    offsets: np.ndarray
    bytes: int

    @property
    def documents(self) -> int:
        return len(self.offsets) - 1


@dataclasses.dataclass(frozen=True)
class TokenCorpus:
    directory: Path
    train: TokenSplit
    validation: TokenSplit
    counts: np.ndarray
    """int64 [vocab]: how often each id occurs in the train split."""
    hit: bool
    """True when the entry was already there (nothing was tokenized)."""
    seconds: float
    """Time to open (a hit) or build the entry."""


def _known_hashes(root: Path, name: str) -> dict:
    """(file, stamp) -> sha256, from the stamps.json of every entry of a corpus called `name`."""
    known = {}
    for entry in root.glob(f"{glob.escape(name)}-*/stamps.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):  # unreadable: its files are hashed again
            known.update({(file, tuple(stamp)): sha for file, stamp, sha in json.loads(entry.read_text())})
    return known


def fingerprint(path, known: dict) -> tuple[dict, dict]:
    """The corpus at `path` (None: the default corpus) as the key records it (where it is, and every file's
    name, size and sha256), and its files' {(file, stamp): sha256}; a file whose stamp is `known` is not read."""
    identity, files = sources_lib.corpus_files(path)
    stamped, listed = {}, []
    for name, file in files:
        st = file.stat()
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)  # before hashing: a change during it shows
        if (sha := known.get((str(file), stamp))) is None:
            with open(file, "rb") as f:
                sha = hashlib.file_digest(f, "sha256").hexdigest()
        stamped[str(file), stamp] = sha
        listed.append([name, st.st_size, sha])
    return {**identity, "files": listed}, stamped


def open_tokens(
    path: str | os.PathLike | None,
    tokenizer,
    *,
    text_field: str = "text",
    validation_percent: int = 2,
    max_documents: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> TokenCorpus:
    """The cached tokens of the corpus at `path` (None: the default corpus), built first if missing. ValueError
    naming the file for an unreadable corpus or a damaged entry."""
    t0 = time.perf_counter()
    root = cache_root(cache_dir)
    name = "stdlib" if path is None else Path(path).resolve().name.replace(" ", "_") or "corpus"
    known = _known_hashes(root, name)
    corpus, stamped = fingerprint(path, known)
    key = {
        "format": FORMAT_VERSION,
        "corpus": corpus,
        "text_field": text_field if path is not None else None,
        "tokenizer": tokenizer_identity(tokenizer),
        "validation_percent": validation_percent,
        "max_documents": max_documents,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    directory = root / f"{name}-{digest}"
    hit = (directory / "meta.json").exists()
    if not hit:
        _build(directory, path, key, tokenizer, text_field, validation_percent, max_documents, progress)
    if not hit or stamped.keys() - known.keys():  # a new entry, or files hashed again: remember their stamps
        tmp = directory / f"stamps.json.{os.getpid()}.tmp"  # written whole, then renamed: never read half-written
        with contextlib.suppress(OSError):  # a read-only cache: the stamps only save hashing next time
            tmp.write_text(json.dumps([[file, stamp, sha] for (file, stamp), sha in stamped.items()]))
            os.replace(tmp, directory / "stamps.json")
    return _open(directory, tokenizer.vocab_size, hit, time.perf_counter() - t0)


class DamagedEntry(ValueError):
    """A cache entry that fails its checks on open: the message names the file and the directory to delete."""

    def __init__(self, file: Path, problem: str):
        super().__init__(f"{file}: {problem}; the token cache entry is damaged: delete {file.parent} to rebuild it")


def _map(file: Path, dtype, n: int) -> np.ndarray:
    return np.memmap(file, dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)  # numpy maps no empty file


def _open(directory: Path, vocab: int, hit: bool, seconds: float) -> TokenCorpus:
    """The entry in `directory`, checked (see the module docstring) against meta.json and a vocab of `vocab`."""
    file = directory / "meta.json"  # what is being read, for the message when it cannot be
    try:
        meta = json.loads(file.read_text())
        splits = {}
        for split in SPLITS:
            file = directory / f"{split}.*"
            splits[split] = _open_split(directory, split, meta, vocab)
        file = directory / "train.counts.npy"
        counts = np.load(file, allow_pickle=False)
    except DamagedEntry:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:  # a missing or unreadable file or meta.json field
        raise DamagedEntry(file, f"unreadable ({type(e).__name__}: {e})") from None
    if counts.shape != (vocab,) or counts.sum() != len(splits["train"].tokens):
        raise DamagedEntry(directory / "train.counts.npy", f"not {vocab} counts adding up to the train tokens")
    return TokenCorpus(directory, splits["train"], splits["validation"], counts, hit, seconds)


def _open_split(directory: Path, split: str, meta: dict, vocab: int) -> TokenSplit:
    dtype, eos, n, documents = np.dtype(meta["dtype"]), meta["eos_id"], meta[split]["tokens"], meta[split]["documents"]
    file = directory / f"{split}.offsets.npy"
    offsets = np.load(file, mmap_mode="r", allow_pickle=False)
    if offsets.shape != (documents + 1,) or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 1):
        raise DamagedEntry(file, f"not {documents + 1} increasing offsets from 0 to the {n} tokens of meta.json")
    file = directory / f"{split}.tokens"
    if (size := file.stat().st_size) != n * dtype.itemsize:
        raise DamagedEntry(file, f"{size} bytes, not the {n} {dtype.name} tokens of meta.json")
    tokens = _map(file, dtype, n)
    if len(bad := np.flatnonzero(tokens[offsets[1:] - 1] != eos)):
        raise DamagedEntry(file, f"document {bad[0]} does not end in EOS (id {eos})")
    if n and (top := int(tokens.max())) >= vocab:
        raise DamagedEntry(file, f"id {top} at token {np.argmax(tokens >= vocab)} is outside the vocab of {vocab}")
    if zlib.crc32(tokens.data) != meta[split]["crc32"]:
        raise DamagedEntry(file, "its CRC-32 is not the one recorded when it was built")
    return TokenSplit(tokens, offsets, meta[split]["bytes"])


class _Writer:
    """Appends one split's documents to its token file; keeps offsets, bytes and (train) token counts."""

    def __init__(self, directory: Path, split: str, dtype, eos: int, vocab: int):
        self.file = open(directory / f"{split}.tokens", "wb")  # noqa: SIM115  (closed in close())
        self.dtype, self.eos, self.offsets, self.bytes = dtype, np.array([eos], dtype), [0], 0
        self.counts = np.zeros(vocab, np.int64)

    def write(self, ids: np.ndarray, nbytes: int) -> None:
        self.file.write(ids.astype(self.dtype).tobytes())
        self.file.write(self.eos.tobytes())
        self.offsets.append(self.offsets[-1] + len(ids) + 1)
        self.bytes += nbytes

    def close(self) -> None:
        self.file.close()


def _encode(tokenizer, chunk: list[tuple[str, str]], vocab: int):
    """[(split, ids, UTF-8 bytes)] per document of `chunk`, and the id counts of its train documents (EOS
    included): runs on a worker thread."""
    ids = tokenizer.encode_batch([text for _, text in chunk])
    docs = [(split, a, len(text.encode("utf-8"))) for (split, text), a in zip(chunk, ids, strict=True)]
    train = [a for split, a, _ in docs if split == "train"]
    counts = np.bincount(np.concatenate([*train, np.zeros(0, np.int64)]).astype(np.int64), minlength=vocab)
    counts[tokenizer.eos_id] += len(train)
    return docs, counts


def _build(
    directory: Path,
    path,
    key: dict,
    tokenizer,
    text_field: str,
    validation_percent: int,
    max_documents: int | None,
    progress: bool,
) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    writers: dict[str, _Writer] = {}
    try:
        vocab = tokenizer.vocab_size
        dtype = np.dtype(np.uint16 if vocab <= 1 << 16 else np.uint32)
        writers = {s: _Writer(tmp, s, dtype, tokenizer.eos_id, vocab) for s in SPLITS}
        total = sum(size for _, size, _ in key["corpus"]["files"])
        bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=f"tokenizing {directory.name}",
            disable=None if progress else True,
            leave=False,
        )
        docs = sources_lib.iter_documents(path, text_field, progress=bar)
        docs = itertools.islice(docs, max_documents) if max_documents is not None else docs
        workers = os.cpu_count() or 1
        with bar, concurrent.futures.ThreadPoolExecutor(workers) as pool:
            pending: collections.deque = collections.deque()

            def drain(limit: int) -> None:
                while len(pending) > limit:
                    docs, counts = pending.popleft().result()
                    for split, ids, nbytes in docs:
                        writers[split].write(ids, nbytes)
                    writers["train"].counts += counts[:vocab]

            chunk: list[tuple[str, str]] = []  # (split, text)
            chars = 0
            for split, text in sources_lib.assign_splits(docs, validation_percent):
                if split == "swap":  # every document so far was validation: they become train
                    if chunk:
                        pending.append(pool.submit(_encode, tokenizer, chunk, vocab))
                    chunk, chars = [], 0
                    drain(0)
                    _swap(tmp, writers)
                    continue
                chunk.append((split, text))
                chars += len(text)
                if chars >= _CHUNK_CHARS or len(chunk) >= _CHUNK_DOCS:
                    pending.append(pool.submit(_encode, tokenizer, chunk, vocab))
                    chunk, chars = [], 0
                    drain(workers)
            if chunk:
                pending.append(pool.submit(_encode, tokenizer, chunk, vocab))
            drain(0)
        for writer in writers.values():
            writer.close()
        if writers["train"].offsets[-1] == 0:
            raise ValueError(
                f"no documents in {path}: expected non-empty UTF-8 text, JSONL or Parquet with a {text_field!r} field"
            )
        meta = {"key": key, "dtype": dtype.name, "eos_id": tokenizer.eos_id}
        for split, w in writers.items():
            np.save(tmp / f"{split}.offsets.npy", np.asarray(w.offsets, np.int64), allow_pickle=False)
            meta[split] = {"documents": len(w.offsets) - 1, "tokens": int(w.offsets[-1]), "bytes": w.bytes}
            meta[split]["crc32"] = zlib.crc32(_map(tmp / f"{split}.tokens", dtype, meta[split]["tokens"]).data)
        np.save(tmp / "train.counts.npy", writers["train"].counts, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
        try:
            os.rename(tmp, directory)
        except OSError:  # another process finished the same entry first: use theirs
            if not (directory / "meta.json").exists():
                raise
    finally:
        for writer in writers.values():
            writer.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _swap(tmp: Path, writers: dict) -> None:
    """Exchange the train and validation writers' contents (files, offsets, bytes); counts are recomputed."""
    train, val = writers["train"], writers["validation"]
    for w in (train, val):
        w.file.close()
    os.replace(tmp / "train.tokens", tmp / "swap.tokens")
    os.replace(tmp / "validation.tokens", tmp / "train.tokens")
    os.replace(tmp / "swap.tokens", tmp / "validation.tokens")
    train.offsets, val.offsets = val.offsets, train.offsets
    train.bytes, val.bytes = val.bytes, train.bytes
    train.file, val.file = open(tmp / "train.tokens", "ab"), open(tmp / "validation.tokens", "ab")  # noqa: SIM115
    tokens = np.fromfile(tmp / "train.tokens", train.dtype)  # only in a corpus of a few documents
    train.counts = np.bincount(tokens, minlength=len(train.counts)).astype(np.int64)
    val.counts[:] = 0


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy (nats) of a token frequency table."""
    counts = np.asarray(counts, np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
