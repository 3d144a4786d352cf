"""Training: data and tokenizers, objectives, optimizer, checkpoints, the loop."""
