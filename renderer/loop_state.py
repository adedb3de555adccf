"""What the renderer knows about itself: the record a status endpoint shows (pure data).

The loop updates it after each pass; nothing reads it back to make a
decision, so it can never make the loop believe something it did not check.
``running_serial`` only moves when nginx confirmed a reload: it is the
serial of the pass whose files nginx runs.
"""

from __future__ import annotations

import collections
import dataclasses
import time


@dataclasses.dataclass(frozen=True)
class PassRecord:
    serial: int
    at: float                  # wall clock (time.time()) when the pass started
    seconds: float
    rendered: int
    changed: tuple[str, ...]   # destinations written or removed
    failures: tuple[str, ...]  # one line each
    reloaded: bool             # nginx confirmed it runs this pass's files
    complete: bool             # every template rendered with all its data
    check_ms: float | None = None      # nginx -t, when it ran
    reload_ms: float | None = None     # signal to confirmation, when nginx was reloaded
    reload_error: str | None = None    # nginx's own line, when it refused the reload


@dataclasses.dataclass
class LoopState:
    started: float = dataclasses.field(default_factory=time.time)
    ready: bool = False               # the first pass completed, or was given up on for now (Consul down)
    first_pass_done: bool = False
    consul_reachable: bool | None = None
    catalog_index: int = 0
    running_serial: int | None = None  # the pass whose configuration nginx confirmed running
    last_good: PassRecord | None = None
    pending: dict[str, str] = dataclasses.field(default_factory=dict)  # what fails now, and why
    passes: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=50))

    def record(self, entry: PassRecord, pending: dict[str, str]) -> None:
        self.passes.append(entry)
        self.pending = dict(pending)
        if entry.reloaded:
            self.running_serial = entry.serial
        if entry.complete and not entry.failures:
            self.last_good = entry
