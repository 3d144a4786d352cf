"""Corpus -> tokens (cached, memory-mapped) -> packed rows -> deterministic, resumable batches.

Flow (zoo/train/setup.py)::

    texts = TrainTexts(sources, ...)                  # lazy: the train documents, for training a BPE
    tok = make_tokenizer("byte" | "bpe" | path, train_texts=texts.train)
    corpus = data_cache.open_tokens(path, tok)        # tokenized once, then a memmap on every start
    rows = corpus.train.rows(seq_len + 1, seq_len)    # windows into the memmap, nothing read
    stream = TrainStream([rows, ...], batch_size, seed, weights=..., index=this_process_rows)
    inputs, targets = batch[:, :-1], batch[:, 1:]     # causal LM: each [batch, seq_len]

Sources: `data.path` (one) or `data.sources` (a weighted mixture); formats and read errors in
zoo/train/data_sources.py, the token cache (keyed by content, checked on open, numpy memmaps and why not grain)
in zoo/train/data_cache.py.

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
token and every token is a target exactly once. T5 uses stride == length. A row's documents are told apart by
the EOS that ends each one (tokenizers never produce EOS from text): `document_segments` gives segment ids
(1-based per row) and positions restarting at 0 at each document start (and at the row start), which the
model uses to block attention across documents when the recipe sets train.document_masking.

Batches: the per-epoch order of source k is `default_rng((seed, k + 1, epoch)).permutation(num_rows)`;
a mixture draws each row's source from `default_rng((seed, 0, step))` with the weights. Row n of source k
(counting from the start of the run) is row `perm(epoch = n // num_rows)[n % num_rows]`, so the resume state
is a few ints (the step and the rows taken from each source), global: the same checkpoint resumes on any
number of hosts, each of which reads only the rows of the global batch its devices hold (`index`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator, Sequence

import numpy as np

from zoo.train import data_sources as sources_lib
from zoo.train.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Documents (whole texts) of each split, in memory (evaluation and small corpora)."""

    train: list[str]
    validation: list[str]

    def stats(self) -> dict[str, int]:
        count = lambda docs: sum(len(d.encode("utf-8")) for d in docs)  # noqa: E731
        return {
            "train_documents": len(self.train),
            "validation_documents": len(self.validation),
            "train_bytes": count(self.train),
            "validation_bytes": count(self.validation),
        }


@dataclasses.dataclass(frozen=True)
class TrainTexts:
    """The train documents of `paths` (None: the default corpus), read lazily each time `train` is iterated:
    what a BPE tokenizer trains on, without the corpus in memory."""

    paths: tuple
    text_field: str = "text"
    validation_percent: int = 2
    max_documents: int | None = None

    @property
    def train(self):
        return _Reiterable(self._train)

    def _train(self) -> Iterator[str]:
        for path in self.paths:
            for split, text in sources_lib.assign_splits(self._documents(path), self.validation_percent):
                if split == "swap":  # every earlier document was validation (a tiny corpus): now train
                    yield from list(self._documents(path))[:-1]
                elif split == "train":
                    yield text

    def _documents(self, path):
        docs = sources_lib.iter_documents(path, self.text_field)
        return docs if self.max_documents is None else itertools.islice(docs, self.max_documents)


class _Reiterable:
    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return self.make()


# --- reading -----------------------------------------------------------------------------------------------


def stdlib_documents() -> list[str]:
    """The default corpus: the interpreter's stdlib sources (~730 files, ~12 MB) + pydoc topics."""
    return list(sources_lib.iter_stdlib_documents())


def read_documents(path: str | os.PathLike, text_field: str = "text") -> list[str]:
    """Documents under `path` (any format of zoo/train/data_sources.py), in memory. Empty ones are dropped."""
    return list(sources_lib.iter_documents(path, text_field))


def split_documents(docs: Sequence[str], validation_percent: int = 2) -> Corpus:
    """Deterministic train/validation split by a stable content hash (see the module docstring)."""
    train: list[str] = []
    validation: list[str] = []
    for split, text in sources_lib.assign_splits(docs, validation_percent):
        if split == "swap":
            train, validation = validation, []
        else:
            (train if split == "train" else validation).append(text)
    return Corpus(train, validation)


def load_corpus(
    path: str | os.PathLike | None = None, *, text_field: str = "text", validation_percent: int = 2
) -> Corpus:
    """Read and split a corpus into memory; `path=None` is the embedded default corpus."""
    docs = stdlib_documents() if path is None else read_documents(path, text_field)
    if not docs:
        raise ValueError(
            f"no documents in {path}: expected non-empty UTF-8 text files or JSONL with a {text_field!r} field"
        )
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
    return np.lib.stride_tricks.sliding_window_view(tokens, length)[:: stride or length]


# --- batches -------------------------------------------------------------------------------------------------


class TrainStream:
    """Endless shuffled batches from one or more sources of rows (a weighted mixture); resumable from `state`.

    `next(stream)`: int32 [len(index), row_length], the rows `index` (default: all) of the next global batch
    of `batch_size` rows. Source k visits its rows epoch by epoch in the order
    `default_rng((seed, k + 1, epoch)).permutation(num_rows_k)`; with several sources each row of a batch is
    drawn from source k with probability weights[k], by `default_rng((seed, 0, step))`. `state` is
    {"step", "seed", "num_rows": [per source], "taken": [rows taken per source]}: global (every host has the
    same), a few ints, and what must match on restore (a different corpus, tokenizer or seq_len changes
    num_rows).
    """

    def __init__(
        self,
        rows,
        batch_size: int,
        seed: int = 0,
        state: dict | None = None,
        *,
        weights: Sequence[float] | None = None,
        index: np.ndarray | None = None,
    ):
        self.sources = [rows] if isinstance(rows, np.ndarray) else list(rows)
        self.batch_size, self.seed = batch_size, seed
        w = np.ones(len(self.sources)) if weights is None else np.asarray(weights, np.float64)
        self.weights = w / w.sum()
        self.index = np.arange(batch_size) if index is None else np.asarray(index)
        self.num_rows = [len(r) for r in self.sources]
        if min(self.num_rows) == 0 or sum(self.num_rows) < batch_size:
            raise ValueError(
                f"corpus too small: {self.num_rows} sequences of {self.sources[0].shape[1]} tokens "
                f"do not fill one batch of {batch_size}"
            )
        self.step, self.taken = 0, [0] * len(self.sources)
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        if state is not None:
            self.restore(state)

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one pass over the first source."""
        return self.num_rows[0] // self.batch_size

    @property
    def epoch(self) -> int:
        """The epoch of the first source the next batch is in."""
        return self.taken[0] // self.num_rows[0]

    @property
    def part(self) -> tuple[np.ndarray, int]:
        """(the global rows this process reads, the global batch size): what objectives.make_batch needs."""
        return self.index, self.batch_size

    @property
    def state(self) -> dict:
        return {"step": self.step, "seed": self.seed, "num_rows": list(self.num_rows), "taken": list(self.taken)}

    def restore(self, state: dict) -> None:
        num_rows = [int(n) for n in np.atleast_1d(state.get("num_rows", []))]
        if "taken" not in state or (int(state["seed"]), num_rows) != (self.seed, self.num_rows):
            raise ValueError(
                f"data state {state} is from a different stream (seed {self.seed}, "
                f"{self.num_rows} rows now): corpus, tokenizer, seq_len or seed changed"
            )
        self.step, self.taken = int(state["step"]), [int(n) for n in state["taken"]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def _choices(self) -> np.ndarray:
        if len(self.sources) == 1:
            return np.zeros(self.batch_size, np.int64)
        rng = np.random.default_rng((self.seed, 0, self.step))
        return rng.choice(len(self.sources), size=self.batch_size, p=self.weights)

    def _perm(self, k: int, epoch: int) -> np.ndarray:
        if (k, epoch) not in self._perms:
            if len(self._perms) > 2 * len(self.sources):
                self._perms.pop(next(iter(self._perms)))  # keep the few epochs in use
            n = self.num_rows[k]  # int32 halves the permutation's memory (the same order as permutation(n))
            rows = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
            self._perms[k, epoch] = np.random.default_rng((self.seed, k + 1, epoch)).permutation(rows)
        return self._perms[k, epoch]

    def __next__(self) -> np.ndarray:
        choice = self._choices()
        out = np.empty((len(self.index), self.sources[0].shape[1]), np.int32)
        for k, rows in enumerate(self.sources):
            mine = choice == k
            ordinal = self.taken[k] + np.cumsum(mine) - 1  # row n of source k, counted from the run's start
            local = mine[self.index]
            epochs, positions = np.divmod(ordinal[self.index][local], self.num_rows[k])
            picked = np.empty(len(epochs), np.int64)
            for e in np.unique(epochs):
                picked[epochs == e] = self._perm(k, int(e))[positions[epochs == e]]
            out[local] = rows[picked]
            self.taken[k] += int(mine.sum())
        self.step += 1
        return out


def document_segments(tokens: np.ndarray, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(segment_ids, positions), int32 like `tokens` [batch, length]: a document's tokens and the EOS that
    ends it share a segment id (1, 2, ... within each row); positions count from 0 at each document start and
    at the row start (a document cut by the row boundary starts over, as it would alone)."""
    tokens = np.asarray(tokens)
    ends = tokens == eos_id
    starts = np.zeros_like(ends)
    starts[:, 0] = True
    starts[:, 1:] = ends[:, :-1]
    segment_ids = np.cumsum(starts, axis=1).astype(np.int32)
    index = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
    return segment_ids, (index - first).astype(np.int32)


def validation_rows(sources: Sequence[np.ndarray], limit: int) -> np.ndarray:
    """int32 [<= limit, row_length]: the first rows of each source, interleaved (row i from source i % K
    while it lasts), so that a mixture's fixed validation batches hold every source."""
    k = len(sources)
    take = [np.ascontiguousarray(s[: -(-limit // k) if k > 1 else limit], np.int32) for s in sources]
    order = sorted(((i, j) for j, t in enumerate(take) for i in range(len(t))))
    rows = [take[j][i] for i, j in order][:limit]
    width = sources[0].shape[1]
    return np.stack(rows).astype(np.int32) if rows else np.zeros((0, width), np.int32)


def validation_batches(rows: np.ndarray, batch_size: int, max_batches: int | None = None) -> list[np.ndarray]:
    """The first `max_batches` full batches of `rows` in order, int32 [batch_size, row_length] each.

    Fixed and unshuffled, so evaluations are comparable across steps and runs. Empty when there are fewer
    rows than `batch_size`.
    """
    n = len(rows) // batch_size
    n = n if max_batches is None else min(n, max_batches)
    return [np.ascontiguousarray(rows[i * batch_size : (i + 1) * batch_size], np.int32) for i in range(n)]
