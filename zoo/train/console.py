"""What a run prints: a tqdm progress bar on a terminal, plain log lines otherwise. Only process 0 speaks."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import jax


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _memory(row: dict[str, float]) -> str:
    """'  mem 12.3 GiB (peak 14.0) of 80' where the backend reports device memory (zoo/train/hooks.py), else ''."""
    if "memory_gib" not in row:
        return ""
    peak = f" (peak {row['memory_peak_gib']:.1f})" if "memory_peak_gib" in row else ""
    limit = f" of {row['memory_limit_gib']:.0f}" if "memory_limit_gib" in row else ""
    return f"  mem {row['memory_gib']:.1f} GiB{peak}{limit}"


class Console:
    """`say` prints a message (through `echo` when given, e.g. to silence tests); `start_progress` opens the
    training phase, after which `step` reports each step's metrics (a bar update or, every `log_interval`
    steps, a line) and messages go through the bar so they do not break it."""

    def __init__(self, echo: Callable[[str], None] | None = None, *, progress_bar: bool = True, log_interval: int = 10):
        self.enabled = jax.process_index() == 0
        self.echo, self.progress_bar, self.log_interval = echo, progress_bar, log_interval
        self.bar = None
        self.start = self.end = 0
        self.started_at = 0.0

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        if self.echo is not None:
            self.echo(message)
        elif self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def start_progress(self, start: int, end: int) -> None:
        self.start, self.end, self.started_at = start, end, time.perf_counter()
        if self.enabled and self.progress_bar and self.echo is None and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=end, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def step(self, step: int, row: dict[str, float]) -> None:
        """Report step `step` (1-based) with its metrics row (loss, lr, grad_norm, tokens_per_s, mfu, ...)."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(
                f"loss={row['loss']:.3f} tok/s={row['tokens_per_s']:,.0f} mfu={row['mfu']:.2%}", refresh=True
            )
        elif step % self.log_interval == 0 or step == self.end or step == self.start + 1:
            eta = (self.end - step) * (time.perf_counter() - self.started_at) / max(step - self.start, 1)
            self.say(
                f"step {step}/{self.end}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  grad norm "
                f"{row['grad_norm']:.3f}  {row['tokens_per_s']:,.0f} tok/s  MFU {row['mfu']:.2%}  "
                f"{row['step_time_s'] * 1e3:.0f} ms/step{_memory(row)}  ETA {_fmt_time(eta)}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
