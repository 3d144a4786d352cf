"""LayerNorm and RMSNorm behind one module, so every norm knob (type, scale, bias, Gemma's 1+scale) composes."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from zoo.config import ModelConfig
from zoo.layers.init import dtype_of


class Norm(nn.Module):
    """Normalises the last axis. `axes` are the logical names of the normalised dims (their sizes come
    from the input); RMSNorm is Zhang & Sennrich 2019, T5's scale-only LayerNorm is the same thing."""

    cfg: ModelConfig
    axes: tuple[str, ...] = ("embed",)
    stat_axes: int | None = None  # trailing axes the statistics run over; None = all of `axes`

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        n = len(self.axes)
        shape = x.shape[-n:]
        reduce = tuple(range(-(self.stat_axes or n), 0))
        # Statistics in float32 whatever the compute dtype: bf16 variance loses too many bits.
        h = x.astype(jnp.float32)
        if cfg.norm_type == "layernorm":
            h = h - h.mean(axis=reduce, keepdims=True)
        h = h * jnp.reciprocal(jnp.sqrt(jnp.mean(h * h, axis=reduce, keepdims=True) + cfg.norm_eps))
        param_dtype = dtype_of(cfg.param_dtype)
        if cfg.norm_use_scale:
            init = nn.initializers.zeros if cfg.norm_scale_plus_one else nn.initializers.ones
            scale = self.param("scale", nn.with_logical_partitioning(init, self.axes), shape, param_dtype)
            scale = scale.astype(jnp.float32)
            h = h * (1.0 + scale if cfg.norm_scale_plus_one else scale)
        if cfg.norm_use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes), shape, param_dtype
            )
            h = h + bias.astype(jnp.float32)
        return h.astype(x.dtype)
