"""zoo: published transformer architectures, knob by knob, in JAX/Flax.

import zoo
cfg = zoo.get_config("llama2-7b").replace(num_layers=2)
model = zoo.build(cfg)
"""

from zoo import hf
from zoo.config import ModelConfig
from zoo.generate import generate, generate_stream
from zoo.model import build, count_params, init_params, logical_axes
from zoo.presets import get_config, get_recipe, list_presets

__all__ = [
    "ModelConfig",
    "build",
    "count_params",
    "generate",
    "generate_stream",
    "get_config",
    "get_recipe",
    "hf",
    "init_params",
    "list_presets",
    "logical_axes",
]
