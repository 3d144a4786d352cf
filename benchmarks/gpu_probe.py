"""The GPU checks behind RESULTS.md's accelerator notes (one H200 session, 2026-11-28), kept runnable:

    PYTHONPATH=. python -m benchmarks.gpu_probe              # JAX's default matmul precision
    JAX_DEFAULT_MATMUL_PRECISION=highest PYTHONPATH=. python -m benchmarks.gpu_probe

1. Logits and greedy tokens of zoo against HF LlamaForCausalLM on the same GPU and weights: 110M in float32,
   1.17B in bf16 (XLA and cuDNN attention), and zoo bf16 against zoo float32 on the same weights, which
   measures how often bf16 rounding alone flips a greedy pick.
2. The 1.17B train step's variants: remat none / save_dots, batch 4 / 8, cuDNN / XLA attention, and the
   Gemma-2-style step with its attention soft-cap off (so cuDNN can run it).

Without a GPU it runs the same code at the "smoke" size on the CPU. Writes $OUT/probe.json (or
benchmarks/results/gpu-probe-local.json).
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import zoo
from zoo.flops import flops_per_step

from benchmarks import models
from benchmarks.common import interleave
from benchmarks.decode import setup
from benchmarks.train import zoo_step


def _top1(a, b) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def parity(size: str, dtype: str, device: str, new: int = 32) -> dict:
    import torch

    cfg = models.llama(size, max_seq_len=2048, init_std=0.1, dtype=dtype, param_dtype=dtype)
    params = zoo.init_params(cfg, jax.random.key(0))
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 128)).astype(np.int32)
    _, hf = setup(cfg, params, "gpu" if device == "cuda" else "cpu")
    with torch.no_grad():
        hf_logits = hf(torch.from_numpy(ids.astype(np.int64)).to(device)).logits.float().cpu().numpy()
    out = {"logit_std": float(hf_logits.std())}
    for impl in ("xla", "cudnn") if dtype != "float32" and device == "cuda" else ("xla",):
        logits = np.asarray(zoo.build(cfg.replace(attention_impl=impl)).apply({"params": params}, ids), np.float32)
        out[f"zoo_{impl}_vs_hf_max_abs"] = float(np.abs(logits - hf_logits).max())
        out[f"zoo_{impl}_vs_hf_top1"] = _top1(logits, hf_logits)
    cfg32 = cfg.replace(dtype="float32", param_dtype="float32", attention_impl="xla")
    logits32 = np.asarray(
        zoo.build(cfg32).apply({"params": jax.tree.map(lambda x: x.astype(jnp.float32), params)}, ids), np.float32
    )
    own = np.asarray(zoo.build(cfg).apply({"params": params}, ids), np.float32)
    out["zoo_vs_zoo_float32_top1"] = _top1(own, logits32)
    tokens = np.asarray(zoo.generate(zoo.build(cfg), params, ids, new))
    with torch.inference_mode():
        prompt = torch.from_numpy(ids.astype(np.int64)).to(device)
        hf_tokens = (
            hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
            .cpu()
            .numpy()
        )
    out["generate_identical_fraction"] = float((tokens == hf_tokens)[:, 128:].mean())
    return out


def train_variant(family: str, size: str, seq: int, batch: int, **cfg_values) -> dict:
    cfg = models.FAMILIES[family](size, max_seq_len=seq, dtype="bfloat16", **cfg_values)
    run, compile_s = zoo_step(cfg, batch, seq)
    step = float(np.median(interleave({"step": run}, reps=6)["step"]))
    return {
        "compile_s": compile_s,
        "step_s": step,
        "tokens_per_s": batch * seq / step,
        "mfu_of_989_tflops": flops_per_step(cfg, batch, seq) / step / 989e12,
    }


def main() -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    big, mid, seq = ("1b", "110m", 2048) if device == "cuda" else ("smoke", "smoke", 128)
    res = {"device": str(jax.devices()[0]), "matmul_precision": jax.config.jax_default_matmul_precision}
    out = (
        Path(os.environ["OUT"]) / "probe.json"
        if os.environ.get("OUT")
        else Path(__file__).parent / "results" / "gpu-probe-local.json"
    )

    def record(key, fn):
        start = time.perf_counter()
        try:
            res[key] = fn()
        except Exception as e:  # noqa: BLE001  (keep the other checks)
            res[key] = {"error": f"{type(e).__name__}: {e}"[:300]}
        res[key]["s"] = time.perf_counter() - start
        print(key, res[key], flush=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    record(f"parity_{mid}_float32", lambda: parity(mid, "float32", device))
    record(f"parity_{big}_bfloat16", lambda: parity(big, "bfloat16", device))
    for batch, remat, impl in (
        (4, "save_dots", "cudnn"),
        (4, "none", "cudnn"),
        (8, "save_dots", "cudnn"),
        (4, "save_dots", "xla"),
    ):
        record(
            f"train_llama_b{batch}_{remat}_{impl}",
            lambda b=batch, r=remat, i=impl: train_variant("llama", big, seq, b, remat_policy=r, attention_impl=i),
        )
    record(
        "train_gemma2_b4_save_dots_no_softcap_cudnn",
        lambda: train_variant(
            "gemma2", big, seq, 4, remat_policy="save_dots", attention_impl="cudnn", attn_logits_soft_cap=None
        ),
    )


if __name__ == "__main__":
    main()
