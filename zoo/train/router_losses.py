"""The mixture-of-experts terms of the training loss, and what a run logs about its routers.

Each MoE layer sows its router statistics (zoo.layers.moe.router_stats) in the "intermediates" collection. The
objective applies the model with that collection mutable, averages each statistic over the MoE layers, and
adds the two auxiliary losses to the language-model loss:

    loss = lm loss + load_balancing_multiplier * mean_l LB_l + router_z_loss_multiplier * mean_l Z_l

LB_l = E * sum_e f_e P_e (Switch, Fedus 2021, eq. 4) and Z_l = mean logsumexp(router logits)^2 (ST-MoE, Zoph
2022, eq. 5), per layer and averaged over layers, as Switch's and ST-MoE's Mesh TensorFlow code sums one loss
per layer and divides by the layer count. (HF transformers' load_balancing_loss_func instead pools the tokens of
every layer before taking the product f * P; the two agree when every layer routes alike.)

Logged each step (metrics.jsonl), averaged over MoE layers, then per layer in stack order (encoder first):
  moe/load_balancing_loss, moe/router_z_loss   the two losses before their multipliers
  moe/expert_load_max, moe/expert_load_min     the busiest and idlest expert's assignments over the mean (1 =
                                               balanced; 0 = an expert no token chose)
  moe/dropped_fraction                         assignments dropped by capacity (0 when dropless)
  moe/router_entropy                           entropy of the softmax over all experts (nats)
and the same names with the suffix _per_layer, one value per MoE layer.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp

from zoo.layers.moe import BALANCE_BIAS
from zoo.model import path_names

LOGGED = (
    "load_balancing_loss",
    "router_z_loss",
    "expert_load_max",
    "expert_load_min",
    "dropped_fraction",
    "router_entropy",
)


@dataclasses.dataclass(frozen=True)
class RouterLosses:
    """What the objective does with the routers: nothing for a dense model (the model is applied as before)."""

    moe: bool = False
    load_balancing: float = 0.0
    z_loss: float = 0.0
    balance_bias: bool = False
    """The model has router_balance_bias: the metrics also carry each MoE layer's expert loads under LOADS, for
    the train step's rebalance (and nothing else: the step takes them out)."""

    @classmethod
    def of(cls, cfg) -> RouterLosses:
        return cls(cfg.is_moe, cfg.load_balancing_multiplier, cfg.router_z_loss_multiplier, cfg.router_balance_bias)

    def apply(self, model, variables, *args, **kwargs):
        """model.apply(variables, *args, **kwargs) -> (logits, {statistic: [MoE layers] array}); {} when dense."""
        if not self.moe:
            return model.apply(variables, *args, **kwargs), {}
        logits, state = model.apply(variables, *args, mutable=["intermediates"], **kwargs)
        layers = per_layer(state["intermediates"], model.cfg.cycle_length)
        return logits, {**layers, LOADS: loads_by_module(state["intermediates"])} if self.balance_bias else layers

    def add_to(self, loss, metrics: dict, layers: dict) -> tuple:
        """The loss with the auxiliary terms added, and the metrics with the router statistics."""
        if not layers:
            return loss, metrics
        means = {name: jnp.mean(layers[name]) for name in ("load_balancing_loss", "router_z_loss")}
        aux = self.load_balancing * means["load_balancing_loss"] + self.z_loss * means["router_z_loss"]
        metrics = {
            **metrics,
            "loss": metrics["loss"] + aux,
            **{f"moe/{name}": jnp.mean(layers[name]) for name in LOGGED},
            **{f"moe/{name}_per_layer": layers[name] for name in LOGGED},
            **({LOADS: layers[LOADS]} if LOADS in layers else {}),
        }
        return loss + aux, metrics


LOADS = "moe/loads"
"""The metrics key of the expert loads by MoE module ({"decoder/cycles/block_0/moe": [cycles, E] or [E]})."""


def loads_by_module(intermediates) -> dict[str, jax.Array]:
    """Each MoE module's tokens_per_expert, keyed by its path: the path of its params less the param's name."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        names = path_names(path)  # .../moe/tokens_per_expert/0 (sow keeps a tuple)
        if len(names) >= 3 and names[-2] == "tokens_per_expert":
            out["/".join(names[:-2])] = leaf
    return out


def rebalance(params, loads: dict[str, jax.Array], rate: float):
    """DeepSeek-V3's bias update (arXiv:2412.19437 §2.1.2): after each step, each MoE layer's balance bias moves by
    `rate` down for an expert whose load exceeds the layer's mean load, up for one below it (b += rate *
    sign(mean load - load)); an expert at the mean stays. `loads` from the step's metrics (LOADS): every
    device's tokens and every micro-batch's, so each data-parallel replica moves its copy alike."""

    def update(path, leaf):
        names = path_names(path)
        if names[-1] != BALANCE_BIAS:
            return leaf
        load = loads["/".join(names[:-1])]
        return leaf + rate * jnp.sign(jnp.mean(load, axis=-1, keepdims=True) - load)

    return jax.tree_util.tree_map_with_path(update, params)


_LAYER = re.compile(r"^cycle_(\d+)$")


def per_layer(intermediates, cycle_length: int) -> dict[str, jax.Array]:
    """Each router statistic as a [MoE layers] array in stack order: encoder before decoder, then layer index, then
    the multi-token-prediction modules'.
    A scanned stack's entries carry a leading [cycles] axis; an unrolled one has a cycle_i per cycle."""
    entries: dict[str, list] = {}  # statistic -> [((stack, layer), value)]
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        names = path_names(path)
        if len(names) < 4 or names[-3] != "moe":  # stack/cycles|cycle_i/block_j/moe/stat/0
            continue
        stack, cycle, block, stat = names[0], names[1], names[2], names[-2]
        if stack.startswith("mtp_"):  # a multi-token-prediction module's block (mtp_k/block/moe/...): after the stack
            entries.setdefault(stat, []).append(((2, int(stack.removeprefix("mtp_"))), leaf))
            continue
        j = int(block.removeprefix("block_"))
        order = 0 if stack == "encoder" else 1
        if (match := _LAYER.match(cycle)) is not None:
            entries.setdefault(stat, []).append(((order, int(match[1]) * cycle_length + j), leaf))
        else:
            for c in range(leaf.shape[0]):
                entries.setdefault(stat, []).append(((order, c * cycle_length + j), leaf[c]))
    layers = {stat: [value for _, value in sorted(values, key=lambda e: e[0])] for stat, values in entries.items()}
    loads = jnp.stack(layers.pop("tokens_per_expert"))  # [layers, E]
    relative = loads / jnp.maximum(jnp.mean(loads, axis=-1, keepdims=True), 1e-9)
    out = {stat: jnp.stack(values) for stat, values in layers.items()}
    return {**out, "expert_load_max": jnp.max(relative, axis=-1), "expert_load_min": jnp.min(relative, axis=-1)}
