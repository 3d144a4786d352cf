"""Model FLOPs of a training step: what MFU divides by the peak (PaLM, Chowdhery et al. 2022, App. B).

Model FLOPs count the matmuls of one forward + backward pass (backward = 2x forward), not what the hardware
ends up doing: rematerialisation does not raise MFU.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from zoo.config import ModelConfig
from zoo.model import abstract_params, active_fraction, path_names


def is_matmul_kernel(names: tuple[str, ...]) -> bool:
    """Whether the parameter at `names` (zoo.model.path_names) is a dense kernel applied to every token:
    the q/k/v/o projections, the MLP's wi/wo, an untied head. Not: norm gains and biases, dense biases
    (an add, not a matmul), Transformer-XL's u, v (added to q) and its W_r ("position_key", a kernel, but
    applied to the fixed max_seq_len-row sinusoid table once per forward pass, not to each token: about
    2 * |W_r| * max_seq_len FLOPs a layer, whatever the batch), T5's relative-bias tables and the token
    and position embeddings (lookups)."""
    return names[-1] == "kernel" and names[-2] != "position_key"


def matmul_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameters that multiply every token's activations in a matmul (dense kernels, is_matmul_kernel),
    by where they are applied.

    {"encoder": ..., "decoder": ..., "cross_kv": ..., "head": ...}: "decoder" is the decoder stack's kernels
    (the whole stack of a decoder-only model; of an MoE layer, the router, the shared expert and k of the E
    routed experts, what one token multiplies) minus the cross-attention key/value projections ("cross_kv",
    applied to encoder tokens); "head" is the output projection embedding_dim x vocab (tied or not), with
    OPT-350m's project_in/project_out when embedding_dim != d_model. Embedding lookups, norm gains, biases
    and Transformer-XL's position parameters are left out (see is_matmul_kernel).
    """
    projections = 2 * cfg.d_model * cfg.embedding_dim if cfg.embedding_dim != cfg.d_model else 0
    out = {"encoder": 0, "decoder": 0, "cross_kv": 0, "mtp": 0}
    out["head"] = cfg.embedding_dim * cfg.vocab_size + projections
    for path, leaf in jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract_params(cfg)))[0]:
        names = path_names(path)
        stack = "mtp" if names[0].startswith("mtp_") else names[0]
        if stack not in ("encoder", "decoder", "mtp") or not is_matmul_kernel(names):
            continue
        size = int(np.prod(leaf.shape, dtype=np.int64))
        if active_fraction(cfg, names) < 1:  # a token runs k of the E routed experts
            size = size * cfg.experts_per_token // cfg.num_experts
        if "cross_attention" in names and names[-2] in ("key", "value"):
            out["cross_kv"] += size
        else:
            out[stack] += size
    return out


def _attended(cfg: ModelConfig, num_layers: int, queries_see: int, kinds=None) -> int:
    """Sum over layers (`kinds`, default the stack's) of the keys each query is scored against (a local layer sees
    at most its window, a chunked one its chunk)."""
    bound = {"local": cfg.sliding_window_size or queries_see, "chunked": cfg.attention_chunk_size or queries_see}
    kinds = cfg.layer_kinds(num_layers) if kinds is None else kinds
    return sum(min(queries_see, bound.get(kind.removesuffix("_nope"), queries_see)) for kind in kinds)


def flops_per_step(cfg: ModelConfig, batch_size: int, seq_len: int, decoder_len: int | None = None) -> float:
    """Model FLOPs of one training step (forward + backward) on `batch_size` sequences.

    Decoder-only, with T = seq_len, N = matmul params of the stack, V the vocab, d_attn = num_heads * (head_dim +
    value_head_dim) / 2 (num_heads * head_dim but under latent attention, whose values are narrower):

        per token = 6 * (N + d_model * V) + 12 * d_attn * sum over layers of K_l

    (with mtp_depth D, N counts the D multi-token-prediction modules, d_model * V is D + 1 heads, and their D
    blocks join the layers)

    6N: each param does one multiply-add (2 FLOPs) per token forward, twice that backward (Kaplan 2020).
    12 * d_attn * K: scores q.k and the weighted sum of values, 2 * d_attn * K FLOPs each forward, x3 for
    forward + backward, where K_l = T keys per query (PaLM App. B counts the full T x T square even for
    causal attention) or min(T, window) for a local layer, min(T, chunk) for a chunked one.

    Encoder-decoder, with S = seq_len encoder tokens and T = decoder_len decoder tokens, per sequence:

        6 * (N_enc * S + N_dec * T + N_cross_kv * S + d_model * V * T)
        + 12 * d_attn * (S * sum_enc K_l(S) + T * sum_dec K_l(T) + T * L_dec * S)
    """
    n = matmul_params(cfg)
    d_attn = cfg.num_heads * (cfg.head_dim + cfg.value_head_dim) / 2
    if not cfg.is_encoder_decoder:
        t = seq_len
        per_seq = 6 * (n["decoder"] + n["head"]) * t + 12 * d_attn * t * _attended(cfg, cfg.num_layers, t)
        # Multi-token prediction: each module's join, block and the shared head, on every position.
        mtp_kinds = cfg.layer_kinds()[-1:] * cfg.mtp_depth
        per_seq += 6 * (n["mtp"] + cfg.mtp_depth * n["head"]) * t + 12 * d_attn * t * _attended(cfg, 0, t, mtp_kinds)
    else:
        s, t = seq_len, decoder_len or seq_len
        per_seq = 6 * ((n["encoder"] + n["cross_kv"]) * s + (n["decoder"] + n["head"]) * t)
        per_seq += (
            12
            * d_attn
            * (
                s * _attended(cfg, cfg.num_layers, s)
                + t * _attended(cfg, cfg.num_decoder_layers, t)
                + t * cfg.num_decoder_layers * s
            )
        )
    return float(per_seq) * batch_size
