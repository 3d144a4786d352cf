"""Initialisers per family, chosen by `init_scheme`, so a fresh model trains like the original.

Each parameter asks for its initialiser by role (what the matrix does), never by model name.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.nn import initializers as jinit

from zoo.config import ModelConfig

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str):
    return _DTYPES[name]


def _normal(std):
    return jinit.normal(stddev=std)


def _truncated_fan_in(key, shape, dtype=jnp.float32):
    """tf.truncated_normal_initializer(stddev=fan_in ** -0.5): redrawn beyond 2 std, the std not corrected."""
    return jinit.truncated_normal(stddev=shape[0] ** -0.5, lower=-2.0, upper=2.0)(key, shape, dtype)


def initializer(cfg: ModelConfig, role: str):
    """Initialiser for a parameter of the given role.

    Roles: q, k, v, o (attention projections), mlp_in, mlp_out, embed (token table), position
    (learned positions), lm_head, relative (T5 bias table). Kernels arrive flattened to 2-D
    [fan_in, fan_out] (flax's DenseGeneral does this), so fan-in is axis 0.
    """
    scheme, std = cfg.init_scheme, cfg.init_std
    fan_in = jinit.variance_scaling(1.0, "fan_in", "normal")
    if scheme == "normal":
        return _normal(std)
    if scheme == "truncated_normal":
        # OLMo 2: N(0, 0.02) cut at 3 std. jax's truncated_normal(stddev) is the pre-truncation std.
        return jinit.truncated_normal(stddev=std, lower=-3.0, upper=3.0)
    if scheme == "gpt2_scaled":
        # GPT-2 (Radford 2019 §2.3): residual-output projections scaled by 1/sqrt(#residual layers);
        # learned positions N(0, 0.01) (openai/gpt-2 src/model.py:152-153, wpe stddev=0.01).
        if role == "position":
            return _normal(0.01)
        if role in ("o", "mlp_out"):
            return _normal(std / (2 * (cfg.num_layers + cfg.is_encoder_decoder * cfg.num_decoder_layers)) ** 0.5)
        return _normal(std)
    if scheme == "xavier":
        # Vaswani 2017 (tensor2tensor): Glorot-uniform kernels, embeddings N(0, d_model^-0.5).
        if role in ("embed", "lm_head", "position"):
            return _normal(cfg.d_model**-0.5)
        if role == "relative":
            return _normal(std)
        return jinit.glorot_uniform()
    if scheme == "t5":
        # Mesh TensorFlow's T5 rules. Attention (transformer/attention.py:436-443): normal with fan-in
        # scaling, the query also absorbing 1/sqrt(head_dim) because T5 does not scale scores. MLP kernels:
        # mtf.layers.dense's default VarianceScalingInitializer (layers.py:310-364), a tf truncated normal:
        # cut at 2 std, std not corrected for the cut. The relative-bias table [heads, buckets] gets no
        # initializer (transformer_layers.py:338-340), so mtf.get_variable's default, Glorot uniform
        # (ops.py:4193-4196).
        if role == "q":
            return _normal((cfg.d_model * cfg.head_dim) ** -0.5)
        if role in ("embed",):
            return _normal(1.0)
        if role == "lm_head":
            return _normal(cfg.d_model**-0.5)
        if role == "relative":
            return jinit.glorot_uniform()
        if role in ("mlp_in", "mlp_out"):
            return _truncated_fan_in
        return fan_in
    if scheme == "fan_in":
        # PaLM §2: kernels N(0, 1/fan_in), embeddings N(0, 1).
        if role in ("embed", "position"):
            return _normal(1.0)
        if role == "relative":
            return _normal(std)
        return fan_in
    raise ValueError(f"ModelConfig.init_scheme: unknown {scheme!r}")
