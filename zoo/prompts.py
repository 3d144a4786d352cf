"""Host-side prompt batching for zoo.generate: prompts given as a [B, T] array or a list of 1-D sequences are
checked, left-padded (padding at position -1, each row's positions from 0) and bucketed (batch, prompt length
and new tokens each rounded up to a power of two, at least 8 for lengths, never past max_seq_len), so a program
is compiled once per bucket; encoder inputs are right-padded with a validity mask. Batch.results turns the new
tokens back into the caller's form."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from zoo.config import ModelConfig
from zoo.model import check_tokens
from zoo.sharding import batch_sharding, data_parallelism


def _bucket(n: int, minimum: int = 8) -> int:
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def _rows(name: str, value) -> list[np.ndarray]:
    """A [B, T] array or a list of 1-D sequences -> a list of 1-D int32 arrays, each non-empty."""
    if isinstance(value, (list, tuple)):
        rows = [np.asarray(r) for r in value]
        if not rows or any(r.ndim != 1 for r in rows):
            raise ValueError(
                f"{name}: a list of prompts must hold 1-D token sequences, got shapes {[r.shape for r in rows]}"
            )
    else:
        array = np.asarray(value)
        if array.ndim != 2:
            raise ValueError(f"{name} must be int [batch, length] or a list of 1-D sequences, got shape {array.shape}")
        rows = list(array)
    if any(r.size and not np.issubdtype(r.dtype, np.integer) for r in rows):
        raise ValueError(f"{name} must hold integer token ids")
    if any(r.size == 0 for r in rows):
        raise ValueError(f"{name}: every prompt must hold at least one token")
    return [r.astype(np.int32) for r in rows]


def _pad(rows: list[np.ndarray], length: int, batch: int, *, left: bool):
    """Rows padded with 0 to `length` (left or right) and to `batch` rows (repeating the first row, so the
    filler rows compute something ordinary), with positions (-1 on padding) or a validity mask."""
    rows = rows + [rows[0]] * (batch - len(rows))
    tokens = np.zeros((batch, length), np.int32)
    positions = np.full((batch, length), -1, np.int32)
    for i, r in enumerate(rows):
        span = slice(length - len(r), length) if left else slice(0, len(r))
        tokens[i, span], positions[i, span] = r, np.arange(len(r))
    return tokens, positions


@dataclasses.dataclass(frozen=True)
class Batch:
    """Prompts (and encoder inputs) padded to their bucket, on the host, with what generate needs to know."""

    rows: int
    lengths: tuple[int, ...]
    tokens: np.ndarray  # [batch bucket, prompt bucket], left-padded
    positions: np.ndarray  # same shape, -1 on padding
    encoder_tokens: np.ndarray | None
    encoder_mask: np.ndarray | None
    decode_len: int
    new_bucket: int

    def device_inputs(self, mesh):
        arrays = (self.tokens, self.positions, self.encoder_tokens, self.encoder_mask)
        if mesh is None:
            return arrays
        # Rows split over data x fsdp x expert when they divide evenly (else every device holds the whole batch).
        split = self.tokens.shape[0] % data_parallelism(mesh) == 0
        sharding = batch_sharding(mesh) if split else NamedSharding(mesh, PartitionSpec())
        return tuple(None if a is None else jax.device_put(a, sharding) for a in arrays)

    def results(self, new: np.ndarray, prompt):
        """The caller's form: an array [B, T + N] for an array prompt, else a list of 1-D arrays."""
        rows = [
            np.concatenate([self.tokens[i, self.tokens.shape[1] - n :], new[i]]) for i, n in enumerate(self.lengths)
        ]
        return rows if isinstance(prompt, (list, tuple)) else jnp.asarray(np.stack(rows))


def prepare(cfg: ModelConfig, prompt, max_new_tokens: int, encoder_tokens, encoder_mask) -> Batch:
    """Checked prompts (a [B, T] array or a list of 1-D sequences), left-padded, and for encoder-decoder models the
    right-padded encoder inputs with their mask; the batch, prompt length and new tokens rounded up to buckets."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    rows = _rows("prompt", prompt)
    longest = max(len(r) for r in rows)
    check_tokens(cfg, jnp.asarray(np.concatenate(rows))[None], decode_len=longest + max_new_tokens)
    # Round the prompt length and the new tokens up, unless that would pass max_seq_len.
    length = _bucket(longest) if _bucket(longest) + max_new_tokens <= cfg.max_seq_len else longest
    new_bucket = min(_bucket(max_new_tokens), cfg.max_seq_len - length)
    batch = _bucket(len(rows), minimum=1)
    tokens, positions = _pad(rows, length, batch, left=True)
    enc_tokens = enc_mask = None
    if cfg.is_encoder_decoder:
        if encoder_tokens is None:
            raise ValueError("encoder-decoder models need encoder_tokens")
        enc_rows = _rows("encoder_tokens", encoder_tokens)
        if len(enc_rows) != len(rows):
            raise ValueError(f"{len(enc_rows)} encoder inputs for {len(rows)} prompts")
        if encoder_mask is not None:  # an array input's own padding: keep only the rows' valid prefixes
            mask = np.asarray(encoder_mask, bool)
            enc_rows = [r[: int(m.sum())] for r, m in zip(enc_rows, mask, strict=True)]
        longest_enc = max(len(r) for r in enc_rows)
        check_tokens(cfg, jnp.asarray(np.concatenate(enc_rows))[None], decode_len=longest_enc)
        enc_length = min(_bucket(longest_enc), cfg.max_seq_len)
        enc_tokens, enc_positions = _pad(enc_rows, enc_length, batch, left=False)
        enc_mask = enc_positions >= 0
    return Batch(
        len(rows), tuple(len(r) for r in rows), tokens, positions, enc_tokens, enc_mask, length + new_bucket, new_bucket
    )
