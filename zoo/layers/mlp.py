"""The position-wise feed-forward network: plain (act(xW1)W2) or gated (GLU family, Shazeer 2020)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from zoo.config import ModelConfig
from zoo.layers.init import dtype_of, initializer

ACTIVATION_FNS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "squared_relu": lambda x: jnp.square(jax.nn.relu(x)),  # Primer (So 2021), Nemotron-4
    "linear": lambda x: x,
}


def dense(cfg: ModelConfig, features, axes, role, use_bias, name, contract=-1):
    """A DenseGeneral whose kernel and bias carry logical axis names (kernel axes = `axes`)."""
    out_axes = axes[-len(features):] if isinstance(features, tuple) else axes[-1:]
    return nn.DenseGeneral(
        features=features,
        axis=contract,
        use_bias=use_bias,
        dtype=dtype_of(cfg.dtype),
        param_dtype=dtype_of(cfg.param_dtype),
        # rules=(): no sharding constraint when flax unboxes the kernel, which DenseGeneral does on its flat
        # 2-D shape (before the reshape to `axes`), failing under an active mesh and rules. Placement comes
        # from the logical names (zoo.sharding.param_shardings), not from this constraint.
        kernel_init=nn.with_logical_partitioning(initializer(cfg, role), axes, rules=()),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, out_axes, rules=()),
        name=name,
    )


class Mlp(nn.Module):
    """x: [B, T, d_model] -> [B, T, d_model]. Gated when `mlp_activations` has two entries:
    act0(x wi_0) * act1(x wi_1) -> wo (wi_0 is the gate of SwiGLU/GeGLU, wi_1 the linear branch)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        branches = []
        for i, act in enumerate(cfg.mlp_activations):
            name = f"wi_{i}" if cfg.is_gated else "wi"
            h = dense(cfg, cfg.d_ff, ("embed", "mlp"), "mlp_in", cfg.mlp_bias, name)(x)
            branches.append(ACTIVATION_FNS[act](h))
        h = branches[0] * branches[1] if cfg.is_gated else branches[0]
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        out = dense(cfg, cfg.d_model, ("mlp", "embed"), "mlp_out", cfg.mlp_bias, "wo")(h)
        return checkpoint_name(out, "mlp_out")
