"""Text from a model: a continuation of a prompt, and a trained run loaded back for sampling (sample.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from zoo.generate import generate_stream
from zoo.train.restore import load_run


def generate_text(
    model,
    params,
    tokenizer,
    prompt: str | Sequence[str],
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = 40,
    top_p: float | None = 0.95,
    seed: int = 0,
    stop: Sequence[str] = (),
    on_text: Callable[[int, str], None] | None = None,
):
    """Decoded continuation of `prompt` (decoder-only), or the decoder's output for the encoder input
    `prompt + <extra_id_0>` (encoder-decoder: the model fills in the masked span). A list of prompts is
    generated as one batch and gives a list of texts.

    A row ends at the tokenizer's EOS or at the first of the `stop` strings (cut before it). `on_text(row,
    piece)` receives each row's text as it is generated, holding back what could still become a stop string.
    """
    cfg = model.cfg
    texts = [prompt] if isinstance(prompt, str) else list(prompt)
    top_k = None if top_k is None else min(top_k, cfg.vocab_size)
    kwargs: dict[str, Any] = dict(
        temperature=temperature, top_k=top_k, top_p=top_p, rng=jax.random.key(seed), stop_tokens=(tokenizer.eos_id,)
    )
    ids = [tokenizer.encode(t) or [tokenizer.eos_id] for t in texts]
    if cfg.is_encoder_decoder:
        kwargs["encoder_tokens"] = [
            i[: cfg.max_seq_len - 2] + tokenizer.sentinel_ids(1) + [tokenizer.eos_id] for i in ids
        ]
        ids = [[tokenizer.pad_id] for _ in ids]
        skip = tokenizer.sentinel_ids(1)[0]  # the targets open with the sentinel of the span they fill
    else:
        ids = [i[-(cfg.max_seq_len - 1) :] for i in ids]
        skip = None
    n = min(max_new_tokens, cfg.max_seq_len - max(map(len, ids)))
    rows = [_Row(tokenizer, stop, skip) for _ in ids]
    for step in generate_stream(model, params, ids, n, **kwargs):
        for i, (row, token) in enumerate(zip(rows, step.tolist(), strict=False)):
            piece = row.add(token)
            if piece and on_text is not None:
                on_text(i, piece)
        if all(row.done for row in rows):
            break
    for i, row in enumerate(rows):
        rest = row.finish()
        if rest and on_text is not None:
            on_text(i, rest)
    out = [row.text for row in rows]
    return out[0] if isinstance(prompt, str) else out


class _Row:
    """One row's generated text: stops at EOS or a stop string; releases only text no stop string can still
    claim (and no half of a multi-byte character)."""

    def __init__(self, tokenizer, stop: Sequence[str], skip: int | None):
        self.tokenizer, self.stop, self.skip = tokenizer, tuple(s for s in stop if s), skip
        self.tokens: list[int] = []
        self.text, self.released, self.done = "", 0, False

    def add(self, token: int) -> str:
        if self.done:
            return ""
        if token == self.tokenizer.eos_id:
            self.done = True
            return self.finish()
        if not self.tokens and token == self.skip:
            self.skip = None
            return ""
        self.tokens.append(token)
        self.text = self.tokenizer.decode(self.tokens)
        cuts = [self.text.find(s) for s in self.stop if s in self.text]
        if cuts:
            self.text, self.done = self.text[: min(cuts)], True
            return self.finish()
        hold = max((k for s in self.stop for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        safe = len(self.text) - hold
        while safe > self.released and self.text[safe - 1] == "\ufffd":  # a character still incomplete
            safe -= 1
        return self._release(safe)

    def finish(self) -> str:
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        piece = self.text[self.released : upto] if upto > self.released else ""
        self.released = max(self.released, upto)
        return piece


def load_for_sampling(run_dir, step: int | None = None, mesh=None):
    """(model, params, tokenizer) of a run directory's checkpoint (default: the latest), the params alone
    restored onto `mesh` (default: one device; zoo.train.restore.load_run)."""
    trained = load_run(run_dir, step, mesh)
    return trained.model, trained.params, trained.tokenizer
