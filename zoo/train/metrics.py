"""Throughput accounting (FLOPs per step, MFU, peak FLOP/s) and metric sinks (JSONL, TensorBoard).

MFU (model FLOPs utilisation, PaLM, Chowdhery et al. 2022, App. B) = model FLOPs per second / peak FLOP/s.
Model FLOPs count the matmuls of one forward + backward pass (backward = 2x forward), not what the
hardware ends up doing: rematerialisation does not raise MFU.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from zoo.config import ModelConfig
from zoo.model import abstract_params, path_names

# --- FLOPs -----------------------------------------------------------------------------------------------


def matmul_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameters that multiply activations, by where they are applied.

    {"encoder": ..., "decoder": ..., "cross_kv": ..., "head": ...}: "decoder" is the decoder stack (the whole
    stack of a decoder-only model) minus the cross-attention key/value projections ("cross_kv", applied to
    encoder tokens); "head" is the output projection d_model x vocab (tied or not). Embedding lookups
    (token, learned positions, T5 relative-bias tables) are not matmuls and are left out.
    """

    out = {"encoder": 0, "decoder": 0, "cross_kv": 0, "head": cfg.d_model * cfg.vocab_size}
    for path, leaf in jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract_params(cfg)))[0]:
        names = path_names(path)
        if names[0] not in ("encoder", "decoder") or "relative_bias" in names[-1]:
            continue
        size = int(np.prod(leaf.shape, dtype=np.int64))
        if "cross_attention" in names and names[-2] in ("key", "value"):
            out["cross_kv"] += size
        else:
            out[names[0]] += size
    return out


def _attended(cfg: ModelConfig, num_layers: int, queries_see: int) -> int:
    """Sum over layers of the keys each query is scored against (a local layer sees at most its window)."""
    return sum(min(queries_see, cfg.sliding_window_size) if kind.startswith("local") else queries_see
               for kind in cfg.layer_kinds(num_layers))


def flops_per_step(cfg: ModelConfig, batch_size: int, seq_len: int, decoder_len: int | None = None) -> float:
    """Model FLOPs of one training step (forward + backward) on `batch_size` sequences.

    Decoder-only, with T = seq_len, N = matmul params of the stack, V the vocab, d_attn = num_heads * head_dim:

        per token = 6 * (N + d_model * V) + 12 * d_attn * sum over layers of K_l

    6N: each param does one multiply-add (2 FLOPs) per token forward, twice that backward (Kaplan 2020).
    12 * d_attn * K: scores q.k and the weighted sum of values, 2 * d_attn * K FLOPs each forward, x3 for
    forward + backward, where K_l = T keys per query (PaLM App. B counts the full T x T square even for
    causal attention) or min(T, window) for a local layer.

    Encoder-decoder, with S = seq_len encoder tokens and T = decoder_len decoder tokens, per sequence:

        6 * (N_enc * S + N_dec * T + N_cross_kv * S + d_model * V * T)
        + 12 * d_attn * (S * sum_enc K_l(S) + T * sum_dec K_l(T) + T * L_dec * S)
    """
    n = matmul_params(cfg)
    d_attn = cfg.num_heads * cfg.head_dim
    if not cfg.is_encoder_decoder:
        t = seq_len
        per_seq = 6 * (n["decoder"] + n["head"]) * t + 12 * d_attn * t * _attended(cfg, cfg.num_layers, t)
    else:
        s, t = seq_len, decoder_len or seq_len
        per_seq = 6 * ((n["encoder"] + n["cross_kv"]) * s + (n["decoder"] + n["head"]) * t)
        per_seq += 12 * d_attn * (s * _attended(cfg, cfg.num_layers, s)
                                  + t * _attended(cfg, cfg.num_decoder_layers, t)
                                  + t * cfg.num_decoder_layers * s)
    return float(per_seq) * batch_size


# --- peak FLOP/s -------------------------------------------------------------------------------------------

# Dense peak per chip at 16 bits (bf16), from the vendors' datasheets. Matched against device_kind in order.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12),
    ("L40S", 362e12), ("A10G", 125e12), ("V100", 125e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v4", 275e12),
)
# CPU nominal: AVX2 with two FMA units does 2 x 8 fp32 lanes x 2 FLOPs = 32 FLOPs per cycle per core; at a
# nominal 3 GHz that is 96 GFLOP/s per core, times the cores this process may run on.
CPU_FLOPS_PER_CORE = 32 * 3.0e9


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_peak_flops(device: jax.Device | None = None) -> tuple[float, str]:
    """(peak FLOP/s per chip, where the number comes from) for the backend in use.

    Emulated CPU devices (--xla_force_host_platform_device_count) share one host's cores, so on CPU the
    "chip" is the whole host: `job_peak_flops` multiplies by processes, not devices.
    """
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        cores = _cores()
        return CPU_FLOPS_PER_CORE * cores, f"CPU nominal: {cores} cores x 32 fp32 FLOPs/cycle x 3 GHz"
    kind = getattr(device, "device_kind", "")
    for name, peak in PEAK_FLOPS:
        if name.lower() in kind.lower():
            return peak, f"{kind} bf16 dense datasheet peak"
    return math.nan, f"unknown device {kind!r}: set run.peak_flops for MFU"


def job_peak_flops(per_chip: float) -> float:
    """Peak FLOP/s of the whole job: per chip x chips (x hosts on CPU, whose devices share cores)."""
    if jax.devices()[0].platform == "cpu":
        return per_chip * jax.process_count()
    return per_chip * jax.device_count()


# --- sinks ---------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-able number: numpy/jax scalars to float/int, non-finite floats kept (json writes NaN)."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    value = np.asarray(value)
    return value.item() if value.size == 1 else value.tolist()


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line (killed mid-write): drop it


class MetricWriter:
    """Appends one JSON object per line to `<run_dir>/metrics.jsonl`; also TensorBoard event files under
    `<run_dir>/tensorboard` when tensorboardX is installed. Only process 0 writes."""

    def __init__(self, run_dir: str | os.PathLike, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled and jax.process_index() == 0
        self.path = Path(run_dir) / "metrics.jsonl"
        self._file = self._tb = None
        if not self.enabled:
            return
        if self.path.exists():
            # A resumed run continues the file from its checkpoint: rows a killed process logged after its last
            # checkpoint are dropped, since the resumed run computes those steps again.
            rows = self.path.read_text().splitlines(keepends=True)
            kept = [r for r in rows if r.strip() and _row_step(r) <= start_step]
            if len(kept) != len(rows):
                self.path.write_text("".join(kept))
        self._file = open(self.path, "a", buffering=1)
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            SummaryWriter = None
        if SummaryWriter is not None:
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        self._file = self._tb = None
