"""Stop cleanly on SIGTERM and SIGINT: finish the step, save it, exit; a second signal stops at once.

Preemptible TPU and GPU VMs (and Slurm, Kubernetes) stop a job with SIGTERM and a grace period; Ctrl-C is SIGINT.
Without a handler both end the process mid-step (SIGINT mid-save, as a KeyboardInterrupt in every orbax thread)
and lose the steps since the last checkpoint. With `StopSignals` held, the first signal only sets `received`:
the loop finishes the step in flight, saves it synchronously and raises `TrainingInterrupted`. A second signal
restores the default action and re-sends itself, so an impatient user still stops the process at once.

Handlers can only be installed from the main thread; elsewhere (a trainer in a worker thread) the signals keep
their default actions.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """A signal stopped the run after a step that was then checkpointed."""

    def __init__(self, message: str, signum: int, step: int):
        super().__init__(message)
        self.signum, self.step = signum, step

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal ended


class StopSignals:
    """`with StopSignals() as stop:` ... `if stop.received:` finish up. `received` is the first signal's number."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # the second: stop now, the way the signal would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous = {}
