"""Multi-head attention with every attention knob: MHA/GQA/MQA, latent attention (zoo.layers.latent), QK-norm,
q/k/v clipping, soft-capping, sliding windows, chunks, attention sinks, positions (RoPE, relative bias, ALiBi,
Transformer-XL), causal/bidirectional/cross, document masking (segment ids), and a KV cache whose local layers are
ring buffers of `sliding_window_size` slots.

The cache stores each slot's absolute position per row (-1: empty or padding), so masks, relative biases
and left-padded batches all follow from positions; a decode step writes its key in place and attends over
the cache (no per-step copy of the whole cache). What q, k and v then become (scores, masks, softmax . v) is
zoo.layers.attend.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from zoo.config import ModelConfig
from zoo.layers import flash as flash_lib
from zoo.layers import latent as latent_lib
from zoo.layers import positions as pos_lib
from zoo.layers.attend import attend, dense_mask, masked_scores, position_mask, resolve_impl
from zoo.layers.dense import dense
from zoo.layers.init import dtype_of, initializer
from zoo.layers.norms import Norm

# position_mask (defined in zoo.layers.attend) listed: notebook 05 imports it from here.
__all__ = ["Attention", "cache_size", "cache_width", "position_mask", "temperature"]


def cache_size(cfg: ModelConfig, kind: str, decode_len: int) -> int:
    """Slots in a layer's KV cache: local layers never need more than their window, chunked ones than a chunk
    (ModelConfig requires each size when the pattern has such layers)."""
    size = {"local": cfg.sliding_window_size, "chunked": cfg.attention_chunk_size}.get(kind.removesuffix("_nope"))
    return decode_len if size is None else min(size, decode_len)


def cache_width(cfg: ModelConfig) -> int:
    """Numbers a layer's KV cache holds per token: a key and a value per KV head, or under latent attention the
    latent and the shared RoPE key (DeepSeek-V2, Table 1: (d_c + d_h^R) l per token over l layers)."""
    if cfg.kv_latent_dim:
        return cfg.kv_latent_dim + cfg.rope_head_dim
    return 2 * cfg.num_kv_heads * cfg.head_dim


def temperature(cfg: ModelConfig, positions):
    """[B or 1, T, 1, 1]: Llama 4's query temperature at absolute positions, 1 + scale ln(1 + floor((p + 1) / floor))
    (transformers models/llama4/modeling_llama4.py, Llama4TextAttention.forward): 1 within the first floor tokens,
    growing with the log of the length past them, so that distant keys keep their share of a longer softmax."""
    steps = jnp.floor((positions.astype(jnp.float32) + 1.0) / cfg.attention_temperature_floor)
    return (1.0 + cfg.attention_temperature_scale * jnp.log1p(steps))[..., None, None]


class Attention(nn.Module):
    """Self- or cross-attention. x: [B, T, d_model] -> [B, T, d_model].

    `kind` is this layer's entry of `attention_pattern`; `decode_len` switches on the KV cache (the
    'cache' collection) sized for that many tokens. positions: int [B or 1, T] (-1: padding);
    segment_ids: int [B, T] or None, keys of another segment (packed document) are masked.
    With the 'intermediates' collection mutable, sows `max_logit`: the largest unmasked pre-softmax logit.
    """

    cfg: ModelConfig
    kind: str = "global"
    causal: bool = True
    cross: bool = False
    decode_len: int | None = None
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, positions, cache_index=None, rel_table=None, kv_input=None, kv_mask=None, segment_ids=None):
        cfg = self.cfg
        local = self.kind.startswith("local")
        use_positions = not self.kind.endswith("_nope") and not self.cross
        rope = use_positions and cfg.position_embedding == "rope"
        decoding = self.decode_len is not None
        if cfg.kv_latent_dim:
            q, k, v, k_pos, value_up = self._latent(x, positions, cache_index, rope)
        else:
            (q, k, v, k_pos), value_up = self._qkv(x, positions, cache_index, rope, kv_input), None

        if cfg.attention_temperature_floor and self.kind.endswith("_nope"):
            q = q * temperature(cfg, positions).astype(q.dtype)
        window = None
        if local:
            w = cfg.sliding_window_size - 1
            window = (w, 0) if self.causal else (w, w)
        chunk = cfg.attention_chunk_size if self.kind.startswith("chunked") else None
        scale = cfg.query_scale if cfg.query_scale is not None else cfg.head_dim**-0.5
        # Biases that positions determine, as fn(params, q_pos, k_pos): flash attention computes them per block.
        bias_fn, bias_params, bias = None, None, None
        if use_positions and cfg.position_embedding == "relative_bias":
            if not cfg.relative_bias_shared:
                rel_table = pos_lib.relative_table(self, cfg)
            bias_fn = functools.partial(pos_lib.relative_bias, cfg, bidirectional=not self.causal)
            bias_params = rel_table
        elif use_positions and cfg.position_embedding == "alibi":
            bias_fn = lambda _, q_pos, k_pos: pos_lib.alibi_bias(cfg.num_heads, q_pos, k_pos)  # noqa: E731
        elif use_positions and cfg.position_embedding == "transformer_xl":
            bias = scale * self._transformer_xl(q, k, positions, k_pos)

        # Masks from the token order (is_causal / window / chunk: masked blocks skipped) only when keys are the
        # queries' own tokens; chunks then count from the row's first token, as transformers' cache_position does.
        aligned = not self.cross and not decoding and kv_mask is None
        causal = self.causal and not self.cross
        fused = (window, chunk) if aligned else (None, None)
        segments = None if self.cross else segment_ids
        if segments is not None and decoding:
            raise ValueError("segment_ids are for training on packed documents, not for cached decoding")
        if kv_mask is not None:
            k_pos = jnp.where(kv_mask, k_pos, -1)  # a hidden key, as padding is
        dropout = None
        if not self.deterministic and cfg.attention_dropout > 0:
            dropout = nn.Dropout(cfg.attention_dropout, deterministic=False)
        common = dict(
            scale=scale, soft_cap=cfg.attn_logits_soft_cap, sinks=self._sinks() if cfg.attention_sinks else None
        )
        impl = resolve_impl(cfg, q.shape[1])
        # Flash attention unless the softmax needs the exact path: dropout on its probabilities or a bias that depends
        # on the queries (Transformer-XL); a one-token decoding step has nothing to split into blocks.
        flash = impl == "flash" and dropout is None and bias is None and q.shape[1] > 1
        probe = self.is_mutable_collection("intermediates")
        mask = None
        if not flash or probe:  # the exact path's (and the max-logit probe's) dense bias and mask
            if bias_fn is not None:
                bias = bias_fn(bias_params, positions, k_pos)
            mask = dense_mask(positions, k_pos, aligned, causal, window, chunk, segments)
        if probe:
            self._sow_max_logit(q, k, scale, bias, mask, aligned and causal, *fused)
        if flash:
            out = flash_lib.flash_attention(
                q,
                k,
                v,
                **common,
                q_pos=positions,
                k_pos=k_pos,
                causal=causal,
                window=window,
                chunk=chunk,
                aligned=aligned,
                q_segments=segments,
                k_segments=segments,
                bias_fn=bias_fn,
                bias_params=bias_params,
                block=flash_lib.block_size(q.shape[1]),
            )
        else:
            out = attend(
                q,
                k,
                v,
                **common,
                mask=mask,
                bias=bias,
                is_causal=aligned and causal,
                window=fused[0],
                impl="xla" if impl == "flash" else impl,
                dropout=dropout,
                chunk=fused[1],
            )
        if value_up is not None:
            out = latent_lib.values_from_latent(cfg, value_up, out)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
        out = dense(
            cfg,
            features=cfg.d_model,
            axes=("heads", "head_dim", "embed"),
            role="o",
            use_bias=cfg.attention_out_bias,
            name="out",
            contract=(-2, -1),
        )(out)
        return checkpoint_name(out, "attention_out")

    def _qkv(self, x, positions, cache_index, rope, kv_input):
        """Queries, keys, values and the keys' positions (the cache's when decoding)."""
        cfg = self.cfg
        q = dense(
            cfg,
            features=(cfg.num_heads, cfg.head_dim),
            axes=("embed", "heads", "head_dim"),
            role="q",
            use_bias=cfg.attention_bias,
            name="query",
        )(x)
        q = self._qk_norm(self._clip(q), name="query_norm", heads_axis="heads")
        if self.cross:
            return q, *self._cross_keys(kv_input)
        k, v = self._project_kv(x)
        k = self._qk_norm(k, name="key_norm", heads_axis="kv_heads")
        if rope:
            q, k = self._rope(q, positions), self._rope(k, positions)
        if self.decode_len is None:
            return q, k, v, positions
        return q, *self._update_cache(k, v, positions, cache_index)

    def _latent(self, x, positions, cache_index, rope):
        """Latent attention's queries, keys, values and key positions (zoo.layers.latent), and W_uv when the
        values are still the latent (decoding: the cache is attended over without expanding it)."""
        cfg = self.cfg
        q = latent_lib.queries(cfg, x)
        latent, rope_key = latent_lib.latent_keys(cfg, x)
        if rope:
            nope = cfg.head_dim - cfg.rope_head_dim
            q = jnp.concatenate([q[..., :nope], self._rope(q[..., nope:], positions)], axis=-1)
            rope_key = self._rope(rope_key, positions)
        kernel = latent_lib.up_kernel(cfg)
        if self.decode_len is None:
            return q, *latent_lib.expand(cfg, kernel, latent, rope_key), positions, None
        names, axes = ("cached_latent", "cached_rope_key"), ("batch", None, "length", "latent")
        latent, rope_key, k_pos = self._update_cache(latent, rope_key, positions, cache_index, names, axes)
        return *latent_lib.absorb(cfg, kernel, q, latent, rope_key), k_pos, kernel

    def _rope(self, x, positions):
        """x [B, T, heads, dims] with its first cfg.rotary_dim dims rotated by this layer's RoPE."""
        cfg, local = self.cfg, self.kind.startswith("local")
        theta = cfg.rope_local_theta if (local and cfg.rope_local_theta) else cfg.rope_theta
        scaled = cfg.rope_scaling_local or not local
        inv_freq = pos_lib.rope_frequencies(cfg, theta, scaled=scaled)
        scale = pos_lib.rope_attention_factor(cfg, scaled)
        return pos_lib.apply_rope(x, positions, inv_freq, cfg.rope_interleaved, scale)

    def _sinks(self):
        """[heads] float32: each head's sink logit, drawn N(0, init_std) as transformers'
        GptOssPreTrainedModel._init_weights draws them."""
        cfg = self.cfg
        init = nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), ("heads",))
        return self.param("sinks", init, (cfg.num_heads,), dtype_of(cfg.param_dtype)).astype(jnp.float32)

    def _sow_max_logit(self, q, k, scale, bias, mask, is_causal, window, chunk):
        """The largest logit the softmax sees (what QK-norm and soft-capping bound): recomputed here, only
        when asked for, since the fused attention never exposes its scores."""
        cap = self.cfg.attn_logits_soft_cap
        logits = masked_scores(q, k, scale, cap, bias, mask, is_causal, window, -jnp.inf, chunk)
        self.sow("intermediates", "max_logit", jnp.max(logits))

    def _project_kv(self, x):
        cfg = self.cfg
        axes = ("embed", "kv_heads", "head_dim")
        shape = (cfg.num_kv_heads, cfg.head_dim)
        k = dense(cfg, features=shape, axes=axes, role="k", use_bias=cfg.attention_bias, name="key")(x)
        v = dense(cfg, features=shape, axes=axes, role="v", use_bias=cfg.attention_bias, name="value")(x)
        return self._clip(k), self._clip(v)

    def _clip(self, x):
        """clip_qkv: a projection's output clamped to [-c, c] (DBRX), before QK-norm and RoPE."""
        c = self.cfg.clip_qkv
        return x if c is None else jnp.clip(x, -c, c)

    def _transformer_xl(self, q, k, q_pos, k_pos):
        """Dai 2019 §3.3's position terms with this layer's own W_r (a bias-free d_model -> heads x head_dim
        projection of the sinusoids R) and global biases u, v [heads, head_dim]; keys are the cached ones
        when decoding, so query i and key j always meet at distance i - j."""
        cfg = self.cfg
        lo, table = pos_lib.relative_sinusoids(cfg, causal=self.causal)
        r = dense(
            cfg,
            features=(cfg.num_heads, cfg.head_dim),
            axes=("embed", "heads", "head_dim"),
            role="k",
            use_bias=False,
            name="position_key",
        )(table)
        u, v = (
            self.param(
                name,
                nn.with_logical_partitioning(initializer(cfg, "relative"), ("heads", "head_dim")),
                (cfg.num_heads, cfg.head_dim),
                dtype_of(cfg.param_dtype),
            )
            for name in ("content_bias", "position_bias")
        )
        k = jnp.repeat(k, cfg.num_heads // cfg.num_kv_heads, axis=2)  # query head h reads kv group h // group
        return pos_lib.transformer_xl_bias(q, k, r, u, v, q_pos, k_pos, lo)

    def _qk_norm(self, x, *, name, heads_axis):
        """Per-head norm (Gemma 3; Command R+'s with a gain per head; Llama 4's without a gain), or OLMo 2's over the
        whole projection."""
        if self.kind.endswith("_nope") and not self.cfg.qk_norm_nope_layers:
            return x
        if self.cfg.qk_norm == "per_head_no_gain":
            # x / RMS(x): RoPE rotates pairs, keeping the RMS, so normalising before RoPE (here) equals Llama 4's after.
            h = x.astype(jnp.float32)
            return (h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.cfg.norm_eps)).astype(x.dtype)
        if self.cfg.qk_norm == "per_head":
            return Norm(self.cfg, axes=("head_dim",), name=name)(x)
        if self.cfg.qk_norm == "per_head_untied":
            return Norm(self.cfg, axes=(heads_axis, "head_dim"), stat_axes=1, name=name)(x)
        if self.cfg.qk_norm == "full":
            return Norm(self.cfg, axes=(heads_axis, "head_dim"), name=name)(x)
        return x

    def _cross_keys(self, encoded):
        """Keys/values over the encoder output; when decoding they are computed once and cached."""
        if self.decode_len is not None and self.has_variable("cache", "cross_key"):
            k = self.get_variable("cache", "cross_key")
            v = self.get_variable("cache", "cross_value")
        else:
            k, v = self._project_kv(encoded)
            if self.decode_len is not None:
                self.put_variable("cache", "cross_key", k)
                self.put_variable("cache", "cross_value", v)
        return k, v, jnp.arange(k.shape[1])[None]

    def _update_cache(
        self,
        k,
        v,
        positions,
        cache_index,
        names=("cached_key", "cached_value"),
        axes=("batch", "kv_heads", "length", "head_dim"),
    ):
        """Write the new keys (the i-th token ever written goes to slot i % size) and return what to attend
        over: the cache itself when the new keys fit without overwriting a slot an earlier query of the same
        call still needs (always for one decode step, and in global layers, whose cache holds every token);
        else (a ring-buffer layer's prefill) the old cache followed by the new keys.

        Keys and values are stored heads-major, [B, KV, slots, hd], the layout the attention matmuls read
        (batch and head dimensions first): stored as [B, slots, KV, hd], XLA copied each layer's whole cache
        into that layout at every step (57% of decode op time on CPU, benchmarks/RESULTS.md). Latent attention
        stores its latent and shared RoPE key here as one key and one value head (`names`, logical `axes`)."""
        size = cache_size(self.cfg, self.kind, self.decode_len)
        batch, steps, kv_heads, head_dim = k.shape
        heads_major = lambda a: a.transpose(0, 2, 1, 3)  # noqa: E731  [B, T, KV, hd] <-> [B, KV, T, hd]
        shape = (batch, kv_heads, size, head_dim)
        cached_k = self.variable("cache", names[0], jnp.zeros, shape, k.dtype)
        cached_v = self.variable("cache", names[1], jnp.zeros, (*shape[:3], v.shape[-1]), v.dtype)
        cached_pos = self.variable("cache", "cached_positions", jnp.full, (batch, size), -1, jnp.int32)
        positions = jnp.broadcast_to(positions, (batch, steps)).astype(jnp.int32)
        old = (heads_major(cached_k.value), heads_major(cached_v.value), cached_pos.value)
        writes = min(steps, size)  # a prompt longer than the ring keeps only its newest `size` keys
        if steps == 1 or size == self.decode_len:
            start = cache_index % size if size < self.decode_len else cache_index
            write = lambda buf, new, axis: jax.lax.dynamic_update_slice_in_dim(buf, new, start, axis)  # noqa: E731
        else:
            slots = (cache_index + jnp.arange(steps - writes, steps)) % size
            write = lambda buf, new, axis: buf.at[(slice(None),) * axis + (slots,)].set(  # noqa: E731
                jax.lax.slice_in_dim(new, steps - writes, steps, axis=axis)
            )
        cached_k.value = nn.with_logical_constraint(write(cached_k.value, heads_major(k), 2), axes)
        cached_v.value = nn.with_logical_constraint(write(cached_v.value, heads_major(v), 2), axes)
        cached_pos.value = write(cached_pos.value, positions, 1)
        if steps == 1 or size == self.decode_len:
            return heads_major(cached_k.value), heads_major(cached_v.value), cached_pos.value
        return tuple(jnp.concatenate([a, b], axis=1) for a, b in zip(old, (k, v, positions), strict=True))
