"""Evaluate a trained run or a Hugging Face checkpoint: `python evaluate.py --run runs/llama-tiny` (see --help).

Reports the training loop's validation loss on the same data, and per-document loss, perplexity and bits per
byte (comparable across tokenizers); --json writes everything, per-document stats included.
zoo/train/evaluate.py does the work (zoo.commands.evaluate, the zoo-evaluate command).
"""

import sys

from zoo.commands import evaluate

if __name__ == "__main__":
    sys.exit(evaluate())
