"""One process at a time per embedded store: a lock file beside the shard.

Qdrant Edge refuses a second opener of a shard (its WAL lock), which surfaces as an engine
error; the store takes its own lock first so that the second opener is told plainly
(:class:`~vllm_retrieval.errors.StoreLockedError`, with the holder's pid) and can wait for
the holder (``lock_timeout``). The lock is an OS file lock (``filelock``: ``flock`` on POSIX)
on ``<store>/vllm_retrieval.lock``, so the kernel releases it when the holder exits, however
it exits (SIGKILL included); the holder's pid is written to ``<store>/vllm_retrieval.pid``
(a sidecar: the lock file itself is opened, and may be truncated, by every contender).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import filelock

from ..errors import StoreLockedError
from .files import atomic_write_text, fsync_dir

__all__ = ["LOCK_NAME", "PID_NAME", "StoreLock", "check_seconds", "holder_pid"]

LOCK_NAME = "vllm_retrieval.lock"
PID_NAME = "vllm_retrieval.pid"


def check_seconds(value: object, name: str = "lock_timeout") -> float:
    """A duration in seconds >= 0 (``math.inf`` allowed: for ``lock_timeout``, wait as long
    as it takes); ``ValueError`` for anything else."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:  # pragma: no cover - unusual platforms
        return False
    return True


def holder_pid(directory: Path) -> int | None:
    """The pid recorded by the store's current holder (None if unknown or not running)."""
    try:
        pid = int((directory / PID_NAME).read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return pid if pid > 0 and _alive(pid) else None


class StoreLock:
    """The exclusive lock of one embedded store directory (not reentrant: a second store
    object on the same directory, in this process or another, is refused)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_NAME
        self.pid_path = directory / PID_NAME
        # thread_local=False: the store may be closed from another thread than its opener's.
        self._lock = filelock.FileLock(str(self.path), thread_local=False)
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self, timeout: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; ``StoreLockedError`` if another
        holder keeps it that long. Records this process's pid beside it."""
        wait = -1.0 if math.isinf(timeout) else timeout  # filelock: negative waits forever
        try:
            self._lock.acquire(timeout=wait)
        except filelock.Timeout:
            raise self._locked_error(timeout) from None
        self._held = True
        try:
            atomic_write_text(self.pid_path, f"{os.getpid()}\n")
        except BaseException:
            self.release()
            raise

    def _locked_error(self, timeout: float) -> StoreLockedError:
        pid = holder_pid(self.directory)
        if pid == os.getpid():
            who = f"this process (pid {pid}): another store object has it open; close that one"
        elif pid is not None:
            who = f"another process (pid {pid}); close the store there"
        else:
            who = "another process; close the store there"
        waited = f" (waited {timeout:g} s)" if timeout > 0 else ""
        return StoreLockedError(
            f"the store in {self.directory} is in use by {who}, or open it with "
            f"lock_timeout=<seconds> to wait for it{waited}; nothing was read or changed",
            path=str(self.directory),
            pid=pid,
        )

    def release(self) -> None:
        """Give the lock up (idempotent); the pid sidecar goes first."""
        if not self._held:
            return
        self._held = False
        try:
            if holder_pid(self.directory) == os.getpid():
                with contextlib.suppress(OSError):
                    self.pid_path.unlink()
        finally:
            self._lock.release(force=True)

    def discard(self) -> None:
        """Release and remove the lock's files (a failed create leaves nothing behind)."""
        self.release()
        for p in (self.pid_path, self.path):
            with contextlib.suppress(OSError):
                p.unlink()
        with contextlib.suppress(OSError):
            fsync_dir(self.directory)
