"""Shared pytest setup.

pytest imports every test module in one process, so the emulated device count must be set here, before
anything imports jax: 8 host (CPU) devices let tests/test_sharding.py build real multi-axis meshes.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

from zoo.presets import list_presets  # noqa: E402  (after XLA_FLAGS: importing zoo imports jax)

# Every "-tiny" preset: the CPU-sized sibling of each family, which the model and training tests run.
TINY_PRESETS = [name for name in list_presets() if name.endswith("-tiny")]
