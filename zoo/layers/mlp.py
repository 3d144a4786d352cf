"""The position-wise feed-forward network: plain (act(xW1)W2) or gated (GLU family, Shazeer 2020)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from zoo.config import ModelConfig
from zoo.layers.dense import dense

ACTIVATION_FNS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # GELU's sigmoid approximation (Hendrycks & Gimpel 2016)
    "squared_relu": lambda x: jnp.square(jax.nn.relu(x)),  # Primer (So 2021), Nemotron-4
    "linear": lambda x: x,
}


def hidden(cfg: ModelConfig, pre) -> jax.Array:
    """The hidden units from the input projections' outputs `pre` (one per mlp_activations entry): act(z), or
    act0(gate) * (act1(linear) + mlp_glu_linear_offset) with both branches clamped by mlp_glu_limit first."""
    if not cfg.is_gated:
        return ACTIVATION_FNS[cfg.mlp_activations[0]](pre[0])
    gate, linear = pre
    if cfg.mlp_glu_limit is not None:
        gate, linear = jnp.minimum(gate, cfg.mlp_glu_limit), jnp.clip(linear, -cfg.mlp_glu_limit, cfg.mlp_glu_limit)
    act_gate, act_linear = (ACTIVATION_FNS[a] for a in cfg.mlp_activations)
    return act_gate(gate) * (act_linear(linear) + cfg.mlp_glu_linear_offset)


class Mlp(nn.Module):
    """x: [B, T, d_model] -> [B, T, d_model]. Gated when `mlp_activations` has two entries:
    act0(x wi_0) * act1(x wi_1) -> wo (wi_0 is the gate of SwiGLU/GeGLU, wi_1 the linear branch)."""

    cfg: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        pre = []
        for i in range(len(cfg.mlp_activations)):
            name = f"wi_{i}" if cfg.is_gated else "wi"
            pre.append(
                dense(cfg, features=cfg.d_ff, axes=("embed", "mlp"), role="mlp_in", use_bias=cfg.mlp_bias, name=name)(x)
            )
        h = hidden(cfg, pre)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.mlp_hidden_dropout, deterministic=self.deterministic)(h)
        out = dense(cfg, features=cfg.d_model, axes=("mlp", "embed"), role="mlp_out", use_bias=cfg.mlp_bias, name="wo")(
            h
        )
        return checkpoint_name(out, "mlp_out")
