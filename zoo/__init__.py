"""zoo: published transformer architectures, knob by knob, in JAX/Flax."""

from zoo.config import ModelConfig
from zoo.model import build, count_params, init_params, logical_axes

__all__ = ["ModelConfig", "build", "count_params", "init_params", "logical_axes"]
from zoo.generate import generate  # noqa: E402
