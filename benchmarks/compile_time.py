"""Compile time and step time versus depth, scanned vs unrolled layers.

    python benchmarks/compile_time.py [--preset llama-tiny] [--depths 2 4 8 16 32]

Scan over the attention-pattern cycle should keep compile time flat as depth grows; an unrolled
Python loop grows linearly. Prints a markdown table (paste it into benchmarks/RESULTS.md).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import zoo
from zoo.presets import get_config


def measure(cfg, batch, length):
    model = zoo.build(cfg)
    params = zoo.init_params(cfg, jax.random.key(0))
    tokens = jnp.zeros((batch, length), jnp.int32)

    def loss(p):
        logits = model.apply({"params": p}, tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()

    step = jax.jit(jax.value_and_grad(loss))
    start = time.perf_counter()
    compiled = step.lower(params).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(params))
    start = time.perf_counter()
    for _ in range(3):
        jax.block_until_ready(compiled(params))
    return compile_s, (time.perf_counter() - start) / 3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llama-tiny")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    base = get_config(args.preset)
    print(f"{args.preset}, batch {args.batch} x {args.length}, backend {jax.default_backend()}\n")
    print("| layers | scan compile (s) | unrolled compile (s) | scan step (ms) | unrolled step (ms) |")
    print("|---|---|---|---|---|")
    for depth in args.depths:
        row = [depth]
        results = [measure(base.replace(num_layers=depth, scan_layers=s), args.batch, args.length)
                   for s in (True, False)]
        row += [f"{results[0][0]:.2f}", f"{results[1][0]:.2f}",
                f"{1e3 * results[0][1]:.1f}", f"{1e3 * results[1][1]:.1f}"]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)


if __name__ == "__main__":
    main()
