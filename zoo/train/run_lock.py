"""One trainer per run directory: an exclusive lock on `<run_dir>/.lock`, held for the whole run.

Two trainers on one directory would interleave their checkpoints and truncate each other's metrics, so the
second is refused, naming the holder. The lock is an OS file lock (`flock`), which the kernel drops when its
process dies however it dies (kill -9, a crashed host on a shared file system), so a stale lock never needs
deleting by hand. The file also holds who took it (host, pid, time): what the refusal names, and what a new
holder reports when it finds that a previous holder died without releasing it.

In a multi-process job only process 0 takes the lock (the others write only their own checkpoint shards).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


class RunLocked(Exception):
    """Another live process holds the run directory."""


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    if not holder:
        return "an unknown process"
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"


def holder_if_locked(run_dir: str | os.PathLike) -> dict | None:
    """The holder of the run directory's lock if a live process holds it, else None; creates nothing (prepare()
    asks this before it reads the corpus, so that a second trainer fails in a second, not after compiling)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path) or {"host": "?", "pid": "?", "since": "?"}
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return None


class RunLock:
    """Held from `acquire()` to `release()` (or the process's end). `stale` is the previous holder's record when
    that holder died without releasing the lock, else None."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        self.stale: dict | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(
                f"{self.path.parent} is in use by another trainer: {describe(_holder(self.path))}; wait for it to "
                "finish or stop it, or choose another run.dir"
            ) from None
        self.stale = _holder(self.path) or None  # a record left behind: its process died holding the lock
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clears the record (a later holder finds no stale one) and drops the lock."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None
