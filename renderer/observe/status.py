"""What the renderer knows and shows about itself: its record of passes, one immutable snapshot per pass (pure).

The loop records each pass in its :class:`LoopState`; ``running_serial``
only moves when nginx confirmed a reload: it is the serial of the pass
whose files nginx runs.

The daemon's loop builds a :class:`StatusSnapshot` after each pass and
publishes it with a reference swap; the status endpoint (``/``, ``/ready``,
``/metrics``' gauges) reads only that, from its own thread. Everything in it
is immutable, most of it the very objects the pass used (the route table,
the catalog), so publishing is cheap at any catalog size.

"The routing table as nginx has it now" is the table of the last pass whose
files nginx confirmed running (or that changed nothing nginx needed), not of
the last pass attempted: a pass nginx refused shows as a failure, and the
table stays the one nginx serves.

Nothing secret is in a snapshot: no KV values (templates may render
secrets, so the page shows what changed in the *route table*, never a diff
of the rendered files), no token, no settings beyond template paths.
"""

from __future__ import annotations

import collections
import dataclasses
import time

from renderer.catalog.model import PASSING, Catalog, Instance
from renderer.routes.model import Pool, RouteTable

MAX_CHANGE_LINES = 200


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

    @classmethod
    def of(cls, serial: int, at: float, seconds: float, outcome) -> "PassRecord":
        """The record of a pass from its outcome (None: Consul was unreachable)."""
        result = outcome.result if outcome else None
        return cls(serial=serial, at=at, seconds=seconds, rendered=outcome.rendered if outcome else 0,
                   changed=tuple(str(c.destination) for c in result.applied) if result else (),
                   failures=tuple(outcome.failed) if outcome else ("incomplete: Consul unreachable",),
                   reloaded=bool(result and result.reloaded), complete=bool(outcome and not outcome.missing),
                   check_ms=result.check_ms if result and result.check_ms else None,
                   reload_ms=result.reload_ms if result and result.reloaded else None,
                   reload_error=result.reload_error if result else None)


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


@dataclasses.dataclass(frozen=True)
class TemplateStatus:
    source: str
    destination: str
    error: str | None  # why it fails now, if it does


@dataclasses.dataclass(frozen=True)
class StatusSnapshot:
    version: str
    started: float                         # wall clock
    published: float                       # wall clock
    ready: bool
    ready_reason: str                      # the one line /ready answers
    consul_reachable: bool | None
    catalog_index: int
    running_serial: int | None             # the pass whose files nginx runs
    passes: tuple[PassRecord, ...] = ()    # newest first
    pending: tuple[tuple[str, str], ...] = ()
    templates: tuple[TemplateStatus, ...] = ()
    table: RouteTable | None = None        # as nginx runs it (None: no template reads routes())
    catalog: Catalog | None = None         # what that table was built from
    held: tuple[Instance, ...] = ()        # kept in nginx by the grace hold
    held_until: float | None = None        # wall clock
    change: tuple[str, ...] = ()           # what the last change of the route table did
    change_at: float | None = None
    peers: tuple[int | None, str | None, float | None] | None = None  # dynamic peers: version, digest, pushed
    excluded: tuple[tuple[str, str, str], ...] = ()  # (service, nginx's line, template): left out, nginx refused it


def readiness(first_pass_done: bool, consul_reachable: bool | None, pending: dict[str, str],
              running_serial: int | None, catalog_index: int) -> tuple[bool, str]:
    """``/ready``: the first full pass done, the last one applied, Consul reachable; the line says which not."""
    if consul_reachable is False:
        return False, "not ready: Consul unreachable; nginx keeps its current configuration"
    if not first_pass_done:
        return False, "not ready: the first render pass has not completed"
    if pending:
        what, why = next(iter(sorted(pending.items())))
        more = f" (and {len(pending) - 1} more)" if len(pending) > 1 else ""
        return False, f"not ready: {what}: {why}{more}"
    serial = f"pass {running_serial}" if running_serial is not None else "the files already in place"
    return True, f"ready: nginx runs {serial}, catalog index {catalog_index}"


def route_lines(table: RouteTable | None) -> set[str]:
    """The table as comparable lines: routes, then every pool's servers."""
    if table is None:
        return set()
    lines = set()
    for scheme, host, location in table.routes():
        lines.add(f"route {scheme}://{host.name}{location.path} -> {location.service} ({location.action})")
    for route in table.passthrough:
        lines.add(f"route tls-passthrough {route.host} -> {route.service}")
    for listener in table.listeners:
        lines.add(f"route {listener.protocol}/{listener.port} -> {listener.service}")
    pools: dict[str, Pool] = {pool.name: pool for pool in table.pools}
    for listener in table.listeners:
        if listener.pool is not None:
            pools.setdefault(listener.pool.name, listener.pool)
    for route in table.passthrough:
        if route.pool is not None:
            pools.setdefault(route.pool.name, route.pool)
    for name, pool in pools.items():
        for server in pool.servers:
            lines.add(f"pool {name}: {server.address} weight {server.weight} ({server.instance})")
    return lines


def route_change(before: RouteTable | set[str] | None, after: RouteTable | set[str] | None) -> tuple[str, ...]:
    """``- line`` / ``+ line``, removals first; empty when nothing a client sees changed.

    Either side may be given as its ``route_lines`` already (the daemon keeps
    the running table's: at 5,000 services they cost milliseconds a pass).
    """
    if before is after:
        return ()
    old = before if isinstance(before, (set, frozenset)) else route_lines(before)
    new = after if isinstance(after, (set, frozenset)) else route_lines(after)
    lines = [f"- {line}" for line in sorted(old - new)] + [f"+ {line}" for line in sorted(new - old)]
    if len(lines) > MAX_CHANGE_LINES:
        lines = lines[:MAX_CHANGE_LINES] + [f"… and {len(lines) - MAX_CHANGE_LINES} more"]
    return tuple(lines)


def instance_counts(table: RouteTable | None, catalog: Catalog | None, held: int) -> dict[str, int]:
    """``renderer_instances`` by state: routed (a server in nginx), not passing, held by the grace hold."""
    routed = 0
    if table is not None:
        servers = {(pool.name, server.address) for pool in table.pools for server in pool.servers}
        servers |= {(l.pool.name, s.address) for l in table.listeners if l.pool for s in l.pool.servers}
        servers |= {(p.pool.name, s.address) for p in table.passthrough if p.pool for s in p.pool.servers}
        routed = len(servers)
    elif catalog is not None:
        routed = sum(1 for i in catalog.instances if i.status == PASSING)
    not_passing = sum(1 for i in catalog.instances if i.status != PASSING) if catalog is not None else 0
    return {"routed": routed, "not_passing": not_passing, "held": held}
