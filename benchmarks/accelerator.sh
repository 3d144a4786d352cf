#!/usr/bin/env bash
# The accelerator benchmark: one NVIDIA GPU (sized for an H200, < 8 minutes), run from the repository root:
#
#     bash benchmarks/accelerator.sh            # = python -m benchmarks run --device gpu
#
# ~1.17B LLaMA-style and Gemma-2-style train steps (batch 4 x 2048, bf16 compute, fp32 AdamW state;
# cuDNN flash attention for LLaMA through attention_impl: cudnn), tokens/s and MFU against the chip's dense
# bf16 datasheet peak (H200 SXM: 989 TFLOP/s, NVIDIA H200 datasheet; zoo/train/metrics.py PEAK_FLOPS), the
# measured bf16 matmul rate and copy bandwidth, greedy decode tokens/s at batch 1/8/32, and remat memory;
# where torch with CUDA and transformers are installed, HF LlamaForCausalLM beside zoo on the same GPU (train:
# fp32 weights, bf16 autocast, SDPA attention; decode: bf16 weights written by zoo.hf.save, HF generate).
# Writes benchmarks/results/gpu.json (and a copy in $OUT when set), then rewrites RESULTS.md if cpu.json is
# there. Installs nothing it finds already installed; on a bare machine with network access it installs
# zoo (pip install -e .) and jax's CUDA wheels (jax[cuda13], CUDA 13 / driver >= 580; jax[cuda12] for older
# drivers: set JAX_CUDA_EXTRA=cuda12).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX and PyTorch (the HF peer, when the machine has torch with CUDA) share the GPU in one process: JAX
# grows its pool as it needs, up to 70% of the memory, instead of taking 75% up front, and the rest stays
# for torch. BENCH_TORCH=0 leaves the peer out.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.70}

have_gpu_jax() { "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; }
if ! have_gpu_jax; then
  echo "jax has no GPU backend here: installing jax[${JAX_CUDA_EXTRA:-cuda13}]"
  "$PY" -m pip install -q "jax[${JAX_CUDA_EXTRA:-cuda13}]" || true
  have_gpu_jax || { echo "no GPU jax backend (nvidia-smi:)"; nvidia-smi || true; exit 2; }
fi
# zoo's own dependencies (flax, optax, orbax, safetensors, tokenizers, pyyaml, tqdm, ml_dtypes): from the
# checkout on PYTHONPATH; installed only when missing (an offline machine must already have them).
if ! "$PY" -c "import flax, optax, orbax.checkpoint, safetensors, tokenizers, yaml, tqdm, ml_dtypes" 2>/dev/null; then
  "$PY" -m pip install -q -e . || { echo "zoo's dependencies are missing and could not be installed"; exit 2; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"

start=$(date +%s)
status=0
timeout "${BENCH_TIMEOUT:-470}" "$PY" -m benchmarks run --device gpu "$@" || status=$?
echo "accelerator benchmark: exit $status after $(( $(date +%s) - start )) s"
if [ -n "${OUT:-}" ] && [ -f benchmarks/results/gpu.json ]; then
  cp benchmarks/results/gpu.json "$OUT/gpu.json"
  [ -f benchmarks/RESULTS.md ] && cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
fi
exit $status
