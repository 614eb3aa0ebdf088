"""Atomic file writes: a temporary file in the destination folder, flushed to disk, then renamed over the target.

A reader never sees a half-written file, and a failed write (a kill, a full disk) leaves the previous file as it
was. Checkpoints, model files and every file ``zoo predict`` writes go through :func:`atomic_write`.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_UMASK = os.umask(0)  # read once (os.umask can only be read by setting it), then put back
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, fsync, then rename.

    Args:
        path: the destination (its folder is created).
        write: called with the open binary temporary file.

    Raises:
        OSError: the write failed (the temporary file is removed); for a full disk the message names the path
            and the free space.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # the mode a plain open() would give, not mkstemp's private 0600
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            free = shutil.disk_usage(path.parent).free
            raise OSError(errno.ENOSPC, f"no space left to write {path} ({free / 2**20:.1f} MiB free)") from None
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["atomic_write"]
