"""Crash-safe files of an embedded store: atomic replacement and directory syncing.

Every file the store writes beside its shard (the manifest, the token index's centroids, the
lock's pid sidecar) goes through :func:`atomic_write`: the bytes go to a temporary file with a
unique name in the same directory, which is fsynced, renamed over the target with
``os.replace`` (atomic on POSIX) and the directory fsynced, so that a crash leaves either the
old file or the new one, never a mix. A crash between the write and the rename leaves a
temporary file behind; :func:`remove_temporaries` clears those of a directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = [
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "atomic_write",
    "atomic_write_text",
    "fsync_dir",
    "remove_temporaries",
]

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
