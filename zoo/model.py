"""Decoder-only and encoder-decoder models: token/position embeddings, the layer stacks (zoo.layers.stack)
and the output head; build() and the parameter pytree helpers (shapes, counts, logical axes, layouts)."""

from __future__ import annotations

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.layers import positions as pos_lib
from zoo.layers.dense import dense
from zoo.layers.init import dtype_of, initializer
from zoo.layers.moe import BALANCE_BIAS
from zoo.layers.mtp import MultiTokenPrediction
from zoo.layers.norms import Norm
from zoo.layers.stack import Stack


def _embedding(cfg: ModelConfig, *, rows: int, axis: str, role: str, features: int | None = None) -> nn.Embed:
    """A [rows, features (default d_model)] lookup table whose dims carry the logical names (axis, "embed")."""
    return nn.Embed(
        num_embeddings=rows,
        features=features or cfg.d_model,
        dtype=dtype_of(cfg.dtype),
        param_dtype=dtype_of(cfg.param_dtype),
        embedding_init=nn.with_logical_partitioning(initializer(cfg, role), (axis, "embed")),
    )


class _Transformer(nn.Module):
    """Token/position embeddings and the output head, shared by both architectures.

    `decode_len` set (by zoo.generate) turns on KV caches sized for that many tokens in total.
    """

    cfg: ModelConfig
    decode_len: int | None = None

    def _setup_io(self):
        cfg = self.cfg
        self.token_embed = _embedding(cfg, rows=cfg.vocab_size, axis="vocab", role="embed", features=cfg.embedding_dim)
        if cfg.embedding_dim != cfg.d_model:  # OPT-350m: a narrower embedding, mapped to and from the stream
            self.project_in = dense(cfg, features=cfg.d_model, axes=(None, "embed"), role="mlp_in", use_bias=False)
            self.project_out = dense(
                cfg, features=cfg.embedding_dim, axes=("embed", None), role="mlp_in", use_bias=False
            )
        if cfg.embedding_norm:
            self.embed_norm = Norm(cfg)
        if cfg.position_embedding == "learned":
            self.position_embed = _embedding(
                cfg, rows=cfg.max_seq_len + cfg.position_offset, axis="positions", role="position"
            )
        if not cfg.tie_word_embeddings:
            self.lm_head = dense(
                cfg, features=cfg.vocab_size, axes=("embed", "vocab"), role="lm_head", use_bias=cfg.lm_head_bias
            )
        self.embed_dropout = nn.Dropout(cfg.embedding_dropout)
        if self.decode_len is not None:
            self.cache_index = self.variable("cache", "index", jnp.zeros, (), jnp.int32)

    @property
    def deterministic(self) -> bool:
        """apply() without a 'dropout' rng is inference: dropout off."""
        return not self.has_rng("dropout")

    def _stack(self, num_layers, *, causal, has_cross=False):
        return Stack(
            self.cfg,
            num_layers=num_layers,
            causal=causal,
            has_cross=has_cross,
            decode_len=self.decode_len,
            deterministic=self.deterministic,
        )

    def _positions(self, tokens, positions=None):
        """Positions of `tokens` ([B, T] as given, else [1, T]: 0..T-1 after what the cache holds) and the
        cache's write offset (None without a cache). Given positions may differ per row: packed documents
        restart at 0, left-padded prompts mark their padding -1."""
        steps = tokens.shape[1]
        start = None
        if self.decode_len is not None:
            start = self.cache_index.value
            self.cache_index.value = start + steps
        if positions is not None:
            if positions.shape != tokens.shape:
                raise ValueError(f"positions must have the tokens' shape {tokens.shape}, got {positions.shape}")
            return jnp.asarray(positions, jnp.int32), start
        offset = 0 if start is None else start
        return (offset + jnp.arange(steps))[None], start

    def _embed(self, tokens, positions, *, decode_len):
        cfg = self.cfg
        check_tokens(cfg, tokens, decode_len=decode_len)
        x = self.token_embed(tokens)
        if cfg.embedding_dim != cfg.d_model:
            x = self.project_in(x)
        if cfg.scale_embeddings:
            x = x * jnp.asarray(cfg.d_model**0.5, x.dtype)
        if cfg.position_embedding == "learned":
            # Padding (-1) reads row 0 (or the offset's rows): its output is never attended to or used.
            x = x + self.position_embed(jnp.maximum(positions, 0) + cfg.position_offset)
        elif cfg.position_embedding == "sinusoidal":
            x = x + pos_lib.sinusoidal_table(positions, cfg.d_model).astype(x.dtype)
        if cfg.embedding_norm:
            x = self.embed_norm(x)
        x = self.embed_dropout(x, deterministic=self.deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def _logits(self, x):
        """[B, T, d_model] -> float32 logits [B, T, vocab]."""
        cfg = self.cfg
        if cfg.embedding_dim != cfg.d_model:
            x = self.project_out(x)
        if cfg.scale_logits_by_inv_sqrt_d_model:
            x = x * jnp.asarray(cfg.d_model**-0.5, x.dtype)
        logits = self.token_embed.attend(x) if cfg.tie_word_embeddings else self.lm_head(x)
        logits = logits.astype(jnp.float32)
        if cfg.logits_scale is not None:
            logits = logits * cfg.logits_scale
        if cfg.final_logits_soft_cap is not None:
            cap = cfg.final_logits_soft_cap
            logits = cap * jnp.tanh(logits / cap)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


class DecoderOnly(_Transformer):
    """tokens int32 [B, T] -> logits float32 [B, T, vocab_size].

    Optional, both int [B, T]: `positions` (default 0..T-1; -1 marks padding no token attends to) and
    `segment_ids` (packed documents: a token attends only to earlier tokens of its own segment). With `ahead`
    (mtp_depth > 0, training): (logits, the multi-token-prediction logits of _predict_ahead).
    """

    def setup(self):
        self._setup_io()
        self.decoder = self._stack(self.cfg.num_layers, causal=True)
        self.mtp = [MultiTokenPrediction(self.cfg, self.deterministic) for _ in range(self.cfg.mtp_depth)]

    def __call__(self, tokens, positions=None, segment_ids=None, ahead=None):
        # Given positions may mark padding (-1). Without a cache, attention's fused causal path sees only the
        # token order, so the padding goes in as a key mask, as an encoder's does (it also keeps padding out of
        # expert capacity). The cache masks by the positions it holds, and packed documents by segment.
        padding = None
        if positions is not None and segment_ids is None and self.decode_len is None:
            padding = jnp.asarray(positions) >= 0
        positions, cache_index = self._positions(tokens, positions)
        if segment_ids is not None and segment_ids.shape != tokens.shape:
            raise ValueError(f"segment_ids must have the tokens' shape {tokens.shape}, got {segment_ids.shape}")
        x = self._embed(tokens, positions, decode_len=self.decode_len)
        x = self.decoder(x, positions, cache_index=cache_index, encoder_mask=padding, segment_ids=segment_ids)
        logits = self._logits(x)
        if ahead is None and self.mtp and self.is_initializing():  # init builds the MTP modules' params too
            self._predict_ahead(x, jnp.stack([tokens] * len(self.mtp), axis=1), positions, padding, segment_ids)
        if ahead is None:
            return logits
        if not self.mtp:
            raise ValueError("tokens ahead are for multi-token prediction: this model has mtp_depth 0")
        return logits, self._predict_ahead(x, ahead, positions, padding, segment_ids)

    def _predict_ahead(self, state, ahead, positions, padding, segment_ids):
        """Multi-token prediction (zoo.layers.mtp): ahead [B, mtp_depth, T] holds token i + k at position i for
        module k = 1..mtp_depth; returns each module's float32 logits [B, mtp_depth, T, vocab] (for token i + k + 1)."""
        out = []
        for k, module in enumerate(self.mtp):
            embedded = self._embed(ahead[:, k], positions, decode_len=None)
            state, normed = module(state, embedded, positions, padding, segment_ids)
            out.append(self._logits(normed))
        return jnp.stack(out, axis=1)


class EncoderDecoder(_Transformer):
    """(encoder_tokens [B, S], decoder_tokens [B, T]) -> logits [B, T, vocab_size].

    Encoder and decoder share the token embedding (Vaswani §3.4, T5). `encoder_mask` [B, S] (True =
    real token) hides encoder padding from both encoder self-attention and cross-attention.
    """

    def setup(self):
        cfg = self.cfg
        self._setup_io()
        # No decode_len: the encoder runs once over the whole input and keeps no KV cache.
        self.encoder = Stack(cfg, num_layers=cfg.num_layers, causal=False, deterministic=self.deterministic)
        self.decoder = self._stack(cfg.num_decoder_layers, causal=True, has_cross=True)

    def encode(self, encoder_tokens, encoder_mask=None):
        """[B, S] -> encoder output [B, S, d_model]."""
        positions = jnp.arange(encoder_tokens.shape[1])[None]
        x = self._embed(encoder_tokens, positions, decode_len=None)
        return self.encoder(x, positions, encoder_mask=encoder_mask)

    def __call__(self, encoder_tokens, decoder_tokens, encoder_mask=None, decoder_positions=None):
        encoded = None
        if encoder_tokens is not None:
            if encoder_mask is None:
                encoder_mask = jnp.ones(encoder_tokens.shape, bool)
            encoded = self.encode(encoder_tokens, encoder_mask)
        if encoder_tokens is None and self.decode_len is None:
            raise ValueError("EncoderDecoder: encoder_tokens are required outside cached decoding")
        positions, cache_index = self._positions(decoder_tokens, decoder_positions)
        x = self._embed(decoder_tokens, positions, decode_len=self.decode_len)
        x = self.decoder(x, positions, cache_index=cache_index, encoded=encoded, encoder_mask=encoder_mask)
        return self._logits(x)


def check_tokens(cfg: ModelConfig, tokens, *, decode_len=None) -> None:
    """Clear errors for inputs the model cannot represent. Values are checked when concrete (outside
    jit); shapes always."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be int [batch, length], got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers, got {tokens.dtype}")
    length = decode_len if decode_len is not None else tokens.shape[1]
    if length > cfg.max_seq_len:
        raise ValueError(
            f"sequence length {length} exceeds ModelConfig.max_seq_len={cfg.max_seq_len} "
            f"(position_embedding={cfg.position_embedding!r})"
        )
    if not isinstance(tokens, jax.core.Tracer):
        values = np.asarray(tokens)
        if values.size and (values.min() < 0 or values.max() >= cfg.vocab_size):
            raise ValueError(
                f"token ids must be in [0, vocab_size={cfg.vocab_size}); got min {values.min()}, max {values.max()}"
            )


def build(cfg: ModelConfig) -> nn.Module:
    """The flax module for a config: DecoderOnly or EncoderDecoder (pure init/apply)."""
    return EncoderDecoder(cfg) if cfg.is_encoder_decoder else DecoderOnly(cfg)


def dummy_inputs(cfg: ModelConfig, batch: int = 1, length: int = 1) -> tuple:
    """Positional inputs for `init`: (tokens,) or (encoder_tokens, decoder_tokens)."""
    tokens = jnp.zeros((batch, length), jnp.int32)
    return (tokens, tokens) if cfg.is_encoder_decoder else (tokens,)


@functools.lru_cache(maxsize=256)
def abstract_params(cfg: ModelConfig):
    """Shapes of the boxed (logically partitioned) params, computed without allocating memory. Cached per config
    (tracing a preset takes ~1 s on a 2-core CPU, and counting, FLOPs, shardings and conversion each ask): read
    it, never change it."""
    model = build(cfg)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), *dummy_inputs(cfg)))["params"]


BUFFERS = (BALANCE_BIAS,)
"""Param names that no gradient trains (PyTorch's buffers): the trainer sets them after each step. Not counted
(HF's num_parameters and the published totals leave DeepSeek-V3's e_score_correction_bias out), no optimizer
update or weight decay, and no gradient expected."""


def is_buffer(names: tuple[str, ...]) -> bool:
    return names[-1] in BUFFERS


ROUTED_EXPERT_WEIGHTS = ("wi", "wi_0", "wi_1", "wo")
"""MoeMlp's stacked expert kernels and biases (its router and shared expert are used by every token)."""


def active_fraction(cfg: ModelConfig, names: tuple[str, ...]) -> float:
    """The share of the parameter at `names` (path_names) a token uses: k / E for a routed expert's weight
    (each token runs k of the E experts), else 1."""
    if len(names) >= 3 and names[-3] == "moe" and names[-2] in ROUTED_EXPERT_WEIGHTS:
        return cfg.experts_per_token / cfg.num_experts
    return 1.0


def count_params(cfg: ModelConfig, active: bool = False) -> int:
    """Exact number of parameters (BUFFERS left out), via jax.eval_shape: no memory used, works for 540B.
    active=True: the parameters one token uses, total - routed expert weights * (1 - k / E), embedding and output
    head included (the convention of Mixtral's 12.9B, DBRX's 36B, OLMoE's 1.3B); = the total for a dense model."""
    leaves = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract_params(cfg)))[0]
    total = 0
    for path, leaf in leaves:
        if is_buffer(path_names(path)):
            continue
        size = int(np.prod(leaf.shape, dtype=np.int64))
        # Exact in integers: a routed weight's leading (or, scanned, second) axis is num_experts.
        if active and active_fraction(cfg, path_names(path)) < 1:
            size = size * cfg.experts_per_token // cfg.num_experts
        total += size
    return total


def init_params(cfg: ModelConfig, rng) -> dict:
    """Freshly initialised params as plain arrays (logical-axis boxes removed)."""
    model = build(cfg)
    return nn.meta.unbox(model.init(rng, *dummy_inputs(cfg))["params"])


def logical_axes(cfg: ModelConfig):
    """The params pytree with a PartitionSpec of logical axis names at every leaf."""
    return nn.get_partition_spec(abstract_params(cfg))


def path_names(path) -> tuple[str, ...]:
    """A pytree key path (from jax.tree_util.tree_flatten_with_path) as plain names:
    ("decoder", "cycles", "block_0", "attention", "query", "kernel")."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


_UNROLLED = re.compile(r"^(.*cycle)_(\d+)$")  # cycle_3, prefix_cycle_0


def stack_layers(params):
    """Convert unrolled params (`cycle_0`, `cycle_1`, ...; `prefix_cycle_0`, ...) to the scanned layout (`cycles`,
    `prefix_cycles`: one leading axis each)."""

    def convert(tree):
        if not isinstance(tree, dict):
            return tree
        groups: dict[str, list[tuple[int, str]]] = {}
        for key in tree:
            if (match := _UNROLLED.match(key)) is not None:
                groups.setdefault(match[1], []).append((int(match[2]), key))
        out = {k: convert(v) for k, v in tree.items() if _UNROLLED.match(k) is None}
        for group, keys in groups.items():
            out[f"{group}s"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[tree[k] for _, k in sorted(keys)])
        return out

    return convert(params)


def unstack_layers(params):
    """Convert scanned params (`cycles`, `prefix_cycles` with a leading axis) to the unrolled layout (`cycle_i`,
    `prefix_cycle_i`)."""

    def convert(tree):
        if not isinstance(tree, dict):
            return tree
        out = {}
        for key, value in tree.items():
            if key not in ("cycles", "prefix_cycles"):
                out[key] = convert(value)
                continue
            for i in range(jax.tree_util.tree_leaves(value)[0].shape[0]):
                out[f"{key[:-1]}_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], value)
        return out

    return convert(params)
