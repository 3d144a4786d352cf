"""Sample from a trained run: `python sample.py --run runs/llama-tiny --prompt "def " --max-new-tokens 200`.

Loads the run's config, tokenizer and latest (or --step) checkpoint and prints each prompt and its
continuation. Several prompts (`--prompt-file FILE`, one per line, or `-` for stdin) are generated as one
batch. `--stop` ends a continuation at a string (repeatable); `--stream` prints text as it is generated
(one prompt). Encoder-decoder runs (T5) fill in a span masked at the end of the prompt. zoo.commands.sample
(the zoo-sample command) does the work.
"""

import sys

from zoo.commands import sample

if __name__ == "__main__":
    sys.exit(sample())
