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
    "squared_relu": lambda x: jnp.square(jax.nn.relu(x)),  # Primer (So 2021), Nemotron-4
    "linear": lambda x: x,
}


class Mlp(nn.Module):
    """x: [B, T, d_model] -> [B, T, d_model]. Gated when `mlp_activations` has two entries:
    act0(x wi_0) * act1(x wi_1) -> wo (wi_0 is the gate of SwiGLU/GeGLU, wi_1 the linear branch)."""

    cfg: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        branches = []
        for i, act in enumerate(cfg.mlp_activations):
            name = f"wi_{i}" if cfg.is_gated else "wi"
            h = dense(cfg, features=cfg.d_ff, axes=("embed", "mlp"), role="mlp_in", use_bias=cfg.mlp_bias, name=name)(x)
            branches.append(ACTIVATION_FNS[act](h))
        h = branches[0] * branches[1] if cfg.is_gated else branches[0]
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.mlp_hidden_dropout, deterministic=self.deterministic)(h)
        out = dense(cfg, features=cfg.d_model, axes=("mlp", "embed"), role="mlp_out", use_bias=cfg.mlp_bias, name="wo")(
            h
        )
        return checkpoint_name(out, "mlp_out")
