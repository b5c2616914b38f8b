"""Crash-safe files of an embedded store: atomic replacement, directory syncing, free space.

Every file the store writes beside its shard (the manifest, the token index's centroids, the
lock's pid sidecar) goes through :func:`atomic_write`: the bytes go to a temporary file with a
unique name in the same directory, which is fsynced, renamed over the target with
``os.replace`` (atomic on POSIX) and the directory fsynced, so that a crash leaves either the
old file or the new one, never a mix. A crash between the write and the rename leaves a
temporary file behind; :func:`remove_temporaries` clears those of a directory.

Qdrant Edge keeps its segments in memory-mapped files that grow as points are written: when a
file cannot grow (a full disk), the process dies of ``SIGBUS``, and reopening the shard without
room dies the same way (once there is room, every acknowledged write is there). Writes
therefore check the free space first (:func:`ensure_room`) and refuse with a ``StoreError``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..errors import StoreError

__all__ = [
    "RESERVE_BYTES",
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "atomic_write",
    "atomic_write_text",
    "ensure_room",
    "fsync_dir",
    "remove_temporaries",
]

#: Free space a write leaves on the store's file system (Edge grows its files in chunks).
RESERVE_BYTES = 256 << 20

#: Temporary files are ``.<target name>.<random>.tmp`` (``tempfile.mkstemp``).
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Replace ``path`` with what ``write(fh)`` writes, atomically and durably.

    The temporary file has a unique name (``mkstemp`` in the same directory, so that the
    rename never crosses a file system); it is removed if anything fails before the rename.
    """
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    data = text.encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


def remove_temporaries(directory: Path, names: tuple[str, ...]) -> None:
    """Remove temporary files left by an interrupted :func:`atomic_write` of any of ``names``
    (call it only while holding the store's lock: a live writer's file would go too)."""
    prefixes = tuple(f"{TEMP_PREFIX}{n}." for n in names)
    for entry in directory.iterdir():
        if entry.name.startswith(prefixes) and entry.name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(OSError):
                entry.unlink()


def ensure_room(directory: Path, nbytes: int = 0) -> None:
    """A ``StoreError`` unless ``directory``'s file system has room for a write of ``nbytes``
    (twice: the WAL and the segment) plus :data:`RESERVE_BYTES`."""
    free = shutil.disk_usage(directory).free
    need = 2 * nbytes + RESERVE_BYTES
    if free < need:
        raise StoreError(
            f"not enough free disk space to write to the store in {directory}: {free >> 20} MiB "
            f"free, this write needs about {need >> 20} MiB (Qdrant Edge's memory-mapped files "
            "would fail to grow, which kills the process); nothing more was written, what was "
            "written before stays stored: free some space and write again"
        )
