"""Corpus -> token stream -> packed rows -> deterministic, resumable batches.

Flow::

    corpus = load_corpus(path)                       # None: the embedded default corpus
    tok = make_tokenizer("byte" | "bpe" | path, train_texts=corpus.train)
    rows = pack(tokenize_documents(tok, corpus.train), length=seq_len + 1, stride=seq_len)
    stream = TrainStream(rows, batch_size, seed)     # next(stream): int32 [batch, seq_len + 1]
    inputs, targets = batch[:, :-1], batch[:, 1:]     # causal LM: each [batch, seq_len]

Default corpus, offline and deterministic: the running interpreter's standard library (`*.py` under
`sysconfig.get_paths()["stdlib"]`, without test directories, site-packages, or the machine-specific
`_sysconfigdata*`) in sorted relative-path order, then the `pydoc_data.topics` texts sorted by key.

Split: a document goes to validation when
`int.from_bytes(sha1(text.encode()).digest()[:8], "little") % 100 < validation_percent` (default 2): a hash of
the content, not the path, so duplicates share a split. If that leaves a split empty (a corpus of a few
documents, e.g. one text file), the last ~validation_percent % of the last document, cut at a line boundary,
becomes the validation document instead.

Packing: each document is followed by EOS and all are concatenated; rows are windows of `length` tokens taken
every `stride` tokens. Causal LM uses length seq_len + 1 at stride seq_len, so consecutive rows overlap by one
token and every token is a target exactly once. T5 uses stride == length. Attention is not masked at document
boundaries; EOS is the only separator (as in GPT-2).

Batches: numpy, not grain: the whole train set is one in-memory int32 array, a batch is one fancy index of a
per-epoch permutation (numpy Generator seeded with (seed, epoch)), and the resume state is a few ints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from zoo.train.tokenizer import Tokenizer

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Documents (whole texts) of each split."""

    train: list[str]
    validation: list[str]

    def stats(self) -> dict[str, int]:
        count = lambda docs: sum(len(d.encode("utf-8")) for d in docs)  # noqa: E731
        return {"train_documents": len(self.train), "validation_documents": len(self.validation),
                "train_bytes": count(self.train), "validation_bytes": count(self.validation)}


# --- reading -----------------------------------------------------------------------------------------------


def stdlib_documents() -> list[str]:
    """The default corpus: the interpreter's stdlib sources (~730 files, ~12 MB) + pydoc topics."""
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]  # prune: never walk site-packages
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        files += [f if rel == "." else f"{rel}/{f}" for f in filenames
                  if f.endswith(".py") and not f.startswith("_sysconfigdata")]
    docs = []
    for rel in sorted(files):
        try:
            docs.append(Path(root, rel).read_bytes().decode("utf-8"))
        except UnicodeDecodeError:  # a legacy-encoded source: not text we want to learn from
            continue
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return [d for d in docs if d] + [topics[k] for k in sorted(topics)]


def read_documents(path: str | os.PathLike, text_field: str = "text") -> list[str]:
    """Documents under `path`: a text file (one document), a `.jsonl` file (one per line, `text_field`), or a
    folder: every non-hidden file below it, recursively in sorted order, that decodes as UTF-8 (`.jsonl`
    files read as JSONL). Empty documents are dropped.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path does not exist: {path}")
    if path.is_dir():
        files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        docs = []
        for rel in files:
            if any(part.startswith(".") for part in rel.split("/")):
                continue  # .git, editor swap files, ...
            try:
                docs += _read_file(path / rel, text_field)
            except UnicodeDecodeError:
                continue  # binaries and other non-text files
        return docs
    try:
        return _read_file(path, text_field)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _read_file(path: Path, text_field: str) -> list[str]:
    text = path.read_bytes().decode("utf-8")
    if path.suffix != ".jsonl":
        return [text] if text else []
    docs = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise ValueError(f"{path}:{n}: expected a JSON object with a string field {text_field!r}")
        if record[text_field]:
            docs.append(record[text_field])
    return docs


def split_documents(docs: Sequence[str], validation_percent: int = 2) -> Corpus:
    """Deterministic train/validation split by a stable content hash (see the module docstring)."""
    is_val = [int.from_bytes(hashlib.sha1(d.encode("utf-8")).digest()[:8], "little") % 100 < validation_percent
              for d in docs]
    train = [d for d, v in zip(docs, is_val, strict=True) if not v]
    validation = [d for d, v in zip(docs, is_val, strict=True) if v]
    if validation_percent > 0 and (not train or not validation) and docs:
        # Too few documents to split by document: cut the last one at a line near the corpus' last N%.
        need = sum(map(len, docs)) * validation_percent // 100 or 1
        last = docs[-1]
        cut = max(len(last) - need, 0)
        newline = last.rfind("\n", max(cut - need, 0), cut)  # prefer a line boundary just before the cut
        cut = newline + 1 if newline >= 0 else cut
        train, validation = [*docs[:-1], last[:cut]], [last[cut:]]
        train = [d for d in train if d]
    return Corpus(train, validation)


def load_corpus(path: str | os.PathLike | None = None, *, text_field: str = "text",
                validation_percent: int = 2) -> Corpus:
    """Read and split a corpus; `path=None` is the embedded default corpus."""
    docs = stdlib_documents() if path is None else read_documents(path, text_field)
    if not docs:
        raise ValueError(f"no documents in {path}: expected non-empty UTF-8 text files or JSONL "
                         f"with a {text_field!r} field")
    corpus = split_documents(docs, validation_percent)
    if not corpus.train:
        raise ValueError(f"the train split of {path} is empty")
    return corpus


# --- tokens --------------------------------------------------------------------------------------------------


def tokenize_documents(tokenizer: Tokenizer, docs: Sequence[str]) -> np.ndarray:
    """int32 [num_tokens]: every document's ids followed by EOS, concatenated."""
    eos = np.array([tokenizer.eos_id], np.int32)
    parts = [p for ids in tokenizer.encode_batch(list(docs)) for p in (ids, eos)]
    return np.concatenate(parts, dtype=np.int32) if parts else np.zeros(0, np.int32)


def pack(tokens: np.ndarray, length: int, stride: int | None = None) -> np.ndarray:
    """int32 [num_rows, length]: windows of `tokens` starting every `stride` (default `length`) tokens.

    A read-only strided view, no copy. The tail that does not fill a window is dropped; a stream shorter
    than `length` gives zero rows.
    """
    if len(tokens) < length:
        return np.zeros((0, length), np.int32)
    return np.lib.stride_tricks.sliding_window_view(tokens, length)[::stride or length]


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy of the token frequency distribution, in nats per token (the unit of the loss).

    The loss of a model that ignores context; a trained LM should go well below it.
    """
    counts = np.bincount(np.asarray(tokens).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# --- batches -------------------------------------------------------------------------------------------------


class TrainStream:
    """Endless shuffled batches of `rows`, int32 [batch_size, row_length]; resumable from `state`.

    Epoch e visits the rows in the order `default_rng((seed, e)).permutation(num_rows)`, `batch_size` at a
    time, and drops the remainder. `state` is {"epoch", "step", "seed", "num_rows"}, all ints: the position
    of the next batch plus what must match on restore (a different corpus, tokenizer or seq_len changes
    num_rows). When batch_size is unchanged, (epoch, step) == divmod(global_step, steps_per_epoch).
    """

    def __init__(self, rows: np.ndarray, batch_size: int, seed: int = 0, state: dict | None = None):
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.steps_per_epoch = len(rows) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"corpus too small: {len(rows)} sequences of {rows.shape[1]} tokens do not fill "
                             f"one batch of {batch_size}")
        self.epoch, self.step = 0, 0
        self._perm_epoch, self._perm = -1, None
        if state is not None:
            self.restore(state)

    @property
    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "num_rows": len(self.rows)}

    def restore(self, state: dict) -> None:
        state = {k: int(v) for k, v in state.items()}  # checkpoints may hand back numpy scalars
        if (state["seed"], state["num_rows"]) != (self.seed, len(self.rows)):
            raise ValueError(f"data state {state} is from a different stream (seed {self.seed}, "
                             f"{len(self.rows)} rows now): corpus, tokenizer, seq_len or seed changed")
        self.epoch, self.step = state["epoch"], state["step"]

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        if self.step >= self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        if self._perm_epoch != self.epoch:
            self._perm = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.rows))
            self._perm_epoch = self.epoch
        idx = self._perm[self.step * self.batch_size:(self.step + 1) * self.batch_size]
        self.step += 1
        return np.ascontiguousarray(self.rows[idx], np.int32)


def validation_batches(rows: np.ndarray, batch_size: int, max_batches: int | None = None) -> list[np.ndarray]:
    """The first `max_batches` full batches of `rows` in order, int32 [batch_size, row_length] each.

    Fixed and unshuffled, so evaluations are comparable across steps and runs. Empty when there are fewer
    rows than `batch_size`.
    """
    n = len(rows) // batch_size
    n = n if max_batches is None else min(n, max_batches)
    return [np.ascontiguousarray(rows[i * batch_size:(i + 1) * batch_size], np.int32) for i in range(n)]
