"""Training objectives: next-token cross-entropy (JAX) and T5 span corruption (numpy, on the host).

Causal LM: a packed row [batch, seq_len + 1] gives `inputs = row[:, :-1]`, `targets = row[:, 1:]`, and
`causal_lm_loss(model(inputs), targets)`.

Encoder-decoder (T5, Raffel et al. 2020 §3.1.4): rows of `tokens_length` raw tokens, with
`tokens_length, targets_length = span_corruption_lengths(inputs_length)`, go through `span_corrupt`; the
decoder reads `shift_right(targets, pad_id)` (T5 starts decoding from the pad id, 0) and the loss is
`encoder_decoder_loss(logits, targets, pad_id)`.

`make_objective(cfg, recipe, tokenizer, seed)` picks one of the two as an object the trainer uses without
knowing which: `row_length` and `stride` (how the corpus is packed), `make_batch(rows, step, split, part)`
(host numpy arrays for one step; `part` = (index, batch_size) when `rows` are one host's share of the batch) and
`loss(model, params, batch, rngs)` (traced inside the jitted step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.recipe import TrainConfig
from zoo.train.data import document_segments
from zoo.train.router_losses import RouterLosses

NOISE_DENSITY, MEAN_SPAN_LENGTH = 0.15, 3.0  # T5 (Raffel et al. 2020 §3.1.4)
MIN_SENTINELS = 100  # T5's vocabulary reserves 100


def token_nll(logits, targets):
    """-log p(target) at each position, float32: logsumexp(logits) - logits[target], so no [..., vocab]
    log-softmax is materialised. logits [..., vocab], targets [...] int in [0, vocab)."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def causal_lm_loss(
    logits: jax.Array,
    targets: jax.Array,
    mask: jax.Array | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy over the tokens where `mask` is nonzero, in float32 whatever the logits dtype.

    logits [..., vocab], targets [...] int, mask [...] (None: every token counts). Per token:

        loss = (1 - ls) * -log p[target] + ls * mean_v(-log p[v]) + z_loss * logsumexp(logits)^2

    Label smoothing targets (1 - ls) * onehot + ls / vocab (over the logits' whole vocab, padding included).
    The z-loss term (PaLM, Chowdhery et al. 2022 §5) keeps the softmax normaliser near 1, i.e. log Z near 0.
    Returns (loss, metrics): "loss" (what is minimised), "nll" (plain cross-entropy, nats/token, the number to
    compare across runs), "z_loss" (its contribution), "accuracy", "tokens" (count of counted tokens).
    """
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    nll = token_nll(logits, targets)
    per_token = nll
    if label_smoothing:
        # -mean_v log p_v = lse - mean_v logit_v: no [.., vocab] log-softmax is materialised.
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * (lse - logits.mean(axis=-1))
    z = z_loss * jnp.square(lse)
    mask = jnp.ones_like(nll) if mask is None else mask.astype(jnp.float32)
    tokens = mask.sum()
    mean = lambda x: (x * mask).sum() / jnp.maximum(tokens, 1.0)  # noqa: E731  (all-masked batch -> 0)
    metrics = {
        "nll": mean(nll),
        "z_loss": mean(z),
        "tokens": tokens,
        "accuracy": mean((logits.argmax(axis=-1) == targets).astype(jnp.float32)),
    }
    metrics["loss"] = mean(per_token + z)
    return metrics["loss"], metrics


def encoder_decoder_loss(
    logits: jax.Array, targets: jax.Array, pad_id: int = 0, label_smoothing: float = 0.0, z_loss: float = 0.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`causal_lm_loss` over decoder logits [batch, targets_length, vocab], ignoring targets equal to pad_id."""
    return causal_lm_loss(logits, targets, targets != pad_id, label_smoothing, z_loss)


# --- T5 span corruption (numpy: it runs on the host, in the data pipeline) ------------------------------------


def _noise_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) in a row of `length` tokens, as T5's random_spans_noise_mask."""
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    return num_noise, max(round(num_noise / mean_span_length), 1)


def span_corruption_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_span_length: float = 3.0
) -> tuple[int, int]:
    """(tokens_length, targets_length): the longest raw row whose corrupted inputs fit in `inputs_length`.

    T5's `random_spans_helper`: inputs keep the non-noise tokens, one sentinel per span and an EOS; targets
    hold the noise tokens, one sentinel per span and an EOS. 512 -> (568, 114) at the defaults.
    """

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise, num_spans = _noise_counts(tokens_length, noise_density, mean_span_length)
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    if noise_density == 0.5 and lengths(tokens_length)[1] > inputs_length:
        tokens_length -= 1  # as T5: at density 0.5 keep the targets no longer than the (round) inputs length
    return tokens_length, lengths(tokens_length)[1]


def _random_segmentation(rng: np.random.Generator, batch: int, num_items: int, num_segments: int) -> np.ndarray:
    """int [batch, num_segments]: lengths >= 1 summing to num_items, uniformly over such compositions."""
    cuts = np.sort(rng.random((batch, num_items - 1)).argsort(axis=1)[:, : num_segments - 1], axis=1) + 1
    ends = np.full((batch, 1), num_items)
    return np.diff(np.concatenate([np.zeros((batch, 1), int), cuts, ends], axis=1), axis=1)


def random_spans_noise_mask(
    rng: np.random.Generator, batch: int, length: int, noise_density: float = 0.15, mean_span_length: float = 3.0
) -> np.ndarray:
    """bool [batch, length], True = noise. Every row has the same number of noise tokens and spans; rows
    alternate non-noise/noise spans, starting with non-noise and ending with noise (as T5)."""
    num_noise, num_spans = _noise_counts(length, noise_density, mean_span_length)
    noise = _random_segmentation(rng, batch, num_noise, num_spans)
    keep = _random_segmentation(rng, batch, length - num_noise, num_spans)
    span_lengths = np.stack([keep, noise], axis=2).ravel()  # keep_1, noise_1, keep_2, noise_2, ...
    return np.repeat(np.tile([False, True], batch * num_spans), span_lengths).reshape(batch, length)


def _replace_spans(tokens: np.ndarray, spans: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """Each run of True in `spans` becomes one sentinel (the k-th run -> sentinels[k]); rows are [batch, L]."""
    first = spans & ~np.pad(spans, ((0, 0), (1, 0)))[:, :-1]
    values = np.where(first, sentinels[np.maximum(np.cumsum(first, axis=1) - 1, 0)], tokens)
    keep = ~spans | first
    return values[keep].reshape(len(tokens), -1)  # every row keeps the same count (same span counts)


def span_corrupt(
    tokens: np.ndarray,
    rng: np.random.Generator,
    *,
    sentinel_ids: Sequence[int],
    eos_id: int,
    pad_id: int = 0,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    inputs_length: int | None = None,
    noise: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """T5 span corruption of raw rows tokens int [batch, tokens_length].

    Returns (encoder_inputs int32 [batch, inputs_length], decoder_targets int32 [batch, targets_length]):

        tokens   a b c d e f g h
        inputs   a <x0> d e <x1> h </s>        (noise spans b c and f g, each replaced by a sentinel)
        targets  <x0> b c <x1> f g </s>

    `sentinel_ids[k]` is <extra_id_k> and must cover the spans per row. Inputs are right-padded with pad_id up to
    `inputs_length` (default: exactly what they need); targets_length is the helper's, so it never pads.
    Use `span_corruption_lengths` to pick tokens_length, and a per-step rng (e.g. default_rng((seed, step)))
    so that a resumed run corrupts the same way. `noise` (bool like `tokens`) replaces the random mask.
    """
    batch, length = tokens.shape
    if noise is None:
        noise = random_spans_noise_mask(rng, batch, length, noise_density, mean_span_length)
    num_spans = _noise_counts(length, noise_density, mean_span_length)[1]
    if len(sentinel_ids) < num_spans:
        raise ValueError(f"{num_spans} noise spans per row need {num_spans} sentinels, got {len(sentinel_ids)}")
    sentinels = np.asarray(sentinel_ids, np.int32)
    eos = np.full((batch, 1), eos_id, np.int32)
    inputs = np.concatenate([_replace_spans(tokens, noise, sentinels), eos], axis=1)
    targets = np.concatenate([_replace_spans(tokens, ~noise, sentinels), eos], axis=1)
    inputs_length = inputs_length or inputs.shape[1]
    if inputs.shape[1] > inputs_length:
        raise ValueError(
            f"corrupted inputs need {inputs.shape[1]} > inputs_length={inputs_length} tokens; "
            "size the rows with span_corruption_lengths"
        )
    inputs = np.pad(inputs, ((0, 0), (0, inputs_length - inputs.shape[1])), constant_values=pad_id)
    return inputs.astype(np.int32), targets.astype(np.int32)


def shift_right(targets: np.ndarray, start_id: int = 0) -> np.ndarray:
    """Decoder inputs [batch, L]: targets moved one step right behind `start_id` (T5: the pad id, 0)."""
    return np.concatenate([np.full((len(targets), 1), start_id, targets.dtype), targets[:, :-1]], axis=1)


# --- the objectives the trainer runs ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CausalLM:
    """Next-token prediction on packed rows of seq_len + 1 tokens (decoder-only models)."""

    seq_len: int
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    document_masking: bool = False
    """Give the model segment ids and per-document positions (zoo.train.data.document_segments), so that
    no token attends across a document boundary (EOS) in a packed row."""
    eos_id: int = 1
    router: RouterLosses = RouterLosses()
    mtp_depth: int = 0
    """The model's multi-token-prediction modules (ModelConfig.mtp_depth): the batch carries the tokens ahead."""
    mtp_weight: float = 0.0  # their loss's weight (the recipe's mtp_loss_weight)

    @property
    def row_length(self) -> int:
        return self.seq_len + 1

    @property
    def stride(self) -> int:
        return self.seq_len  # consecutive rows share one token: every token is a target once

    decoder_len = None

    def make_batch(self, rows: np.ndarray, step: int, split: int = 0, part=None) -> dict[str, np.ndarray]:
        batch = {"inputs": rows[:, :-1], "targets": rows[:, 1:]}
        if self.document_masking:
            batch["segment_ids"], batch["positions"] = document_segments(batch["inputs"], self.eos_id)
        if self.mtp_depth:  # [B, depth, T]: at position i, token i + k (the module's input) and i + k + 1 (its target)
            shifted = [np.pad(rows[:, k:], ((0, 0), (0, k - 1))) for k in range(1, self.mtp_depth + 2)]
            batch["ahead"] = np.stack(shifted[:-1], axis=1)
            batch["ahead_targets"] = np.stack(shifted[1:], axis=1)
        return batch

    def loss(self, model, params, batch, rngs):
        masking = {k: batch[k] for k in ("positions", "segment_ids", "ahead") if k in batch}
        out, layers = self.router.apply(model, {"params": params}, batch["inputs"], **masking, rngs=rngs)
        logits = out[0] if self.mtp_depth else out
        loss, metrics = causal_lm_loss(logits, batch["targets"], None, self.label_smoothing, self.z_loss)
        if self.mtp_depth:
            loss, metrics = self._with_mtp(loss, metrics, out[1], batch["ahead_targets"])
        return self.router.add_to(loss, metrics, layers)

    def _with_mtp(self, loss, metrics, logits, targets):
        """DeepSeek-V3's eq. 25: the loss plus weight x the mean over the modules of each one's cross-entropy, module
        k over the positions whose target (token i + k + 1) is in the row; logged as mtp_loss (before the weight)."""
        length = targets.shape[-1]
        nll = []
        for k in range(self.mtp_depth):
            inside = jnp.broadcast_to(jnp.arange(length) < length - k - 1, targets[:, k].shape)
            nll.append(causal_lm_loss(logits[:, k], targets[:, k], inside)[1]["nll"])
        mtp = self.mtp_weight * jnp.mean(jnp.stack(nll))
        return loss + mtp, {**metrics, "loss": metrics["loss"] + mtp, "mtp_loss": jnp.mean(jnp.stack(nll))}


@dataclasses.dataclass(frozen=True)
class SpanCorruption:
    """T5 span corruption: rows of tokens_length raw tokens -> encoder inputs of seq_len tokens with noise
    spans replaced by sentinels, decoder targets listing the spans (zoo/train/objectives.py)."""

    seq_len: int
    sentinel_ids: tuple[int, ...]
    eos_id: int
    pad_id: int
    seed: int
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    router: RouterLosses = RouterLosses()

    @property
    def lengths(self) -> tuple[int, int]:
        return span_corruption_lengths(self.seq_len, NOISE_DENSITY, MEAN_SPAN_LENGTH)

    @property
    def row_length(self) -> int:
        return self.lengths[0]

    @property
    def stride(self) -> int:
        return self.lengths[0]

    @property
    def decoder_len(self) -> int:
        return self.lengths[1]

    def make_batch(self, rows: np.ndarray, step: int, split: int = 0, part=None) -> dict[str, np.ndarray]:
        """Corrupt with default_rng((seed, split, step)): a resumed run corrupts step s exactly as before.
        `part` = (index, batch_size): `rows` are rows `index` of a global batch of batch_size (one host's
        share), corrupted as they would be in the whole batch."""
        rng = np.random.default_rng((self.seed, split, step))
        noise = None
        if part is not None:
            index, batch_size = part
            noise = random_spans_noise_mask(rng, batch_size, rows.shape[1], NOISE_DENSITY, MEAN_SPAN_LENGTH)[index]
        inputs, targets = span_corrupt(
            rows,
            rng,
            sentinel_ids=self.sentinel_ids,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            noise_density=NOISE_DENSITY,
            mean_span_length=MEAN_SPAN_LENGTH,
            inputs_length=self.seq_len,
            noise=noise,
        )
        return {
            "encoder_inputs": inputs,
            "encoder_mask": inputs != self.pad_id,
            "decoder_inputs": shift_right(targets, self.pad_id),
            "targets": targets,
        }

    def loss(self, model, params, batch, rngs):
        inputs = (batch["encoder_inputs"], batch["decoder_inputs"], batch["encoder_mask"])
        logits, layers = self.router.apply(model, {"params": params}, *inputs, rngs=rngs)
        loss, metrics = encoder_decoder_loss(logits, batch["targets"], self.pad_id, self.label_smoothing, self.z_loss)
        return self.router.add_to(loss, metrics, layers)


def sentinels_needed(seq_len: int) -> int:
    """Sentinels the tokenizer must hold for span corruption of seq_len-token inputs: at least T5's 100, and
    at least one per span (a span puts a sentinel and >= 1 token in the targets, so spans <= targets / 2)."""
    _, targets_length = span_corruption_lengths(seq_len, NOISE_DENSITY, MEAN_SPAN_LENGTH)
    return max(MIN_SENTINELS, targets_length // 2)


def make_objective(cfg: ModelConfig, tc: TrainConfig, tokenizer, seed: int):
    if cfg.is_encoder_decoder:
        sentinels = tuple(tokenizer.sentinel_ids(sentinels_needed(tc.seq_len)))
        return SpanCorruption(
            tc.seq_len,
            sentinels,
            tokenizer.eos_id,
            tokenizer.pad_id,
            seed,
            tc.label_smoothing,
            cfg.z_loss_multiplier,
            RouterLosses.of(cfg),
        )
    router = RouterLosses.of(cfg)
    return CausalLM(
        tc.seq_len,
        tc.label_smoothing,
        cfg.z_loss_multiplier,
        tc.document_masking,
        tokenizer.eos_id,
        router,
        cfg.mtp_depth,
        tc.mtp_loss_weight,
    )
