"""XLA CPU flags on the issue's train step (25M LLaMA, AdamW, sequence 512; `--quick`: the smoke model).

    python -m benchmarks.xla_flags [--quick] [--reps 2] [--out benchmarks/results/xla_flags.json]

A flag is read once per process, so each variant is a child process timing a few steps; variants and the
baseline alternate (base, A, B, ..., base, A, B, ...) and each variant's figure is its median step time over
the baseline's median, with the spread of the per-round ratios. Not part of `run`: it costs a process start
and a compile per variant per round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "baseline": "",
    "no_xnnpack": "--xla_cpu_use_xnnpack=false",
    "onednn": "--xla_cpu_use_onednn=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
    "ynn_individual_dot": "--xla_cpu_experimental_ynn_fusion_type=individual_dot",
}


def child(size: str, batch: int, seq: int, steps: int) -> None:
    from benchmarks import models
    from benchmarks.train import zoo_step

    run, compile_s = zoo_step(models.llama(size, max_seq_len=seq), batch, seq)
    run()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print(json.dumps({"compile_s": compile_s, "step_s": times}))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--only", nargs="+", choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "xla_flags.json")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        size, batch, seq, steps = args.child
        return child(size, int(batch), int(seq), int(steps))
    shape = ("smoke", 2, 64, 2) if args.quick else ("25m", 4, 512, 2)
    names = ["baseline"] + [n for n in (args.only or VARIANTS) if n != "baseline"]
    results = {n: {"flag": VARIANTS[n], "step_s": [], "rounds": []} for n in names}
    for _ in range(args.reps):
        for name in names:
            env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {VARIANTS[name]}".strip())
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.xla_flags", "--child", *map(str, shape)],
                env=env,
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent.parent,
            )
            if proc.returncode:
                results[name]["error"] = proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else "failed"
                continue
            data = json.loads(proc.stdout.strip().splitlines()[-1])
            results[name]["step_s"] += data["step_s"]
            results[name]["rounds"].append(statistics.median(data["step_s"]))
            results[name]["compile_s"] = data["compile_s"]
    base = results["baseline"]["rounds"]
    for r in results.values():
        if r["rounds"] and base:
            ratios = [a / b for a, b in zip(r["rounds"], base, strict=False)]
            r["time_over_baseline"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    out = {
        "shape": dict(zip(("size", "batch", "seq", "steps"), shape, strict=True)),
        "loadavg": os.getloadavg(),
        "variants": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for name, r in results.items():
        t = r.get("time_over_baseline")
        print(
            f"{name:22s} {r['flag']:55s} "
            + (f"{t['median']:.2f}x ({t['min']:.2f}-{t['max']:.2f})" if t else r.get("error", "-"))
        )


if __name__ == "__main__":
    main()
