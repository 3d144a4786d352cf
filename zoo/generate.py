"""Autoregressive sampling with a KV cache: one prefill call over the prompts, then single-token steps in a
`while_loop` that stops as soon as every row has stopped. Local (sliding-window) layers keep ring-buffer
caches of window size.

    out = generate(model, params, prompts, max_new_tokens)   # [B, T] array -> [B, T + N] array;
                                                             # list of 1-D sequences -> list of 1-D arrays
    for new in generate_stream(model, params, prompts, N):   # int [B] per step, as soon as it is sampled
        ...

Rows of different lengths are left-padded; padding has position -1, which no query attends to, and each
row's positions start at 0, so every row continues exactly as it would alone. Shapes are bucketed (batch,
prompt length and new tokens each rounded up to a power of two, at least 8 for lengths; zoo.prompts pads and
buckets), so a program is compiled once per bucket and sampling settings, not once per prompt length. With
`mesh`, the parameters and the KV cache are sharded over it by the same logical-axis rules as training
(zoo.sharding), so a model too big for one device can be sampled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.model import abstract_params, build, unstack_layers
from zoo.prompts import prepare
from zoo.sharding import param_shardings, use_mesh


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is picked: greedy at temperature 0, else from softmax(logits / temperature),
    optionally restricted to the top_k tokens and/or the smallest set whose probability reaches top_p
    (nucleus, Holtzman 2020). A row stops after any of `stop_tokens` and then repeats it."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    stop_tokens: tuple[int, ...] = ()

    def check(self, cfg: ModelConfig) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and not 1 <= self.top_k <= cfg.vocab_size:
            raise ValueError(f"top_k must be in [1, vocab_size={cfg.vocab_size}], got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        bad = [t for t in self.stop_tokens if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(f"stop_tokens must be in [0, vocab_size={cfg.vocab_size}), got {bad}")


def generate(
    model,
    params,
    prompt,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng=None,
    encoder_tokens=None,
    encoder_mask=None,
    stop_tokens: Sequence[int] = (),
    mesh=None,
):
    """Continue each prompt by `max_new_tokens` tokens.

    prompt: int [B, T] (returns int32 [B, T + max_new_tokens]) or a list of 1-D token sequences of any
    lengths (returns a list of 1-D arrays, the i-th equal to generating prompt i alone). Encoder-decoder
    models: `encoder_tokens` (int [B, S] with optional `encoder_mask`, or a list of 1-D sequences) are the
    input and `prompt` is the decoder prefix (e.g. [[0]], T5's start token).
    """
    batch, programs = _setup(
        model.cfg,
        prompt,
        max_new_tokens,
        encoder_tokens,
        encoder_mask,
        Sampling(float(temperature), top_k, top_p, tuple(int(t) for t in stop_tokens)),
        mesh,
    )
    if programs is None:
        return batch.results(np.zeros((batch.rows, 0), np.int32), prompt)
    rng = jax.random.key(0) if rng is None else rng
    params = _place(params, model.cfg, mesh)  # outside the mesh context: unboxing there would constrain
    with _context(mesh):
        new = programs.run(params, *batch.device_inputs(mesh), rng, jnp.int32(max_new_tokens))
    return batch.results(np.asarray(new)[: batch.rows, :max_new_tokens], prompt)


def generate_stream(
    model,
    params,
    prompt,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng=None,
    encoder_tokens=None,
    encoder_mask=None,
    stop_tokens: Sequence[int] = (),
    mesh=None,
) -> Iterator[np.ndarray]:
    """`generate`, one step at a time: yields int32 [B] (one new token per prompt) as soon as it is
    sampled, and stops early once every row has stopped. Same arguments, same tokens."""
    batch, programs = _setup(
        model.cfg,
        prompt,
        max_new_tokens,
        encoder_tokens,
        encoder_mask,
        Sampling(float(temperature), top_k, top_p, tuple(int(t) for t in stop_tokens)),
        mesh,
    )
    if programs is None:
        return
    rng = jax.random.key(0) if rng is None else rng
    params = _place(params, model.cfg, mesh)
    with _context(mesh):
        params = programs.unrolled(params)
        carry = programs.prefill(params, *batch.device_inputs(mesh), rng)
        for i in range(max_new_tokens):
            if i:
                carry = programs.step(params, carry)
            token, done = np.asarray(carry[1]), np.asarray(carry[4])
            yield token[: batch.rows]
            if done[: batch.rows].all():
                return


def _setup(cfg: ModelConfig, prompt, max_new_tokens, encoder_tokens, encoder_mask, sampling: Sampling, mesh):
    """What generate and generate_stream share: checked, padded inputs and the compiled programs (None when
    there is nothing to generate)."""
    batch = prepare(cfg, prompt, max_new_tokens, encoder_tokens, encoder_mask)
    sampling.check(cfg)
    if max_new_tokens == 0:
        return batch, None
    return batch, _programs(cfg, batch.decode_len, batch.new_bucket, sampling, mesh)


# ------------------------------------------------------------------------------------------ the programs
@dataclasses.dataclass(frozen=True)
class _Programs:
    unrolled: Callable  # params -> the unrolled layout that prefill and step read
    prefill: Callable  # (unrolled params, tokens, positions, enc, enc_mask, rng) -> carry
    step: Callable  # (unrolled params, carry) -> carry
    run: Callable  # (params, tokens, positions, enc, enc_mask, rng, max_new) -> new tokens [B, new_bucket]


@functools.lru_cache(maxsize=32)
def _programs(cfg: ModelConfig, decode_len: int, new_bucket: int, sampling: Sampling, mesh) -> _Programs:
    """Jitted prefill, single step and whole loop for one (config, bucket, sampling, mesh).

    carry = (cache, token [B], position [B], rng, done [B]): the newest token, the position it will be read
    at, and which rows have stopped.
    """
    # Decoding runs the layers unrolled: a scan over layers would slice each layer's KV cache out of the
    # stacked cache and write it back at every step, a copy of the whole cache per token (57% of batch-8
    # decode time measured in benchmarks/RESULTS.md); unrolled, each layer updates its own cache in place.
    model = build(cfg.replace(scan_layers=False)).clone(decode_len=decode_len)
    stops = jnp.asarray(sampling.stop_tokens or (-1,), jnp.int32)

    def forward(variables, tokens, positions, encoder_tokens=None, encoder_mask=None):
        if cfg.is_encoder_decoder:
            return model.apply(
                variables,
                encoder_tokens,
                tokens,
                encoder_mask=encoder_mask,
                decoder_positions=positions,
                mutable=["cache"],
            )
        return model.apply(variables, tokens, positions=positions, mutable=["cache"])

    def pick(logits, rng, done, previous):
        rng, key = jax.random.split(rng)
        token = sample(logits, key, sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
        token = jnp.where(done, previous, token)  # a stopped row repeats its stop token
        return token, rng, done | jnp.isin(token, stops)

    def prefill(params, tokens, positions, encoder_tokens, encoder_mask, rng):
        logits, state = forward({"params": params}, tokens, positions, encoder_tokens, encoder_mask)
        no = jnp.zeros(tokens.shape[0], bool)
        token, rng, done = pick(logits[:, -1], rng, no, tokens[:, -1])
        return state["cache"], token, positions[:, -1] + 1, rng, done

    def step(params, carry):
        cache, token, position, rng, done = carry
        # Encoder-decoder: cross-attention keys and the encoder mask are in the cache.
        logits, state = forward({"params": params, "cache": cache}, token[:, None], position[:, None])
        token, rng, done = pick(logits[:, -1], rng, done, token)
        return state["cache"], token, position + 1, rng, done

    def unrolled(params):
        """The parameters in the unrolled layout, once per call (not in the loop body: that would copy them
        every step)."""
        return unstack_layers(params) if cfg.scan_layers else params

    def run(params, tokens, positions, encoder_tokens, encoder_mask, rng, max_new):
        params = unrolled(params)
        carry = prefill(params, tokens, positions, encoder_tokens, encoder_mask, rng)
        out = jnp.zeros((tokens.shape[0], new_bucket), jnp.int32).at[:, 0].set(carry[1])

        def cond(loop):
            i, carry, _ = loop
            return (i < max_new) & ~jnp.all(carry[4])

        def body(loop):
            i, carry, out = loop
            carry = step(params, carry)
            return i + 1, carry, jax.lax.dynamic_update_slice_in_dim(out, carry[1][:, None], i, axis=1)

        i, carry, out = jax.lax.while_loop(cond, body, (jnp.int32(1), carry, out))
        # Stopped early: every row has stopped, so the rest of each row repeats its last token.
        return jnp.where(jnp.arange(new_bucket)[None] < i, out, carry[1][:, None])

    return _Programs(jax.jit(unrolled), jax.jit(prefill), jax.jit(step, donate_argnums=1), jax.jit(run))


def _context(mesh):
    return use_mesh(mesh) if mesh is not None else contextlib.nullcontext()


def _place(params, cfg: ModelConfig, mesh):
    params = nn.meta.unbox(params)
    if mesh is None:
        return params
    return jax.device_put(params, param_shardings(abstract_params(cfg), mesh))


def sample(logits, key, temperature: float, *, top_k: int | None = None, top_p: float | None = None):
    """logits [B, V] -> token ids [B] (greedy when temperature == 0)."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep a token if the mass before it is still below top_p (so the top token always survives).
        keep_sorted = jnp.cumsum(probs, axis=-1) - probs < top_p
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
