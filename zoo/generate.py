"""Jitted autoregressive sampling with a KV cache: one prefill call over the prompt, then a scan of
single-token steps. Local (sliding-window) layers keep ring-buffer caches of window size."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.config import ModelConfig
from zoo.model import build, check_tokens


def generate(model, params, prompt, max_new_tokens: int, *, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, rng=None, encoder_tokens=None, encoder_mask=None,
             eos_id: int | None = None):
    """Continue `prompt` (int [B, T]) by `max_new_tokens` tokens -> int32 [B, T + max_new_tokens].

    temperature 0 is greedy; otherwise sample from softmax(logits / temperature), optionally restricted
    to the top_k tokens and/or the smallest set whose probability reaches top_p (nucleus, Holtzman 2020).
    Encoder-decoder models: `encoder_tokens` [B, S] (and optional `encoder_mask`) are the input and
    `prompt` is the decoder prefix (e.g. [[0]], T5's start token). After `eos_id` a row repeats eos_id.
    """
    cfg: ModelConfig = model.cfg
    prompt = jnp.asarray(prompt, jnp.int32)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= cfg.vocab_size:
        raise ValueError(f"top_k must be in [1, vocab_size={cfg.vocab_size}], got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    total = prompt.shape[1] + max_new_tokens
    check_tokens(cfg, prompt, decode_len=total)
    if prompt.shape[1] < 1:
        raise ValueError("prompt must hold at least one token")
    if cfg.is_encoder_decoder:
        if encoder_tokens is None:
            raise ValueError("encoder-decoder models need encoder_tokens")
        encoder_tokens = jnp.asarray(encoder_tokens, jnp.int32)
        check_tokens(cfg, encoder_tokens)
        if encoder_mask is None:
            encoder_mask = jnp.ones(encoder_tokens.shape, bool)
    if max_new_tokens == 0:
        return prompt
    if rng is None:
        rng = jax.random.key(0)
    run = _compiled(cfg, total=total, max_new_tokens=max_new_tokens, temperature=float(temperature), top_k=top_k,
                    top_p=top_p, eos_id=eos_id)
    return run(nn.meta.unbox(params), prompt, rng, encoder_tokens, encoder_mask)


@functools.lru_cache(maxsize=32)
def _compiled(cfg, *, total, max_new_tokens, temperature, top_k, top_p, eos_id):
    """One jitted program per (config, lengths, sampling settings): prefill + scan over steps."""
    model = build(cfg).clone(decode_len=total)

    def forward(variables, tokens, *, encoder_tokens=None, encoder_mask=None):
        if cfg.is_encoder_decoder:
            return model.apply(variables, encoder_tokens, tokens, encoder_mask=encoder_mask, mutable=["cache"])
        return model.apply(variables, tokens, mutable=["cache"])

    def pick(logits, key):
        return sample(logits, key, temperature, top_k=top_k, top_p=top_p)

    @jax.jit
    def run(params, prompt, rng, encoder_tokens, encoder_mask):
        logits, state = forward({"params": params}, prompt, encoder_tokens=encoder_tokens,
                                encoder_mask=encoder_mask)
        rng, key = jax.random.split(rng)
        first = pick(logits[:, -1], key)
        done = jnp.zeros(first.shape, bool) if eos_id is None else first == eos_id

        def step(carry, _):
            cache, token, rng, done = carry
            rng, key = jax.random.split(rng)
            # Later steps pass no encoder input: cross-attention keys and the mask are in the cache.
            logits, state = forward({"params": params, "cache": cache}, token[:, None])
            nxt = pick(logits[:, -1], key)
            if eos_id is not None:
                nxt = jnp.where(done, eos_id, nxt)
                done = done | (nxt == eos_id)
            return (state["cache"], nxt, rng, done), nxt

        _, rest = jax.lax.scan(step, (state["cache"], first, rng, done), None, length=max_new_tokens - 1)
        return jnp.concatenate([prompt, first[:, None], rest.T], axis=1)

    return run


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
