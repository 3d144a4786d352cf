"""The commands: each `name(argv=None) -> exit status`, behind the console scripts (pyproject's
[project.scripts]: zoo-train, zoo-sample, zoo-evaluate, zoo-export) and the top-level train.py, sample.py and
evaluate.py. The one module above the applications: `train` hands zoo.export's export_run to the trainer's
command line (zoo/train/cli.py), which cannot import it. Imports are lazy, so that a command loads only what
it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def train(argv: list[str] | None = None) -> int:
    """zoo-train, train.py: zoo/train/cli.py with zoo.export's export_run for run.export."""
    from zoo.export import export_run
    from zoo.train.cli import main

    return main(argv, export_run=export_run)


def evaluate(argv: list[str] | None = None) -> int:
    """zoo-evaluate, evaluate.py: zoo/train/evaluate.py."""
    from zoo.train.evaluate import main

    return main(argv)


def export(argv: list[str] | None = None) -> int:
    """zoo-export, python -m zoo.export."""
    from zoo.export import main

    return main(argv)


def _sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Sample from a trained run: `--run runs/llama-tiny --prompt "def " --max-new-tokens 200`.'
    )
    parser.add_argument("--run", required=True, help="run directory (holds config.json, tokenizer/, checkpoints/)")
    parser.add_argument("--prompt", default="def ", help="text to continue (default %(default)r)")
    parser.add_argument(
        "--prompt-file",
        default=None,
        help="prompts, one per line (blank lines skipped); '-' reads stdin; replaces --prompt",
    )
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default %(default)s)")
    parser.add_argument(
        "--top-k", type=int, default=40, help="keep the k most likely tokens; 0 = off (default %(default)s)"
    )
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus mass; 1 = off (default %(default)s)")
    parser.add_argument("--stop", action="append", default=[], help="end a continuation before this string")
    parser.add_argument("--stream", action="store_true", help="print the text as it is generated")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default %(default)s)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    return parser


def sample(argv: list[str] | None = None) -> int:
    """zoo-sample, sample.py: load a run's config, tokenizer and latest (or --step) checkpoint and print each
    prompt and its continuation. Several prompts (`--prompt-file FILE`, one per line, or `-` for stdin) are
    generated as one batch. `--stop` ends a continuation at a string (repeatable); `--stream` prints text as it
    is generated (one prompt). Encoder-decoder runs (T5) fill in a span masked at the end of the prompt."""
    parser = _sample_parser()
    args = parser.parse_args(argv)
    prog = parser.prog  # sample.py or zoo-sample, as it was called

    prompts = [args.prompt]
    if args.prompt_file is not None:
        text = sys.stdin.read() if args.prompt_file == "-" else Path(args.prompt_file).read_text(encoding="utf-8")
        prompts = [line for line in text.splitlines() if line.strip()]
        if not prompts:
            print(f"{prog}: error: --prompt-file {args.prompt_file} holds no prompt", file=sys.stderr)
            return 2
    if args.stream and len(prompts) > 1:
        print(f"{prog}: error: --stream prints one prompt's text; got {len(prompts)} prompts", file=sys.stderr)
        return 2

    from zoo.train.config import UserError
    from zoo.train.sampling import generate_text, load_for_sampling

    def show(row: int, piece: str) -> None:
        print(piece, end="", flush=True)

    try:
        model, params, tokenizer = load_for_sampling(args.run, args.step)
        if args.stream:
            print(prompts[0], end="", flush=True)
        texts = generate_text(
            model,
            params,
            tokenizer,
            prompts,
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k or None,
            top_p=args.top_p if args.top_p < 1 else None,
            seed=args.seed,
            stop=args.stop,
            on_text=show if args.stream else None,
        )
    except (UserError, ValueError) as e:  # ValueError: generate's argument checks (temperature, top_k, lengths)
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if args.stream:
        print()
        return 0
    for prompt, text in zip(prompts, texts, strict=True):
        print(prompt + text)
    return 0
