"""The journal: what nginx last confirmed running, kept aside until it confirms the next version.

Before a destination is written, the version nginx runs is kept aside as a
hard link ``.NAME.renderer-previous`` (or an empty ``.NAME.renderer-absent``
marker where there was no file): no bytes are copied, and the atomic
rename that writes the new version leaves that inode untouched. The aside
versions stay until nginx confirms a reload, across passes, so a crash
(SIGKILL, power loss) or a reload that never took leaves a journal, and
:func:`recover`, run before the first pass of a process, puts every such
destination back: the first pass then renders the new files again, checks
them and reloads. Each destination is always either old or new, never torn,
and what is on disk either runs in nginx or is about to be reloaded.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from agentkit.files import fsync_directory, remove

from renderer.errors import WriteFailed

PREVIOUS, ABSENT = ".renderer-previous", ".renderer-absent"


@dataclasses.dataclass(frozen=True)
class FileChange:
    destination: Path
    content: bytes | None  # None removes the file
    template: str

    def __str__(self) -> str:
        return f"{self.destination} (from {self.template})"


def aside(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}{suffix}")


@dataclasses.dataclass
class Unconfirmed:
    """A destination whose new version nginx has not confirmed loading; its running version is aside."""

    change: FileChange
    existed: bool

    @property
    def aside(self) -> Path:
        return aside(self.change.destination, PREVIOUS if self.existed else ABSENT)

    def keep_aside(self) -> None:
        """Keep what nginx runs now (the file, or the fact that there is none) before it is replaced."""
        kept = self.aside
        kept.unlink(missing_ok=True)
        if self.existed:
            os.link(self.change.destination, kept)  # the previous inode, kept: atomic rename leaves it untouched
        else:
            kept.touch()

    def put_back(self) -> None:
        """Put back the version nginx runs."""
        path = self.change.destination
        try:
            if self.existed:
                os.replace(self.aside, path)
            else:
                remove(path)
                self.forget()
            fsync_directory(path.parent)
        except OSError as error:
            raise WriteFailed(f"cannot restore {path}: {error.strerror}") from None

    def forget(self) -> None:
        """nginx runs the new version: the aside one is no longer needed."""
        self.aside.unlink(missing_ok=True)


def recover(destinations) -> list[Path]:
    """Put back what nginx last confirmed running for these destinations; return those put back.

    Only the renderer's own destinations are touched: another renderer (or a
    hand-written file) sharing the directory keeps its files and its journal.
    """
    restored = []
    for destination in sorted({Path(d) for d in destinations}):
        directory = destination.parent
        if not directory.is_dir():
            continue
        for stray in directory.glob(f".{glob_escape(destination.name)}.*.tmp"):
            stray.unlink(missing_ok=True)  # a write that never got renamed
        previous, absent = aside(destination, PREVIOUS), aside(destination, ABSENT)
        if previous.exists():
            os.replace(previous, destination)
        elif absent.exists():
            destination.unlink(missing_ok=True)
            absent.unlink()
        else:
            continue
        fsync_directory(directory)
        restored.append(destination)
    return restored


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
