"""What every family is built from: `Family` (config table + weight rules), `Rule`s and the codecs they use,
the rule builders the families share, and the HF config wrapper whose errors name the field."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from zoo.config import ModelConfig


# ============================================================================================ weights
class Rule(NamedTuple):
    """HF tensors <-> zoo params. Names may hold `{i}` (the HF layer index); layer rules' zoo paths are
    relative to the block. `to_zoo(*hf_arrays)` and `to_hf(*zoo_arrays)` each return a tuple; both run on
    numpy arrays, and `to_hf` also under jax.eval_shape (it uses array methods, or jnp for tracers)."""

    hf: tuple[str, ...]
    zoo: tuple[str, ...]
    to_zoo: Callable
    to_hf: Callable
    mlp: str | None = None
    """A layer rule for one MLP kind only ("moe" or "dense": ModelConfig.mlp_kinds), where layers' MLPs differ
    (moe_pattern, dense_prefix_layers); None = every layer."""


def rule(hf: str | list[str], zoo: str | list[str], codec: tuple[Callable, Callable]) -> Rule:
    """A Rule from one name or a list of names per side and a (to_zoo, to_hf) codec."""

    def as_tuple(x: str | list[str]) -> tuple[str, ...]:
        return (x,) if isinstance(x, str) else tuple(x)

    return Rule(as_tuple(hf), as_tuple(zoo), *codec)


def only_with_mlp(rules: list[Rule], kind: str) -> list[Rule]:
    """`rules` restricted to the layers whose MLP is `kind`, moe or dense (see Rule.mlp)."""
    return [r._replace(mlp=kind) for r in rules]


# Codecs: (to_zoo, to_hf) pairs. torch Linear stores [out, in]; GPT-2's Conv1D and every zoo kernel [in, out].
SAME = (lambda x: (x,), lambda x: (x,))
TRANSPOSE = (lambda w: (w.T,), lambda k: (k.T,))


def linear(*out: int):
    """Linear [prod(out), in] <-> kernel [in, *out] (q/k/v projections: out = (heads, head_dim))."""
    return (lambda w: (w.T.reshape(w.shape[1], *out),), lambda k: (k.reshape(k.shape[0], -1).T,))


def linear_in(*inp: int):
    """Linear [out, prod(inp)] <-> kernel [*inp, out] (attention output: inp = (heads, head_dim))."""
    return (lambda w: (w.T.reshape(*inp, w.shape[0]),), lambda k: (k.reshape(-1, k.shape[-1]).T,))


def reshape(*shape: int):
    """Flat HF vector [prod(shape)] <-> zoo array [*shape] (per-head biases, OLMo 2's q/k norm scales)."""
    return (lambda b: (b.reshape(shape),), lambda b: (b.reshape(-1),))


@dataclasses.dataclass(frozen=True)
class Weights:
    """Where every tensor goes: `top` rules use absolute zoo paths; `stacks` are (zoo stack name, number of
    layers, rules for one layer)."""

    top: list[Rule]
    stacks: list[tuple[str, int, list[Rule]]]


def norm_rules(prefix: str, zoo: str, cfg: ModelConfig) -> list[Rule]:
    """`{prefix}.weight` (and `.bias` when the config's norms have one) [d] <-> `{zoo}/scale` (`/bias`)."""
    rules = [rule(f"{prefix}.weight", f"{zoo}/scale", SAME)]
    if cfg.norm_use_bias:
        rules.append(rule(f"{prefix}.bias", f"{zoo}/bias", SAME))
    return rules


def embedding_rules(cfg: ModelConfig, embed: str, head: str = "lm_head.weight") -> list[Rule]:
    """The token embedding [vocab, d], and the output head `head` [vocab, d] when it is not tied to it, with its
    bias (GPT-J's lm_head.bias) when the config has one."""
    rules = [rule(embed, "token_embed/embedding", SAME)]
    if not cfg.tie_word_embeddings:
        rules.append(rule(head, "lm_head/kernel", TRANSPOSE))
    if cfg.lm_head_bias:
        rules.append(rule(head.removesuffix("weight") + "bias", "lm_head/bias", SAME))
    return rules


def attention_rules(
    cfg: ModelConfig, prefix: str, zoo: str, names: tuple[str, str, str, str] = ("q_proj", "k_proj", "v_proj", "o_proj")
) -> list[Rule]:
    """Separate q/k/v/o Linears (HF module `names`) <-> the zoo attention at `zoo`, biases if the config has."""
    h, kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q, k, v, o = names
    rules = [
        rule(f"{prefix}.{q}.weight", f"{zoo}/query/kernel", linear(h, hd)),
        rule(f"{prefix}.{k}.weight", f"{zoo}/key/kernel", linear(kv, hd)),
        rule(f"{prefix}.{v}.weight", f"{zoo}/value/kernel", linear(kv, hd)),
        rule(f"{prefix}.{o}.weight", f"{zoo}/out/kernel", linear_in(h, hd)),
    ]
    if cfg.attention_bias:
        rules += [
            rule(f"{prefix}.{q}.bias", f"{zoo}/query/bias", reshape(h, hd)),
            rule(f"{prefix}.{k}.bias", f"{zoo}/key/bias", reshape(kv, hd)),
            rule(f"{prefix}.{v}.bias", f"{zoo}/value/bias", reshape(kv, hd)),
        ]
    if cfg.attention_out_bias:
        rules.append(rule(f"{prefix}.{o}.bias", f"{zoo}/out/bias", SAME))
    return rules


def mlp_rules(cfg: ModelConfig, prefix: str, names: dict[str, str]) -> list[Rule]:
    """Linear MLP layers; `names`: zoo dense (wi / wi_0 / wi_1 / wo) -> HF module name."""
    rules = []
    for zoo, hf in names.items():
        rules.append(rule(f"{prefix}.{hf}.weight", f"mlp/{zoo}/kernel", TRANSPOSE))
        if cfg.mlp_bias:
            rules.append(rule(f"{prefix}.{hf}.bias", f"mlp/{zoo}/bias", SAME))
    return rules


# ============================================================================================ configs
class HFConfig:
    """An HF config.json dict whose errors name the field."""

    def __init__(self, values: dict, model_type: str):
        self.values, self.model_type = values, model_type

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def fail(self, name: str, why: str):
        """ValueError naming the field; `name` may be "dict_field.key" (or "dict_field.dict_key.key")."""
        head, *keys = name.split(".")
        value = self.values.get(head, "<absent>")
        for key in keys:
            value = value.get(key, "<absent>") if isinstance(value, dict) else value
        raise ValueError(f"HF {self.model_type} config field {name}={value!r}: {why}")


# HF activation names (transformers' ACT2FN) -> zoo activations. gelu_new / gelu_pytorch_tanh / gelu_fast are
# all the tanh approximation; plain "gelu" is exact (erf).
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
    "relu2": "squared_relu",
    "silu": "silu",
    "swish": "silu",
    "quick_gelu": "quick_gelu",  # x sigmoid(1.702 x)
    "linear": "linear",
}
_ZOO_ACTIVATIONS = {
    "gelu": "gelu",
    "relu": "relu",
    "squared_relu": "relu2",
    "silu": "silu",
    "quick_gelu": "quick_gelu",
    "linear": "linear",
}


def activation(hf: HFConfig, field: str, default: str) -> str:
    """The zoo activation for HF's name in `field`."""
    name = hf.get(field, default)
    if name not in HF_ACTIVATIONS:
        hf.fail(field, f"no zoo activation matches; supported: {', '.join(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


def hf_activation(name: str, gelu_tanh: str = "gelu_pytorch_tanh") -> str:
    """The HF name of zoo activation `name`; `gelu_tanh` is how this family spells the tanh approximation."""
    return gelu_tanh if name == "gelu_tanh" else _ZOO_ACTIVATIONS[name]


def layer_types_to_zoo(
    hf: HFConfig, kinds_of: dict[str, str], slides: Callable[[int], bool], layers: int, window: int = 4096
) -> dict:
    """HF `layer_types` (absent: layer i is sliding_attention when `slides(i)`) -> the shortest repeating
    attention_pattern (`kinds_of`: HF layer type -> zoo layer kind) and the window of its local layers;
    `layers` and `window`: the class's default num_hidden_layers and sliding_window."""
    n = hf.get("num_hidden_layers", layers)
    types = hf.get("layer_types") or ["sliding_attention" if slides(i) else "full_attention" for i in range(n)]
    if len(types) != n or any(t not in kinds_of for t in types):
        hf.fail("layer_types", f"needs {n} entries from {', '.join(kinds_of)}")
    kinds = [kinds_of[t] for t in types]
    period = next(p for p in range(1, n + 1) if n % p == 0 and all(k == kinds[i % p] for i, k in enumerate(kinds)))
    window = hf.get("sliding_window", window)
    if "local" in kinds and window is None:
        hf.fail("sliding_window", "is null but layer_types has sliding_attention layers")
    return {"attention_pattern": tuple(kinds[:period]), "sliding_window_size": window if "local" in kinds else None}


def layer_types_to_hf(cfg: ModelConfig, kinds_of: dict[str, str], what: str) -> dict:
    """attention_pattern -> HF `layer_types` and `sliding_window`; a zoo kind `kinds_of` lacks raises, naming `what`."""
    types = {v: k for k, v in kinds_of.items()}
    for kind in cfg.attention_pattern:
        if kind not in types:
            raise ValueError(
                f"ModelConfig.attention_pattern: {kind!r} layers cannot be expressed as {what} "
                f"(layer_types has only {', '.join(kinds_of)})"
            )
    return {"layer_types": [types[k] for k in cfg.layer_kinds()], "sliding_window": cfg.sliding_window_size}


# The decoder-only layout every HF causal LM here shares.
DECODER = {
    "architecture": "decoder_only",
    "parallel_layers": False,
    "final_norm": True,
    "norm_use_scale": True,
    "scale_logits_by_inv_sqrt_d_model": False,
}


@dataclasses.dataclass(frozen=True)
class Family:
    """One HF model type: its config mapping table and its weight names."""

    model_type: str
    hf_class: str
    renames: dict[str, tuple[str, Any]]  # HF field -> (ModelConfig field, HF default when absent)
    fixed: dict[str, Any]  # ModelConfig values the HF architecture hard-codes
    unsupported: dict[str, tuple]  # HF field -> the only values the zoo can express
    to_zoo: Callable[[HFConfig], dict]  # fields that need more than a rename
    to_hf: Callable[[ModelConfig], dict]
    weights: Callable[[ModelConfig], Weights]
    embedding: str  # HF name of the token embedding (what a tied head reads)
    head: str = "lm_head.weight"  # HF name of an untied output head (GPT-NeoX: embed_out.weight)
    prefix: str = ""  # base-model prefix of tensor names ("model.", "transformer.")
    ignored: tuple[str, ...] = ()  # regexes: buffers and tied copies checkpoints carry, HF ignores too
    presets: str = ""  # the configs/<presets>.yaml family whose recipe fine-tunes it ("": model_type)
    # Checkpoints in more than one layout (transformers 5's fused experts): the rules that read the one a checkpoint
    # holds, given has(name), whether it has that tensor. None: `weights`, which is also what `save` writes.
    read_weights: Callable[[ModelConfig, Callable[[str], bool]], Weights] | None = None

    @property
    def preset_family(self) -> str:
        return self.presets or self.model_type

    def config_to_zoo(self, values: dict, **overrides) -> ModelConfig:
        hf = HFConfig(values, self.model_type)
        for name, allowed in self.unsupported.items():
            if hf.get(name, allowed[0]) not in allowed:
                hf.fail(name, f"the zoo can only express {' or '.join(map(repr, allowed))}")
        fields = {zoo: hf.get(name, default) for name, (zoo, default) in self.renames.items()}
        fields.update(self.fixed)
        fields.update(self.to_zoo(hf))
        fields.update(overrides)
        return ModelConfig(**fields)

    def config_to_hf(self, cfg: ModelConfig) -> dict:
        values = {"architectures": [self.hf_class], "model_type": self.model_type}
        values.update({name: getattr(cfg, zoo) for name, (zoo, _) in self.renames.items()})
        values.update({name: allowed[0] for name, allowed in self.unsupported.items() if allowed[0] is not None})
        values.update(self.to_hf(cfg))
        return values
