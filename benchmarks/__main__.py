"""python -m benchmarks run [--quick] [--only NAME ...] [--device cpu|gpu] [--out PATH] [--no-results]
python -m benchmarks report   (RESULTS.md again from benchmarks/results/*.json)
python -m benchmarks merge RUN.json [--only NAME ...]   (a partial run's sections into results/cpu.json)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.report import HERE, merge, write_results
from benchmarks.runner import NAMES, run_all


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the benchmarks, print a table, write JSON (and RESULTS.md)")
    r.add_argument("--quick", action="store_true", help="smoke-test sizes: every section, tiny shapes, ~1 min")
    r.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help=f"a subset of {', '.join(NAMES)}")
    r.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="gpu: the accelerator plan (~1B bf16 train steps, cuDNN attention, decode)",
    )
    r.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/<device>[-quick].json)")
    r.add_argument("--no-results", action="store_true", help="do not regenerate benchmarks/RESULTS.md")
    sub.add_parser("report", help="regenerate RESULTS.md from benchmarks/results/cpu.json (+ gpu.json)")
    m = sub.add_parser("merge", help="copy a run's sections into benchmarks/results/cpu.json, then rewrite RESULTS.md")
    m.add_argument("run", type=Path, help="the JSON of a run (e.g. python -m benchmarks run --only moe --out RUN)")
    m.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help="these sections (default: all it has)")
    args = parser.parse_args(argv)
    results = HERE / "results"
    if args.cmd == "merge":
        print("merged", ", ".join(merge(args.run, results / "cpu.json", args.only)))
        print("wrote", write_results(results / "cpu.json", results / "gpu.json"))
        return 0
    if args.cmd == "report":
        print(write_results(results / "cpu.json", results / "gpu.json"))
        return 0
    out = args.out or results / f"{args.device}{'-quick' if args.quick else ''}.json"
    res = run_all(quick=args.quick, device=args.device, only=args.only, out=out)
    # A full CPU run of every benchmark (or a GPU run, beside the CPU one) rewrites RESULTS.md.
    if not args.no_results and not args.quick and not args.only and args.out is None:
        cpu = results / "cpu.json"
        if cpu.exists():
            print("wrote", write_results(cpu, results / "gpu.json"))
    return 0 if res.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
