"""Train a zoo model: `python train.py [--preset NAME] [section.field=value ...]` (see --help).

With no arguments: llama-tiny on the embedded default corpus (this Python's standard library), a few
minutes on a laptop CPU, checkpointed to runs/llama-tiny/ (rerun to resume). zoo/train/cli.py does the work.
"""

import sys

from zoo.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
