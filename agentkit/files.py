"""Writing a file so that readers see the old bytes or the new, never a mix, and a crash leaves one of them.

The one atomic writer: the renderer's rendered files and their journal, and
the peer table nginx loads at start, all go through it. A temporary file in
the same directory is written and fsynced, given the mode of the file it
replaces (0644 for a new one: nginx's master and workers read these), and
renamed over it; the directory is fsynced so the rename survives a power
loss.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

NEW_FILE_MODE = 0o644


def write_atomically(path: Path, content: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``content``; its mode is kept, unless ``mode`` is given (a private key's 0600,
    whatever the file had). Its directory must exist."""
    path = Path(path)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = NEW_FILE_MODE
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(path.parent)


def remove(path: Path) -> None:
    """Remove ``path`` (already gone is fine), durably."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return
    fsync_directory(Path(path).parent)


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_current(path: Path) -> bytes | None:
    """The file's bytes, or None where there is no file (or no directory for it)."""
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
