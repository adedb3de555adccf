"""Stage, validate, swap, reload once; on failure put every file back.

The applier gets the set of files a render pass changed and makes them the
live config only if the check command accepts the whole set:

1. each file is written atomically (temp file in the same directory, fsync,
   the previous mode kept, rename, directory fsync) after its previous
   version is kept aside as a hard link ``.NAME.renderer-previous`` (or an
   empty ``.NAME.renderer-absent`` marker for a new file): no bytes are
   copied, and the previous version survives the process;
2. the check command runs once for the whole set;
3. if it fails and nginx names one of our files, that file alone is put back
   and the check runs again, so one bad template does not hold back the
   others; if nginx names none of them, every file is put back;
4. if anything changed, the reload command runs once.

A failed reload leaves the (valid) files in place and is retried on the next
pass, so the daemon converges once nginx can reload again.

A crash (SIGKILL, power loss) can leave a destination new but unvalidated;
each destination is always either old or new, never torn. The kept-aside
versions are the journal: ``recover()`` runs before the first pass and puts
every interrupted destination back, so what is on disk was validated.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import CommandFailed, WriteFailed


@dataclasses.dataclass(frozen=True)
class FileChange:
    destination: Path
    content: bytes | None  # None removes the file
    template: str

    def __str__(self) -> str:
        return f"{self.destination} (from {self.template})"


@dataclasses.dataclass
class ApplyResult:
    applied: list[FileChange] = dataclasses.field(default_factory=list)
    rejected: list[tuple[FileChange, str]] = dataclasses.field(default_factory=list)
    unwritable: list[tuple[FileChange, str]] = dataclasses.field(default_factory=list)
    reloaded: bool = False
    reload_ms: float = 0.0
    reload_error: str | None = None


def read_current(path: Path) -> bytes | None:
    """The file's bytes, or None where there is no file (or no directory for it)."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_atomically(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` so readers see old or new bytes, never a mix; keep its mode."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
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
    _fsync_directory(path.parent)


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


PREVIOUS, ABSENT = ".renderer-previous", ".renderer-absent"


def _aside(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}{suffix}")


def recover(directories) -> list[Path]:
    """Undo passes interrupted by a crash in these directories; return the destinations put back."""
    restored = []
    for directory in sorted({Path(d) for d in directories}):
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            name = entry.name
            if name.startswith(".") and name.endswith(".tmp"):
                entry.unlink(missing_ok=True)  # a write that never got renamed
                continue
            for suffix in (PREVIOUS, ABSENT):
                if name.startswith(".") and name.endswith(suffix):
                    destination = directory / name[1:-len(suffix)]
                    if suffix == PREVIOUS:
                        os.replace(entry, destination)
                    else:
                        destination.unlink(missing_ok=True)
                        entry.unlink()
                    restored.append(destination)
        if restored:
            _fsync_directory(directory)
    return restored


@dataclasses.dataclass
class _Staged:
    change: FileChange
    existed: bool

    @property
    def aside(self) -> Path:
        return _aside(self.change.destination, PREVIOUS if self.existed else ABSENT)

    def forget(self) -> None:
        self.aside.unlink(missing_ok=True)


class Applier:
    def __init__(self, check: Callable[[], None], reload: Callable[[], None], clock=time.monotonic):
        self.check = check
        self.reload = reload
        self.clock = clock
        self.reload_pending = False

    def apply(self, changes: list[FileChange]) -> ApplyResult:
        result = ApplyResult()
        staged = []
        for change in changes:
            try:
                staged.append(self._stage(change))
            except OSError as error:
                result.unwritable.append((change, error.strerror or str(error)))
        if staged:
            staged = self._validate(staged, result)
        for item in staged:
            item.forget()
        result.applied = [s.change for s in staged]
        if result.applied or self.reload_pending:
            self._reload(result)
        return result

    def _stage(self, change: FileChange) -> _Staged:
        path = change.destination
        existed = path.exists()
        staged = _Staged(change, existed)
        aside = staged.aside
        aside.unlink(missing_ok=True)
        if existed:
            os.link(path, aside)  # the previous inode, kept: atomic rename leaves it untouched
        else:
            aside.touch()
        try:
            if change.content is None:
                remove(path)
            else:
                write_atomically(path, change.content)
        except OSError:
            staged.forget()
            raise
        return staged

    def _validate(self, staged: list[_Staged], result: ApplyResult) -> list[_Staged]:
        """Check the staged set; unstage culprits until it passes or nothing is left."""
        while staged:
            try:
                self.check()
                return staged
            except CommandFailed as failure:
                culprit = next((s for s in staged if str(s.change.destination) in failure.detail), None)
                blamed = [culprit] if culprit else list(staged)
                for item in blamed:
                    self._restore(item)
                    result.rejected.append((item.change, failure.detail))
                staged = [s for s in staged if s not in blamed]
        return staged

    def _restore(self, staged: _Staged) -> None:
        path = staged.change.destination
        try:
            if staged.existed:
                os.replace(staged.aside, path)
            else:
                remove(path)
                staged.forget()
            _fsync_directory(path.parent)
        except OSError as error:
            raise WriteFailed(f"cannot restore {path}: {error.strerror}") from None

    def _reload(self, result: ApplyResult) -> None:
        started = self.clock()
        try:
            self.reload()
        except CommandFailed as failure:
            self.reload_pending = True
            result.reload_error = failure.detail
            return
        self.reload_pending = False
        result.reloaded = True
        result.reload_ms = (self.clock() - started) * 1000
