"""The one linear layer every projection uses (attention q/k/v/o, the MLP, an untied output head), and Kernel, the
same matrix bare for a caller that multiplies by it in more than one way (latent attention's up-projection)."""

from __future__ import annotations

import math

import flax.linen as nn

from zoo.config import ModelConfig
from zoo.layers.init import dtype_of, initializer


def dense(
    cfg: ModelConfig, *, features, axes, role: str, use_bias: bool, name: str | None = None, contract=-1
) -> nn.DenseGeneral:
    """A DenseGeneral whose kernel and bias carry logical axis names.

    features: int or tuple of output dims; axes: logical names of the kernel's dims (contracted input
    dims, then output dims), e.g. ("embed", "heads", "head_dim") for a [d_model] -> [heads, head_dim]
    query; role: the initializer role (zoo.layers.init.initializer); contract: the input axis or axes
    summed over. `name` may be None inside setup(), where the attribute name is used.
    """
    out_axes = axes[-len(features) :] if isinstance(features, tuple) else axes[-1:]
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


class Kernel(nn.Module):
    """A bare projection matrix [in, *out] with dense()'s initialiser (fan-in: the first dim), dtypes and logical
    axes, for a caller that multiplies by it in more than one way. Returns it in the compute dtype."""

    cfg: ModelConfig
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    role: str

    @nn.compact
    def __call__(self):
        init = initializer(self.cfg, self.role)

        def flat(key, shape, dtype):  # as DenseGeneral draws its kernels: flattened to [fan_in, fan_out]
            return init(key, (shape[0], math.prod(shape[1:])), dtype).reshape(shape)

        partitioned = nn.with_logical_partitioning(flat, self.axes)
        kernel = self.param("kernel", partitioned, self.shape, dtype_of(self.cfg.param_dtype))
        return kernel.astype(dtype_of(self.cfg.dtype))
