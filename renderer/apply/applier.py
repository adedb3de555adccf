"""Stage, validate, swap, reload once and confirm; what nginx refuses is put back.

The applier gets the set of files a render pass changed and makes them the
live config only if the check command accepts the whole set:

1. each file is written atomically (temp file in the same directory, fsync,
   the previous mode kept, rename, directory fsync) after the version nginx
   runs is kept aside as a hard link ``.NAME.renderer-previous`` (or an
   empty ``.NAME.renderer-absent`` marker where there was no file): no bytes
   are copied;
2. the check command runs once for the whole set;
3. if it fails and nginx names one of our files, that file alone is put
   back and the check runs again, so one bad template does not hold back the
   others; if nginx names none of them, every file is put back;
4. the reload command runs once, and the reload counts only when nginx
   confirms it loaded the files (see :mod:`renderer.nginx_master`). If nginx
   refuses them and its line names one of the files, or a ``listen`` port
   only one of them declares (``bind() to 0.0.0.0:22 failed``), that file is
   put back and the rest reloaded; otherwise the files stay (they are
   valid), the reload is pending and retried with capped backoff.

The kept-aside versions are the journal, and they mean "what nginx last
confirmed running": they stay until nginx confirms a reload, across passes.
So a crash (SIGKILL, power loss) or a reload that never took leaves a
journal, and ``recover()``, run before the first pass, puts every such
destination back: the first pass then renders the new files again, checks
them and reloads. Each destination is always either old or new, never torn,
and what is on disk either runs in nginx or is about to be reloaded.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentkit.backoff import Retry

from renderer.errors import CommandFailed, ReloadNotTaken, WriteFailed
from .nginx_master import unbindable


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
    rejected: list[tuple[FileChange, str]] = dataclasses.field(default_factory=list)    # by the check
    refused: list[tuple[FileChange, str]] = dataclasses.field(default_factory=list)     # at the reload
    unwritable: list[tuple[FileChange, str]] = dataclasses.field(default_factory=list)
    reloaded: bool = False   # the reload succeeded ...
    confirmed: bool = False  # ... and nginx confirmed it runs the files (see renderer.nginx_master)
    reload_ms: float = 0.0
    check_ms: float = 0.0   # the check command's time, every run of it in this pass
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
        previous, absent = _aside(destination, PREVIOUS), _aside(destination, ABSENT)
        if previous.exists():
            os.replace(previous, destination)
        elif absent.exists():
            destination.unlink(missing_ok=True)
            absent.unlink()
        else:
            continue
        _fsync_directory(directory)
        restored.append(destination)
    return restored


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@dataclasses.dataclass
class _Unconfirmed:
    """A destination whose new version nginx has not confirmed loading; its running version is aside."""

    change: FileChange
    existed: bool

    @property
    def aside(self) -> Path:
        return _aside(self.change.destination, PREVIOUS if self.existed else ABSENT)

    def forget(self) -> None:
        self.aside.unlink(missing_ok=True)


class Applier:
    def __init__(self, check: Callable[[], None], reload: Callable[[], bool | None], clock=time.monotonic):
        """``reload`` returns False when it could only send the signal, not confirm nginx took it."""
        self.check = check
        self.reload = reload
        self.clock = clock
        self.unconfirmed: dict[Path, _Unconfirmed] = {}
        self.reload_retry = Retry()

    @property
    def reload_pending(self) -> bool:
        """Files on disk that nginx has not confirmed running."""
        return bool(self.unconfirmed)

    def reload_due(self, now: float) -> bool:
        return self.reload_pending and (not self.reload_retry.pending or self.reload_retry.due(now))

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
        result.applied = [entry.change for entry in staged]
        if self.unconfirmed and (result.applied or self.reload_due(self.clock())):
            self._reload(result)
        return result

    def _stage(self, change: FileChange) -> _Unconfirmed:
        path = change.destination
        known = self.unconfirmed.get(path)
        entry = _Unconfirmed(change, known.existed if known else path.exists())
        if known is None:  # keep what nginx runs aside; an unconfirmed one already is
            aside = entry.aside
            aside.unlink(missing_ok=True)
            if entry.existed:
                os.link(path, aside)  # the previous inode, kept: atomic rename leaves it untouched
            else:
                aside.touch()
        try:
            if change.content is None:
                remove(path)
            else:
                write_atomically(path, change.content)
        except OSError:
            if known is None:
                entry.forget()
            raise
        self.unconfirmed[path] = entry
        return entry

    def _validate(self, staged: list[_Unconfirmed], result: ApplyResult) -> list[_Unconfirmed]:
        """Check the staged set; put culprits back until it passes or nothing is left."""
        while staged:
            started = self.clock()
            try:
                self.check()
                result.check_ms += (self.clock() - started) * 1000
                return staged
            except CommandFailed as failure:
                result.check_ms += (self.clock() - started) * 1000
                culprit = next((s for s in staged if str(s.change.destination) in failure.detail), None)
                blamed = [culprit] if culprit else list(staged)
                for entry in blamed:
                    self._restore(entry)
                    result.rejected.append((entry.change, failure.detail))
                staged = [s for s in staged if s not in blamed]
        return staged

    def _restore(self, entry: _Unconfirmed) -> None:
        """Put back the version nginx runs."""
        path = entry.change.destination
        self.unconfirmed.pop(path, None)
        try:
            if entry.existed:
                os.replace(entry.aside, path)
            else:
                remove(path)
                entry.forget()
            _fsync_directory(path.parent)
        except OSError as error:
            raise WriteFailed(f"cannot restore {path}: {error.strerror}") from None

    def _reload(self, result: ApplyResult) -> None:
        while self.unconfirmed:
            started = self.clock()
            try:
                confirmed = self.reload()
            except (CommandFailed, ReloadNotTaken) as failure:
                culprit = self._reload_culprit(failure.detail)
                if culprit is None:
                    result.reload_error = failure.detail
                    self.reload_retry.failed(self.clock())
                    return
                self._restore(culprit)
                result.refused.append((culprit.change, failure.detail))
                continue
            for entry in self.unconfirmed.values():
                entry.forget()
            self.unconfirmed.clear()
            self.reload_retry.succeeded()
            result.reloaded, result.confirmed = True, confirmed is not False
            result.reload_ms = (self.clock() - started) * 1000
            return

    def _reload_culprit(self, detail: str) -> _Unconfirmed | None:
        """The one unconfirmed file nginx's refusal points at: named, or alone in listening on the port."""
        for path, entry in self.unconfirmed.items():
            if str(path) in detail:
                return entry
        bind = unbindable(detail)
        if bind:
            listen = re.compile(rf"(?:^|[{{;])\s*listen\s+(?:\S*:)?{bind[1]}\b".encode(), re.MULTILINE)
            holders = [entry for entry in self.unconfirmed.values()
                       if entry.change.content is not None and listen.search(entry.change.content)]
            if len(holders) == 1:
                return holders[0]
        return None
