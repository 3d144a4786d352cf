"""Train a zoo model: `python train.py [--preset NAME] [section.field=value ...]` (see --help).

With no arguments: llama-tiny on the embedded default corpus (this Python's standard library), a few
minutes on a laptop CPU, checkpointed to runs/llama-tiny/ (rerun to resume). zoo/train/cli.py does the work;
zoo.commands.train (the zoo-train command) hands it zoo.export, an application above the trainer, for run.export.
"""

import sys

from zoo.commands import train

if __name__ == "__main__":
    sys.exit(train())
