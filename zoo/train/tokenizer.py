"""Tokenizers behind one small interface: bytes (the default), a BPE trained on the corpus, or a tokenizer.json.

Every tokenizer has::

    encode(text) -> list[int]                  no special tokens added
    encode_batch(texts) -> list[np.ndarray]    int32, one array per text: the fast path for corpora
    decode(ids) -> str                         ids a list or 1-D array; specials by name ("</s>", "<extra_id_0>")
    vocab_size, eos_id, pad_id                 ints
    sentinel_ids(n) -> list[int]               T5 span-corruption sentinels <extra_id_0..n-1>
    save(directory)                            load_tokenizer(directory) restores it

Id layout of the byte tokenizer and of the BPE we train follows T5/ByT5, so that `pad_id == 0` is also the
decoder start token and checkpoints line up with HF ByT5: 0 `<pad>`, 1 `</s>` (EOS), [ByteTokenizer: 2 `<unk>`,
3..258 the byte values 0..255], then the T5 sentinels at the top of the vocab, `<extra_id_0>` highest.
`model_vocab_size` pads the vocab up to a multiple (128) for the embedding; ids in the padding never come
out of `encode`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

META_FILE = "zoo_tokenizer.json"  # which kind of tokenizer a directory holds, and its special tokens
HF_FILE = "tokenizer.json"


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...
    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...
    def sentinel_ids(self, n: int) -> list[int]: ...
    def save(self, directory: str | os.PathLike) -> None: ...


def model_vocab_size(tokenizer: Tokenizer, multiple: int = 128) -> int:
    """Embedding rows for `tokenizer`: its vocab rounded up to `multiple` (aligned matmuls)."""
    return -(-tokenizer.vocab_size // multiple) * multiple


class ByteTokenizer:
    """UTF-8 bytes, ByT5 layout: 0 <pad>, 1 </s>, 2 <unk>, byte b -> b + 3, sentinels on top.

    With `num_sentinels=125` this is exactly HF ByT5's 384-entry vocab.
    """

    OFFSET = 3
    SPECIALS = ("<pad>", "</s>", "<unk>")

    def __init__(self, num_sentinels: int = 0):
        self.num_sentinels = num_sentinels
        self.vocab_size = 256 + self.OFFSET + num_sentinels
        self.pad_id, self.eos_id = 0, 1

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0].tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        # frombuffer on the UTF-8 bytes: 13 MB in milliseconds, no Python loop over characters.
        return [np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.int32) + self.OFFSET for t in texts]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = np.asarray(ids, np.int64).ravel()
        is_byte = (ids >= self.OFFSET) & (ids < 256 + self.OFFSET)
        out, start = [], 0
        # Decode runs of bytes in one go (a multi-byte character must not be split); name the rest.
        for i in [*np.flatnonzero(~is_byte), len(ids)]:
            out.append((ids[start:i] - self.OFFSET).astype(np.uint8).tobytes().decode("utf-8", "replace"))
            if i < len(ids):
                out.append(self._special_name(int(ids[i])))
            start = i + 1
        return "".join(out)

    def _special_name(self, i: int) -> str:
        if 0 <= i < self.OFFSET:
            return self.SPECIALS[i]
        if 256 + self.OFFSET <= i < self.vocab_size:
            return f"<extra_id_{self.vocab_size - 1 - i}>"
        return "<unk>"  # an id in the model's vocab padding

    def sentinel_ids(self, n: int) -> list[int]:
        if n > self.num_sentinels:
            raise ValueError(
                f"need {n} sentinels but the byte tokenizer has {self.num_sentinels}; "
                f"build it with num_sentinels >= {n}"
            )
        return [self.vocab_size - 1 - i for i in range(n)]  # T5: <extra_id_0> is the highest id

    def save(self, directory: str | os.PathLike) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        meta = {"type": "byte", "num_sentinels": self.num_sentinels}
        (Path(directory) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    def to_hf(self):
        """The same ids as a `tokenizers.Tokenizer` (what tokenizer.json holds, for transformers' AutoTokenizer):
        a byte-level BPE with no merges, each byte its own token at b + 3, specials and sentinels as here."""
        from tokenizers import Tokenizer as HFTok
        from tokenizers import decoders, models, pre_tokenizers

        specials = {name: i for i, name in enumerate(self.SPECIALS)}
        specials |= {f"<extra_id_{i}>": self.vocab_size - 1 - i for i in range(self.num_sentinels)}
        vocab = {char: b + self.OFFSET for b, char in _byte_chars().items()} | specials
        tok = HFTok(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(list(specials))
        return tok


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character map, the alphabet of byte-level BPE (pre_tokenizers.ByteLevel):
    printable bytes stand for themselves, the others are shifted to 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = (b for b in range(256) if b not in printable)
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(shifted)}}


class HFTokenizer:
    """A HuggingFace `tokenizers.Tokenizer` (a trained BPE, or any tokenizer.json) behind the zoo interface."""

    def __init__(self, tokenizer, eos_token: str, pad_token: str):
        self.tok = tokenizer
        # Text that happens to contain "</s>" is data, not an EOS: match special tokens only by id.
        self.tok.encode_special_tokens = True
        self.eos_token, self.pad_token = eos_token, pad_token
        self.eos_id, self.pad_id = self._id(eos_token), self._id(pad_token)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def _id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise ValueError(f"token {token!r} is not in the tokenizer's vocabulary")
        return i

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encs = self.tok.encode_batch_fast(list(texts), add_special_tokens=False)  # parallel, no offsets
        return [np.asarray(e.ids, np.int32) for e in encs]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def sentinel_ids(self, n: int) -> list[int]:
        ids = [self.tok.token_to_id(f"<extra_id_{i}>") for i in range(n)]
        if None in ids:
            raise ValueError(
                f"need {n} sentinels <extra_id_0..{n - 1}> but the tokenizer has "
                f"{ids.index(None)}; train the BPE with num_sentinels >= {n}"
            )
        return ids

    def to_hf(self):
        return self.tok

    def save(self, directory: str | os.PathLike) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.tok.save(str(Path(directory) / HF_FILE))
        meta = {"type": "hf", "eos_token": self.eos_token, "pad_token": self.pad_token}
        (Path(directory) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def train_bpe(texts: Iterable[str], vocab_size: int = 8192, num_sentinels: int = 0) -> HFTokenizer:
    """Byte-level BPE (GPT-2 pre-tokenization) trained on `texts`; `vocab_size` counts specials and sentinels.

    Layout: 0 <pad>, 1 </s>, the 256 byte symbols and merges, then <extra_id_{n-1}> .. <extra_id_0> on top.
    Byte-level means every string round-trips exactly; no <unk> is ever needed.
    """
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - num_sentinels,
        min_frequency=2,
        show_progress=False,
        special_tokens=["<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Added tokens take the next free ids, so adding them in reverse puts <extra_id_0> highest, as in T5.
    tok.add_special_tokens([f"<extra_id_{i}>" for i in reversed(range(num_sentinels))])
    return HFTokenizer(tok, eos_token="</s>", pad_token="<pad>")


# Names of EOS in common tokenizer.json files (T5/Llama-2, GPT-2, Gemma, Llama-3), tried in order.
_EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load what `save` wrote, or any HF `tokenizer.json` (a file, or a checkpoint dir holding one).

    For a bare tokenizer.json, EOS/pad come from a neighbouring tokenizer_config.json when there is one,
    else from common names; pad falls back to EOS (packed causal LM never pads).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer path does not exist: {path}")
    directory = path if path.is_dir() else path.parent
    meta = json.loads((directory / META_FILE).read_text()) if (directory / META_FILE).exists() else {}
    if meta.get("type") == "byte":
        return ByteTokenizer(meta["num_sentinels"])
    file = path if path.is_file() and path.name != META_FILE else directory / HF_FILE
    if not file.exists():
        raise FileNotFoundError(f"no {HF_FILE} or {META_FILE} in {directory}")
    from tokenizers import Tokenizer as HFTok

    tok = HFTok.from_file(str(file))
    eos, pad = meta.get("eos_token"), meta.get("pad_token")
    if eos is None:  # not saved by us: ask tokenizer_config.json, then try the usual names
        config_file = directory / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        content = lambda t: t["content"] if isinstance(t, dict) else t  # noqa: E731  (AddedToken dicts)
        known = lambda t: t if t is not None and tok.token_to_id(t) is not None else None  # noqa: E731
        eos = known(content(config.get("eos_token"))) or next(filter(known, _EOS_CANDIDATES), None)
        if eos is None:
            raise ValueError(
                f"cannot tell the EOS token of {file}: none of {_EOS_CANDIDATES} is in its vocab "
                "and no tokenizer_config.json names an eos_token"
            )
        pad = known(content(config.get("pad_token"))) or known("<pad>") or eos
    return HFTokenizer(tok, eos_token=eos, pad_token=eos if pad is None else pad)


def make_tokenizer(
    spec: str = "byte", *, train_texts: Iterable[str] | None = None, vocab_size: int = 8192, num_sentinels: int = 0
) -> Tokenizer:
    """`spec` is "byte", "bpe" (trained on `train_texts`, the train split only), or a tokenizer path.

    `num_sentinels` > 0 reserves T5 sentinels (byte/bpe) or checks that a loaded tokenizer has them.
    """
    if spec == "byte":
        return ByteTokenizer(num_sentinels)
    if spec == "bpe":
        if train_texts is None:
            raise ValueError("tokenizer 'bpe' needs train_texts to train on")
        return train_bpe(train_texts, vocab_size, num_sentinels)
    tok = load_tokenizer(spec)
    tok.sentinel_ids(num_sentinels)  # fail now, not at the first T5 batch
    return tok
