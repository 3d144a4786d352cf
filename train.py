"""Train a zoo model: `python train.py [--preset NAME] [section.field=value ...]` (see --help).

With no arguments: llama-tiny on the embedded default corpus (this Python's standard library), a few
minutes on a laptop CPU, checkpointed to runs/llama-tiny/ (rerun to resume). zoo/train/cli.py does the work;
zoo.export (an application above the trainer) is handed to it here for run.export.
"""

import sys

from zoo.export import export_run
from zoo.train.cli import main

if __name__ == "__main__":
    sys.exit(main(export_run=export_run))
