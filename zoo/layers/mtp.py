"""Multi-token prediction (MTP; DeepSeek-V3, arXiv:2412.19437 §2.2, eqs. 21-25): D sequential modules beside the
model, module k predicting token i + k + 1 at position i. Module k joins its predecessor's state at i (the main
model's final-norm output for the first) with the embedding of token i + k, each normed, projects the pair back
to d_model, runs one transformer block (the stack's last layer kind) and a norm, and the model's own output head
gives its logits. The modules add a training signal; the model's logits, its generation and its exports do not
read them.

The join's order and the state the first module reads are the released weights' (DeepSeek-V3's layer 61 as
vLLM's model_executor/models/deepseek_mtp.py and Megatron-LM's multi_token_prediction.py run it):
eh_proj([enorm(embedding); hnorm(state)]), with the state the main model's normalised output.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from zoo.config import ModelConfig
from zoo.layers.block import Block
from zoo.layers.dense import dense
from zoo.layers.norms import Norm
from zoo.layers.stack import REMAT_POLICIES


class MultiTokenPrediction(nn.Module):
    """One MTP module: (state [B, T, d_model], embedded [B, T, d_model]) -> (its state, that state normed for the
    output head)."""

    cfg: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, state, embedded, positions, padding=None, segment_ids=None):
        cfg = self.cfg
        joined = jnp.concatenate([Norm(cfg, name="embed_norm")(embedded), Norm(cfg, name="state_norm")(state)], -1)
        x = dense(cfg, features=cfg.d_model, axes=(None, "embed"), role="mlp_in", use_bias=False, name="join")(joined)
        block = Block if cfg.remat_policy == "none" else nn.remat(Block, policy=REMAT_POLICIES[cfg.remat_policy])
        x = block(
            cfg,
            kind=cfg.layer_kinds()[-1],
            mlp_kind=cfg.mlp_kinds()[-1],
            deterministic=self.deterministic,
            name="block",
        )(x, positions, encoder_mask=padding, segment_ids=segment_ids)
        return x, Norm(cfg, name="head_norm")(x)
