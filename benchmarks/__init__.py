"""zoo's benchmark suite: `python -m benchmarks run [--quick] [--only NAME ...] [--device cpu|gpu]`.

Every figure is a ratio measured in one run against its peer, repetitions interleaved; see RESULTS.md.
"""

import os

# PyTorch's OpenMP workers spin-wait between parallel regions by default. In a process that also runs XLA's
# thread pool, on a machine whose cores are shared, spinning threads steal the cores their peers need: on 2
# busy cores HF LLaMA's train step ran at ~70 tok/s spinning and ~600 tok/s with passive waits (measured
# here). Set before torch (and its libgomp) is first imported; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
