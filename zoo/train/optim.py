"""TrainConfig -> optax learning-rate schedule and optimizer.

The optimizer is one optax chain: clip the global gradient norm, scale by Adam or Adafactor and the
learning rate, add decoupled weight decay (weight_decay * lr ** power) on the params that ``decay_mask``
selects. Gradient accumulation is not here: the training step averages micro-batch gradients itself (one
jitted update per step). Schedules take the optimizer's update count (0 for the first update) and are
plain jnp so they can be logged or plotted.
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from zoo.model import is_buffer, path_names
from zoo.recipe import TrainConfig


def make_schedule(tc: TrainConfig, d_model: int) -> optax.Schedule:
    """Learning rate as a function of the update count; see TrainConfig.schedule for the formulas."""
    peak, warmup, total = tc.learning_rate, tc.warmup_steps, tc.total_steps
    floor = peak * tc.final_lr_fraction

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if tc.schedule == "noam":  # Vaswani §5.3; the formula starts at step 1
            s = jnp.maximum(step, 1.0)
            return peak * d_model**-0.5 * jnp.minimum(s**-0.5, s * warmup**-1.5)
        if tc.schedule == "inverse_sqrt":  # T5/PaLM: constant for `warmup` steps, then 1/sqrt(step)
            return peak * jnp.sqrt(warmup / jnp.maximum(step, warmup))

        if tc.schedule == "constant":
            after = jnp.asarray(peak, jnp.float32)
        elif tc.schedule == "wsd":  # warmup-stable-decay (Hu et al. 2024, MiniCPM)
            decay_start = total - round(tc.wsd_decay_fraction * total)
            frac = jnp.clip((step - decay_start) / (total - decay_start), 0.0, 1.0)
            after = peak + (floor - peak) * frac
        else:
            frac = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
            if tc.schedule == "cosine":
                after = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(math.pi * frac))
            else:  # linear
                after = peak + (floor - peak) * frac
        return jnp.where(step < warmup, peak * step / max(warmup, 1), after)

    return schedule


def is_norm_or_bias(names: tuple[str, ...]) -> bool:
    """A norm's scale/bias (any module with 'norm' in its name) or a dense layer's bias."""
    return names[-1] == "bias" or any("norm" in n for n in names[:-1])


def is_embedding(names: tuple[str, ...]) -> bool:
    """A lookup table: nn.Embed's `embedding` (token, learned positions) or T5's relative-bias table.
    An untied `lm_head/kernel` is a dense layer and is not one."""
    return names[-1] == "embedding" or any(n.endswith("embed") or n.startswith("relative_bias") for n in names)


def decay_mask(params, tc: TrainConfig):
    """Pytree of bools (the structure of the unboxed params): True where weight decay applies.

    Identified by param path, not by rank: with scanned layers a norm scale is 2-D (layers, embed).
    The mask is also a valid prefix of a tree of nn.LogicallyPartitioned boxes.
    """

    def decays(path, _):
        names = path_names(path)
        if is_norm_or_bias(names) and not tc.decay_norms_and_biases:
            return False
        return not (is_embedding(names) and not tc.decay_embeddings)

    return jax.tree_util.tree_map_with_path(decays, nn.meta.unbox(params))


def frozen_mask(params, tc: TrainConfig):
    """Pytree of bools: True for the params whose "a/b/c" path fully matches one of tc.freeze. A pattern
    that matches nothing is an error (a typo would silently train everything)."""
    paths = {"/".join(path_names(p)) for p, _ in jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0]}
    for pattern in tc.freeze:
        if not any(re.fullmatch(pattern, path) for path in paths):
            raise ValueError(
                f"TrainConfig.freeze: {pattern!r} matches no parameter; paths look like {sorted(paths)[0]!r}"
            )
    return jax.tree_util.tree_map_with_path(
        lambda p, _: any(re.fullmatch(pattern, "/".join(path_names(p))) for pattern in tc.freeze), nn.meta.unbox(params)
    )


def buffer_mask(params):
    """Pytree of bools: True for the buffers (zoo.model.BUFFERS), which no optimizer updates."""
    return jax.tree_util.tree_map_with_path(lambda p, _: is_buffer(path_names(p)), nn.meta.unbox(params))


def make_optimizer(tc: TrainConfig, params, d_model: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule). `params` (boxed or plain, concrete or abstract) only feeds the decay mask."""
    schedule = make_schedule(tc, d_model)
    # The rate is a scalar, but XLA fuses its formula (a cosine, a select) into every parameter's update loop, and
    # CPU code compiled without LLVM's loop optimisations (the tests' -O0, tests/conftest.py) evaluates it once per
    # element: tx.update took 120 ms of gpt2-tiny's 450 ms step. XLA's CPU pipeline drops optimization_barrier
    # before fusing; a conditional is never fused, so its result is one scalar in memory (42 ms, the same values).
    rate = lambda count: jax.lax.cond(count >= 0, schedule, lambda _: jnp.float32(0), count)  # noqa: E731
    mask = decay_mask(params, tc)
    power = 1.0 if tc.weight_decay_lr_power is None else tc.weight_decay_lr_power
    # Added to the update after the lr scaling, so params lose weight_decay * lr ** power of themselves.
    decay = (lambda count: tc.weight_decay * rate(count) ** power) if tc.weight_decay > 0 else None

    # Frozen params and buffers: zero gradients in (out of the clipping norm and the moments), zero updates out (no
    # decay). A buffer's gradient is zero already (stop_gradient); its update is the trainer's (zoo.model.BUFFERS).
    untrained = jax.tree.map(lambda frozen, buffer: frozen or buffer, frozen_mask(params, tc), buffer_mask(params))
    freeze = [optax.masked(optax.set_to_zero(), untrained)] if any(jax.tree.leaves(untrained)) else []
    parts = list(freeze)
    if tc.grad_clip_norm is not None:
        parts.append(optax.clip_by_global_norm(tc.grad_clip_norm))
    if tc.optimizer in ("adam", "adamw"):
        # optax.adamw's chain, with the decay moved after the lr scaling (as optax.adafactor has it) so
        # that any power of the lr works; power 1 is optax.adamw exactly.
        parts += [
            optax.scale_by_adam(b1=tc.beta1, b2=tc.beta2, eps=tc.eps),
            optax.scale_by_learning_rate(rate, flip_sign=False),
        ]
        if decay is not None:
            parts.append(optax.add_decayed_weights(decay, mask))
        parts.append(optax.scale(-1.0))
    else:
        parts.append(
            optax.adafactor(
                learning_rate=rate,
                decay_rate=tc.adafactor_decay_rate,
                factored=tc.adafactor_factored,
                clipping_threshold=tc.adafactor_clipping_threshold,
                multiply_by_parameter_scale=tc.adafactor_multiply_by_parameter_scale,
                momentum=tc.beta1,
                eps=tc.eps,
                weight_decay_rate=decay,
                weight_decay_mask=mask,
            )
        )
    return optax.chain(*parts, *freeze), schedule
