"""Sample from a trained run: `python sample.py --run runs/llama-tiny --prompt "def " --max-new-tokens 200`.

Loads the run's config, tokenizer and latest (or --step) checkpoint and prints each prompt and its
continuation. Several prompts (`--prompt-file FILE`, one per line, or `-` for stdin) are generated as one
batch. `--stop` ends a continuation at a string (repeatable); `--stream` prints text as it is generated
(one prompt). Encoder-decoder runs (T5) fill in a span masked at the end of the prompt.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory (holds config.json, tokenizer/, checkpoints/)")
    parser.add_argument("--prompt", default="def ", help="text to continue (default %(default)r)")
    parser.add_argument("--prompt-file", default=None,
                        help="prompts, one per line (blank lines skipped); '-' reads stdin; replaces --prompt")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default %(default)s)")
    parser.add_argument("--top-k", type=int, default=40,
                        help="keep the k most likely tokens; 0 = off (default %(default)s)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus mass; 1 = off (default %(default)s)")
    parser.add_argument("--stop", action="append", default=[], help="end a continuation before this string")
    parser.add_argument("--stream", action="store_true", help="print the text as it is generated")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default %(default)s)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    args = parser.parse_args(argv)

    prompts = [args.prompt]
    if args.prompt_file is not None:
        text = sys.stdin.read() if args.prompt_file == "-" else open(args.prompt_file, encoding="utf-8").read()
        prompts = [line for line in text.splitlines() if line.strip()]
        if not prompts:
            print(f"sample.py: error: --prompt-file {args.prompt_file} holds no prompt", file=sys.stderr)
            return 2
    if args.stream and len(prompts) > 1:
        print(f"sample.py: error: --stream prints one prompt's text; got {len(prompts)} prompts", file=sys.stderr)
        return 2

    from zoo.train.config import UserError
    from zoo.train.sampling import generate_text, load_for_sampling

    def show(row, piece):
        print(piece, end="", flush=True)

    try:
        model, params, tokenizer = load_for_sampling(args.run, args.step)
        if args.stream:
            print(prompts[0], end="", flush=True)
        texts = generate_text(model, params, tokenizer, prompts, args.max_new_tokens,
                              temperature=args.temperature, top_k=args.top_k or None,
                              top_p=args.top_p if args.top_p < 1 else None, seed=args.seed, stop=args.stop,
                              on_text=show if args.stream else None)
    except (UserError, ValueError) as e:  # ValueError: generate's argument checks (temperature, top_k, lengths)
        print(f"sample.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if args.stream:
        print()
        return 0
    for prompt, text in zip(prompts, texts):
        print(prompt + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
