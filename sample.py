"""Sample from a trained run: `python sample.py --run runs/llama-tiny --prompt "def " --max-new-tokens 200`.

Loads the run's config, tokenizer and latest (or --step) checkpoint and prints the prompt and its
continuation. Encoder-decoder runs (T5) fill in a span masked at the end of the prompt.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory (holds config.json, tokenizer/, checkpoints/)")
    parser.add_argument("--prompt", default="def ", help="text to continue (default %(default)r)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default %(default)s)")
    parser.add_argument("--top-k", type=int, default=40,
                        help="keep the k most likely tokens; 0 = off (default %(default)s)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus mass; 1 = off (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default %(default)s)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    args = parser.parse_args(argv)

    from zoo.train.config import UserError
    from zoo.train.sampling import generate_text, load_for_sampling

    try:
        model, params, tokenizer = load_for_sampling(args.run, args.step)
        text = generate_text(model, params, tokenizer, args.prompt, args.max_new_tokens,
                             temperature=args.temperature, top_k=args.top_k or None,
                             top_p=args.top_p if args.top_p < 1 else None, seed=args.seed)
    except UserError as e:
        print(f"sample.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except ValueError as e:  # generate's argument checks (temperature, top_k, top_p, lengths)
        print(f"sample.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(args.prompt + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
