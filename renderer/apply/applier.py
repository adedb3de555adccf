"""Stage, validate, swap, reload once and confirm; what nginx refuses is put back.

The applier gets the set of files a render pass changed and makes them the
live config only if nginx accepts the whole set:

1. each file is written atomically (:mod:`agentkit.files`) after the
   version nginx runs is kept aside (:mod:`.journal`);
2. the check command runs once for the whole set -- or, by default where
   the reload is confirmed, only once the reload was refused: nginx's
   master parses the whole configuration at a reload and keeps running the
   previous one when it does not, so a separate ``nginx -t`` first would
   parse everything twice for every change (at 5,000 services, 1.2 s of a
   route change's 4.4 s) and buy only the culprit's name, needed only then;
3. if it fails and nginx names one of our files, that file alone is put
   back and the check runs again, so one bad template does not hold back the
   others; if nginx names none of them, every file is put back;
4. the reload command runs once, and the reload counts only when nginx
   confirms it loaded the files (see :mod:`.nginx_master`). If nginx
   refuses them and its line names one of the files, or a ``listen`` port
   only one of them declares (``bind() to 0.0.0.0:22 failed``), that file is
   put back and the rest reloaded; otherwise the files stay (they are
   valid), the reload is pending and retried with capped backoff.

Either way nginx refused the file: ``nginx -t`` refused it before the
reload (``ApplyResult.refused_by_check``) or nginx's master refused it at
the reload (``refused_at_reload``).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from pathlib import Path

from agentkit.backoff import Retry
from agentkit.files import remove, write_atomically

from renderer.errors import CommandFailed, ReloadNotTaken

from .journal import FileChange, Unconfirmed
from .nginx_master import unbindable

MAX_ISOLATIONS = 8  # services left out in one apply before a file still refused is put back whole


@dataclasses.dataclass
class ApplyResult:
    applied: list[FileChange] = dataclasses.field(default_factory=list)
    refused_by_check: list[tuple[FileChange, str]] = dataclasses.field(default_factory=list)   # nginx -t
    refused_at_reload: list[tuple[FileChange, str]] = dataclasses.field(default_factory=list)  # nginx's master
    unwritable: list[tuple[FileChange, str]] = dataclasses.field(default_factory=list)
    # Refused by nginx -t, then applied without the service nginx named (renderer.render.isolation).
    isolated: list[tuple[FileChange, str]] = dataclasses.field(default_factory=list)
    reloaded: bool = False   # the reload succeeded ...
    confirmed: bool = False  # ... and nginx confirmed it runs the files (see .nginx_master)
    reload_ms: float = 0.0
    check_ms: float = 0.0   # the check command's time, every run of it in this pass
    reload_error: str | None = None


class Applier:
    def __init__(self, check: Callable[[], None], reload: Callable[[], bool | None], clock=time.monotonic,
                 check_first: bool = True):
        """``reload`` returns False when it could only send the signal, not confirm nginx took it.
        ``check_first=False``: the reload validates (see the module's docstring), the check runs only when
        nginx refused it; only for a reload nginx confirms, since an unconfirmed one cannot be refused."""
        self.check = check
        self.reload = reload
        self.clock = clock
        self.check_first = check_first
        # isolate(change, nginx's complaint, trial) -> the file's content without the culprit, or None:
        # what the render pass offers before a refused file is put back (renderer.render.isolation).
        self.isolate: Callable | None = None
        self.unconfirmed: dict[Path, Unconfirmed] = {}
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
        if staged and self.check_first:
            staged = self._validate(staged, result)
        if self.unconfirmed and (staged or self.reload_due(self.clock())):
            self._reload(result)
        refused = {change.destination for change, _ in (*result.refused_by_check, *result.refused_at_reload)}
        result.applied = [entry.change for entry in staged if entry.change.destination not in refused]
        return result

    def _stage(self, change: FileChange) -> Unconfirmed:
        path = change.destination
        known = self.unconfirmed.get(path)
        entry = Unconfirmed(change, known.existed if known else path.exists())
        if known is None:  # keep what nginx runs aside; an unconfirmed one already is
            entry.keep_aside()
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

    def _validate(self, staged: list[Unconfirmed], result: ApplyResult) -> list[Unconfirmed]:
        """Check the staged set; isolate or put back culprits until it passes or nothing is left."""
        rounds = 0
        while staged:
            started = self.clock()
            try:
                self.check()
                result.check_ms += (self.clock() - started) * 1000
                return staged
            except CommandFailed as failure:
                result.check_ms += (self.clock() - started) * 1000
                culprit = next((s for s in staged if str(s.change.destination) in failure.detail), None)
                if rounds < MAX_ISOLATIONS and self._isolated(culprit, staged, failure.detail, result):
                    rounds += 1
                    continue
                blamed = [culprit] if culprit else list(staged)
                for entry in blamed:
                    self._restore(entry)
                    result.refused_by_check.append((entry.change, failure.detail))
                staged = [s for s in staged if s not in blamed]
        return staged

    def _isolated(self, culprit: Unconfirmed | None, staged: list[Unconfirmed], detail: str,
                  result: ApplyResult) -> bool:
        """Did the render pass replace the refused file (or, when nginx names none, one of them) with one
        nginx may take (the culprit service left out)? The replacement is staged; the set is checked again."""
        if self.isolate is None:
            return False
        for entry in [culprit] if culprit else [s for s in staged if s.change.content is not None]:
            original = entry.change

            def trial(content: bytes) -> str | None:
                write_atomically(original.destination, content)
                try:
                    self.check()
                except CommandFailed as failure:
                    return failure.detail
                return None

            content = self.isolate(original, detail, trial)
            if content is not None:
                entry.change = dataclasses.replace(original, content=content)
                write_atomically(original.destination, content)
                result.isolated.append((entry.change, detail))
                return True
            if original.content is not None:  # trials may have left other bytes in place
                write_atomically(original.destination, original.content)
        return False

    def _restore(self, entry: Unconfirmed) -> None:
        """Put back the version nginx runs."""
        self.unconfirmed.pop(entry.change.destination, None)
        entry.put_back()

    def _reload(self, result: ApplyResult) -> None:
        checked = self.check_first
        while self.unconfirmed:
            started = self.clock()
            try:
                confirmed = self.reload()
            except (CommandFailed, ReloadNotTaken) as failure:
                if not checked:  # reload first: now the check names what nginx refused, isolated or put back
                    checked = True
                    entries, isolated = list(self.unconfirmed.values()), len(result.isolated)
                    if len(self._validate(entries, result)) < len(entries) or len(result.isolated) > isolated:
                        continue
                culprit = self._reload_culprit(failure.detail)
                if culprit is None:
                    result.reload_error = failure.detail
                    self.reload_retry.failed(self.clock())
                    return
                self._restore(culprit)
                result.refused_at_reload.append((culprit.change, failure.detail))
                continue
            for entry in self.unconfirmed.values():
                entry.forget()
            self.unconfirmed.clear()
            self.reload_retry.succeeded()
            result.reloaded, result.confirmed = True, confirmed is not False
            result.reload_ms = (self.clock() - started) * 1000
            return

    def _reload_culprit(self, detail: str) -> Unconfirmed | None:
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
