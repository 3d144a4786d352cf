"""The compiled programs of a run: sharded state layout, init, the train step and evaluation.

`programs(cfg, recipe, objective, mesh)` is cached: every train() call in a process with the same key (tests,
restarts, sample.py) compiles once. Params are initialised directly into their shardings (a jitted init with
out_shardings from the logical-axis rules of zoo/sharding.py); the optimizer state follows its params'
shardings; gradient accumulation is a scan over micro-batches inside the step, so one step is one update.

The state is {"params", "opt_state", "step", "rng"}: dropout keys are fold_in(rng, step), so a resumed run
draws the same keys as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from zoo.config import ModelConfig
from zoo.model import abstract_params, build, dummy_inputs, path_names
from zoo.recipe import TrainConfig
from zoo.semantics import TRAINING_FIELDS
from zoo.sharding import batch_sharding, param_shardings
from zoo.train.checkpoint import abstract_like
from zoo.train.optim import make_optimizer
from zoo.train.router_losses import LOADS, rebalance


def opt_state_shardings(abstract_opt_state, params_shardings, params_shapes, mesh):
    """A sharding for every optimizer-state leaf: a leaf shaped like the param whose path ends its own path
    (Adam's mu and nu, ...) takes that param's sharding; anything else (counts, Adafactor's factored row and
    column statistics) is small and replicated."""
    by_path = {}
    for (path, sharding), shape in zip(
        jax.tree_util.tree_flatten_with_path(params_shardings)[0], jax.tree.leaves(params_shapes), strict=True
    ):
        by_path[path_names(path)] = (sharding, shape.shape)
    replicated = NamedSharding(mesh, P())

    def pick(path, leaf):
        names = path_names(path)
        for start in range(len(names)):
            hit = by_path.get(names[start:])
            if hit is not None and hit[1] == leaf.shape:
                return hit[0]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


@dataclasses.dataclass
class Programs:
    """Everything compiled for one (model, recipe, objective, mesh): shared by every train() call in a
    process with the same key, so tests and restarts in one process compile once."""

    model: nn.Module
    tx: optax.GradientTransformation
    schedule: Callable
    state_shardings: Any
    batch_sharding: NamedSharding
    abstract_state: Any
    init: Callable
    """seed -> a fresh state, params initialised into their shardings."""
    start_from: Callable
    """(params, seed) -> a state with these params (fine-tuning), fresh optimizer state, step 0."""
    step: Callable
    evaluate: Callable
    compiled: dict = dataclasses.field(default_factory=dict)

    def compiled_step(self, state, batch):
        """The AOT-compiled step (compile time measured apart from step time)."""
        if "step" not in self.compiled:
            self.compiled["step"] = self.step.lower(state, batch).compile()
        return self.compiled["step"]


@functools.lru_cache(maxsize=32)
def programs(cfg: ModelConfig, tc: TrainConfig, objective, mesh) -> Programs:
    model = build(cfg)
    boxed = abstract_params(cfg)
    # Gradient accumulation happens inside the step (a scan over micro-batches): one optimizer update per step.
    tx, schedule = make_optimizer(tc, boxed, cfg.d_model)
    p_shardings = param_shardings(boxed, mesh)
    replicated = NamedSharding(mesh, P())
    # The model trains unlike it infers when it has a dropout rng (zoo.model: deterministic = no rng): with
    # dropout, Switch's router jitter, or an MoE capacity factor for training (eval_capacity_factor is the other).
    noisy = max(getattr(cfg, name) for name in TRAINING_FIELDS if name.endswith(("_dropout", "_jitter"))) > 0
    uses_dropout = noisy or (cfg.is_moe and cfg.capacity_factor != cfg.eval_capacity_factor)
    accum = tc.grad_accum_steps

    def init(key):
        params = nn.meta.unbox(model.init(key, *dummy_inputs(cfg))["params"])
        return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = {
        "params": p_shardings,
        "opt_state": opt_state_shardings(abstract["opt_state"], p_shardings, abstract["params"], mesh),
        "step": replicated,
        "rng": replicated,
    }

    def init_state(seed):
        params_key, dropout_key = jax.random.split(jax.random.key(seed))
        return {**init(params_key), "rng": jax.random.key_data(dropout_key)}

    def state_from(params, seed):
        dropout_key = jax.random.split(jax.random.key(seed))[1]  # the same dropout keys as init_state
        return {
            "params": params,
            "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(dropout_key),
        }

    abstract_state = jax.eval_shape(init_state, 0)

    def grads_and_metrics(params, batch, key):
        rngs = {"dropout": key} if uses_dropout else None
        loss_fn = lambda p: objective.loss(model, p, batch, rngs)  # noqa: E731
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, metrics

    def step(state, batch):
        params, n = state["params"], state["step"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), n)
        if accum == 1:
            grads, metrics = grads_and_metrics(params, batch, key)
        else:
            # Micro-batch i = rows i, i + accum, ...: the split keeps each micro-batch spread over the devices.
            micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1), batch)

            def body(total, xs):
                i, mb = xs
                g, m = grads_and_metrics(params, mb, jax.random.fold_in(key, i))
                return jax.tree.map(jnp.add, total, (g, m)), None

            zeros = jax.eval_shape(grads_and_metrics, params, jax.tree.map(lambda x: x[0], micro), key)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
            (grads, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
            tokens = metrics["tokens"]
            grads, metrics = jax.tree.map(lambda x: x / accum, (grads, metrics))
            metrics["tokens"] = tokens
        loads = metrics.pop(LOADS, None)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        params = optax.apply_updates(params, updates)
        if loads is not None:  # router_balance_bias: the buffers move after the update (DeepSeek-V3 §2.1.2)
            params = rebalance(params, loads, tc.router_bias_update_rate)
        # param_norm is of the updated params: a finite loss can still produce an overflowing update, and the
        # loop must not checkpoint that state.
        metrics = {
            **metrics,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(n),
            "param_norm": optax.tree.norm(params),
        }
        return {"params": params, "opt_state": opt_state, "step": n + 1, "rng": state["rng"]}, metrics

    def evaluate(params, batch):
        metrics = objective.loss(model, params, batch, None)[1]
        return {k: v for k, v in metrics.items() if k != LOADS}

    b_sharding = batch_sharding(mesh)
    return Programs(
        model=model,
        tx=tx,
        schedule=schedule,
        state_shardings=shardings,
        batch_sharding=b_sharding,
        abstract_state=abstract_like(abstract_state, shardings),
        init=jax.jit(init_state, out_shardings=shardings),  # the seed is traced: one compile for every seed
        start_from=jax.jit(state_from, in_shardings=(p_shardings, replicated), out_shardings=shardings),
        step=jax.jit(
            step, in_shardings=(shardings, b_sharding), out_shardings=(shardings, replicated), donate_argnums=0
        ),
        evaluate=jax.jit(evaluate, in_shardings=(p_shardings, b_sharding), out_shardings=replicated),
    )


def device_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Host arrays (the global batch, identical on every host) -> global arrays split over data x fsdp."""
    return {k: jax.make_array_from_callback(v.shape, sharding, v.__getitem__) for k, v in batch.items()}


def process_rows(sharding: NamedSharding, batch_size: int) -> np.ndarray:
    """The rows of a global batch of `batch_size` that this process's devices hold, in order (all of them
    on one process; on several, each host reads only these: zoo.train.data.TrainStream's `index`)."""
    slices = sharding.addressable_devices_indices_map((batch_size,)).values()  # typed Optional, never None
    return np.unique(np.concatenate([np.arange(batch_size)[s[0]] for s in slices if s is not None]))


def local_batch(batch: dict[str, np.ndarray], sharding: NamedSharding, batch_size: int) -> dict[str, jax.Array]:
    """This process's rows (`process_rows`) of each array -> global arrays of `batch_size` rows split over
    data x fsdp (jax.make_array_from_process_local_data: no host holds the whole batch)."""
    return {
        k: jax.make_array_from_process_local_data(sharding, v, (batch_size, *v.shape[1:])) for k, v in batch.items()
    }
