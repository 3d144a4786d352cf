"""A run's data, from its DataConfig: the sources, the lazily read train texts (for a BPE), and the cached
tokens packed into the train stream and the validation rows (zoo/train/setup.py calls these).

Every source, the default corpus included, goes through the token cache (zoo/train/data_cache.py).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from zoo.train import data as data_lib
from zoo.train import data_cache
from zoo.train.data_sources import parse_sources


@dataclasses.dataclass(frozen=True)
class TrainingData:
    stream: data_lib.TrainStream
    """Training batches: this process's rows of each global batch, at the start of the run."""
    val_rows: np.ndarray
    """int32 [n, row_length]: the first validation rows (of every source, interleaved)."""
    unigram_entropy: float
    """Of the train tokens (a mixture: of the weighted mixture of its sources' frequencies), nats/token."""
    message: str
    contents: list[str]
    """What the tokens are, per source: its cache entry's name (a hash of the files' bytes, the tokenizer and
    the split), saved with each checkpoint so that a resume on edited data is noticed."""


def sources_of(data) -> list[tuple[str | None, float]]:
    """[(path, weight)]: data.sources, else [(data.path, 1.0)] (None: the default corpus)."""
    return list(parse_sources(data.sources)) if data.sources else [(data.path, 1.0)]


def train_texts(data) -> data_lib.TrainTexts:
    """The train documents of every source, read when iterated (what data.tokenizer=bpe trains on)."""
    paths = tuple(path for path, _ in sources_of(data))
    for path in paths:
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"data path does not exist: {path}")
    return data_lib.TrainTexts(paths, data.text_field, data.validation_percent, data.max_documents)


def open_sources(data, tokenizer, progress: bool = True) -> list[tuple[str | None, float, data_cache.TokenCorpus]]:
    """[(path, weight, cached tokens)] of every source of a DataConfig, each cache built first if missing."""
    return [
        (
            path,
            weight,
            data_cache.open_tokens(
                path,
                tokenizer,
                text_field=data.text_field,
                validation_percent=data.validation_percent,
                max_documents=data.max_documents,
                cache_dir=data.cache_dir,
                progress=progress,
            ),
        )
        for path, weight in sources_of(data)
    ]


def validation_rows(corpora, row_length: int, stride: int, limit: int, split: str = "validation") -> np.ndarray:
    """int32 [n, row_length]: up to `limit` rows of a split of the opened sources, interleaved (of the
    validation split: what training evaluates on)."""
    val = [data_lib.pack(getattr(c, split).tokens, row_length, stride) for _, _, c in corpora]
    return data_lib.validation_rows([v for v in val if len(v)] or val[:1], limit)


def documents(split: data_cache.TokenSplit) -> list[np.ndarray]:
    """Each document of a cached split: its ids, without the EOS that ends it in the token stream."""
    return [np.asarray(split.tokens[a : b - 1]) for a, b in zip(split.offsets[:-1], split.offsets[1:], strict=True)]


def open_training_data(
    data,
    tokenizer,
    row_length: int,
    stride: int,
    batch_size: int,
    seed: int,
    index: np.ndarray | None = None,
    val_limit: int = 0,
    progress: bool = True,
) -> TrainingData:
    """Open (building when missing) the token cache of every source and pack it: the train stream (reading only
    the rows `index` of each global batch) and up to `val_limit` validation rows. ValueError for bad data."""
    corpora = open_sources(data, tokenizer, progress)
    train = [data_lib.pack(c.train.tokens, row_length, stride) for _, _, c in corpora]
    for (path, _, c), rows in zip(corpora, train, strict=True):
        if len(rows) == 0:
            raise ValueError(
                f"corpus too small: {path or 'the default corpus'} has {len(c.train.tokens)} train "
                f"tokens, fewer than one sequence of {row_length}"
            )
    weights = [w for _, w, _ in corpora]
    stream = data_lib.TrainStream(train, batch_size, seed, weights=weights, index=index)
    val_rows = validation_rows(corpora, row_length, stride, val_limit)
    mix = sum(w / sum(weights) * c.counts / max(c.counts.sum(), 1) for _, w, c in corpora)
    built = [c for _, _, c in corpora if not c.hit]
    cache = (
        f"tokenized {len(built)} of {len(corpora)} sources in {sum(c.seconds for c in built):.1f}s"
        if built
        else f"cache hit ({sum(c.seconds for _, _, c in corpora):.2f}s)"
    )
    docs = lambda split: sum(getattr(c, split).documents for _, _, c in corpora)  # noqa: E731
    message = (
        f"data: {docs('train'):,} train / {docs('validation'):,} validation documents, "
        f"{sum(len(c.train.tokens) for _, _, c in corpora):,} train tokens, unigram entropy "
        f"{data_cache.unigram_entropy(mix):.3f} nats/token; {cache} in {corpora[0][2].directory.parent}"
    )
    if len(corpora) > 1:
        message += "; mixture " + ", ".join(f"{p}: {w / sum(weights):.2f}" for p, w, _ in corpora)
    contents = [c.directory.name for _, _, c in corpora]
    return TrainingData(stream, val_rows, data_cache.unigram_entropy(mix), message, contents)
