"""Building blocks, one idea per file: norms, positions, attention, mlp, block, init."""
