"""The layer stack: a Cycle of cycle_length blocks (attention_pattern and moe_pattern each repeat whole in it),
repeated num_layers / cycle_length times, then the optional final norm. The stack scans over the cycles (or
unrolls them), so compile time stays flat as depth grows and interleaved local/global layers are pure data; the
remat policies choose what the backward pass recomputes. With dense_prefix_layers, the first cycles have the
dense MLP in every block: a second group of cycles (`prefix_cycles`), run before the others."""

from __future__ import annotations

import flax.linen as nn
import jax

from zoo.config import ModelConfig
from zoo.layers import positions as pos_lib
from zoo.layers.block import Block
from zoo.layers.norms import Norm

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_block_outputs": jax.checkpoint_policies.save_only_these_names("attention_out", "mlp_out"),
}


class Cycle(nn.Module):
    """One pass over both patterns: a block per layer (e.g. Gemma 2's local then global layer; Switch's dense
    then MoE layer)."""

    cfg: ModelConfig
    causal: bool = True
    has_cross: bool = False
    decode_len: int | None = None
    deterministic: bool = True
    dense_prefix: bool = False
    """A cycle of the dense prefix: the dense MLP in every block."""

    @nn.compact
    def __call__(self, x, positions, cache_index, rel_table, encoded, encoder_mask, segment_ids):
        k = self.cfg.cycle_length
        mlp_kinds = ("dense",) * k if self.dense_prefix else self.cfg.cycle_mlp_kinds()
        kinds = zip(self.cfg.layer_kinds(k), mlp_kinds, strict=True)
        for j, (kind, mlp_kind) in enumerate(kinds):
            block = Block(
                self.cfg,
                kind=kind,
                mlp_kind=mlp_kind,
                causal=self.causal,
                has_cross=self.has_cross,
                decode_len=self.decode_len,
                deterministic=self.deterministic,
                name=f"block_{j}",
            )
            x = block(
                x,
                positions,
                cache_index=cache_index,
                rel_table=rel_table,
                encoded=encoded,
                encoder_mask=encoder_mask,
                segment_ids=segment_ids,
            )
        return x, None


class Stack(nn.Module):
    """num_layers blocks (num_layers / cycle_length cycles), then the optional final norm."""

    cfg: ModelConfig
    num_layers: int
    causal: bool = True
    has_cross: bool = False
    decode_len: int | None = None
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, positions, cache_index=None, encoded=None, encoder_mask=None, segment_ids=None):
        cfg = self.cfg
        rel_table = None
        if cfg.position_embedding == "relative_bias" and cfg.relative_bias_shared:
            rel_table = pos_lib.relative_table(self, cfg)  # T5: one table per stack, reused by every layer
        if self.has_cross and self.decode_len is not None:
            # Generation: the encoder runs once; later steps read its mask (and, in cross-attention,
            # its keys and values) from the cache.
            encoder_mask = self.variable("cache", "encoder_mask", lambda: encoder_mask).value
        cycle = Cycle
        if cfg.remat_policy != "none":
            cycle = nn.remat(Cycle, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
        # Positional: nn.scan broadcasts these by position (in_axes), one entry per argument.
        args = (positions, cache_index, rel_table, encoded, encoder_mask, segment_ids)

        def make(cls, name, dense_prefix):
            return cls(
                cfg,
                causal=self.causal,
                has_cross=self.has_cross,
                decode_len=self.decode_len,
                deterministic=self.deterministic,
                dense_prefix=dense_prefix,
                name=name,
            )

        prefix = cfg.dense_prefix_layers if cfg.is_moe else 0
        for group, layers in (("prefix_cycle", prefix), ("cycle", self.num_layers - prefix)):
            num_cycles = layers // cfg.cycle_length
            if not num_cycles:
                continue
            if cfg.scan_layers:
                scanned = nn.scan(
                    cycle,
                    variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                    split_rngs={"params": True, "dropout": True},
                    in_axes=(nn.broadcast,) * len(args),
                    length=num_cycles,
                    metadata_params={nn.PARTITION_NAME: "layers"},
                )
                x, _ = make(scanned, f"{group}s", group == "prefix_cycle")(x, *args)
            else:
                for i in range(num_cycles):
                    x, _ = make(cycle, f"{group}_{i}", group == "prefix_cycle")(x, *args)
        if cfg.final_norm:
            x = Norm(cfg, name="final_norm")(x)
        return nn.Dropout(cfg.final_norm_dropout, deterministic=self.deterministic)(x)
