"""The loop's side of dynamic peers: which table nginx holds, and pushing the current one until it does.

Level-triggered like the rest of the loop: the table is the route table's
(:mod:`.table`), and nginx must hold it. So it is

* pushed early in a pass, once the route table is built and before the
  templates render: an instance move reaches nginx without waiting for the
  render (:meth:`PeerCoordinator.push_early`), as a patch onto the table
  nginx confirmed last (the whole table when nginx holds another);
* written to the file nginx loads at start right before a pass applies
  files, so a reload that adds an upstream finds its peers
  (:meth:`PeerCoordinator.write`);
* made sure of after every pass, and every ``CHECK_EVERY`` seconds by asking
  nginx which table it holds: a table lost to an nginx restart, or a push
  that failed, is pushed again with capped backoff
  (:meth:`PeerCoordinator.ensure`).

Pools a route change drops stay in the push, with the peers nginx had for
them, until nginx confirms the reload that removes them (the same while the
reload is refused or a template fails): the configuration nginx still runs
may read them, and a pool taken away early would answer 502.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agentkit.backoff import Retry

from renderer.routes.model import RouteTable

from .sync import PeerPushFailed, PeerSync
from .table import PeerTable

log = logging.getLogger("renderer")

CHECK_EVERY = 10.0  # seconds between asking nginx which peer table it holds


class PeerCoordinator:
    def __init__(self, sync: PeerSync, metrics, clock, on_change: Callable[[], None]):
        """``metrics``: the renderer's (``peer_pushes``, ``peer_version``); ``on_change``: publish the status."""
        self.sync, self.metrics, self.clock, self.on_change = sync, metrics, clock, on_change
        self.render_pass = None
        self.retry = Retry()                     # a push nginx did not take
        self.confirmed: str | None = None        # the digest nginx confirmed holding
        self.held: PeerTable | None = None       # ...and that table
        self.version: int | None = None
        self.pushed_at: float | None = None      # wall clock
        self.took_at: float | None = None        # when a push of the current pass was confirmed (loop clock)
        self.error: str | None = None
        self.check_at = 0.0                      # next time to ask nginx what it holds
        self._table_of: tuple = (None, None)     # (route table, its peer table)

    def attach(self, render_pass) -> None:
        """Follow this render pass: its route table, its hooks, its pending reload."""
        self.render_pass = render_pass
        render_pass.before_apply = self.write
        render_pass.before_render = self.push_early

    @property
    def status(self) -> tuple[int | None, str | None, float | None]:
        """(version, digest, pushed at) of the table nginx confirmed holding, for the status page."""
        return self.version, self.confirmed, self.pushed_at

    def due(self, now: float) -> bool:
        return self.retry.due(now) or now >= self.check_at

    def due_in(self, now: float) -> float:
        return max(0.0, min(self.check_at, self.retry.at or self.check_at) - now)

    def start_pass(self) -> None:
        self.took_at = None

    def table(self, data) -> PeerTable | None:
        """The peer table of this data's route table; made once per route table (a pass asks up to three
        times: the early push, the write before a reload, the check after the pass)."""
        table = data.evaluated(("routes", self.render_pass.loader.route_options))
        if not isinstance(table, RouteTable):
            return None
        if self._table_of[0] is not table:
            self._table_of = (table, PeerTable.of(table, self._table_of[1]))
        return self._table_of[1]

    def write(self, data) -> None:
        """Before files are applied: the table a reload makes nginx load (init_by_lua) is the new one."""
        peers = self.table(data)
        if peers is not None:
            self.version = self.sync.write(peers)

    def push_early(self, data) -> None:
        """Before the templates render. A push that fails here is left to :meth:`ensure` after the pass,
        which retries and reports it."""
        peers = self.table(data)
        if peers is None or peers.digest == self.confirmed or self.error is not None:
            return
        pushed = peers.keeping(self.held)
        started = self.clock()
        try:
            held = self.sync.push(pushed, self.sync.new_version(), base=self.held)
        except PeerPushFailed as error:
            log.debug("early peer push failed (%s); pushing after the pass", error)
            return
        self._taken(pushed, held, started)
        try:  # after the push, which it would delay: nothing reloads nginx before the pass writes it again
            self.sync.write(peers, held.version if pushed is peers else None)
        except OSError as error:
            log.debug("writing %s after the early push failed (%s); written again after the pass",
                      self.sync.table_file, error)

    def ensure(self, data, verify: bool = False) -> None:
        """Make nginx hold the current peer table; with ``verify``, ask it first (a restart, a lost push)."""
        self.check_at = self.clock() + CHECK_EVERY
        peers = self.table(data)
        if peers is None:
            return
        render_pass = self.render_pass
        if render_pass.applier.reload_pending or render_pass.pending_failures():
            pushed = peers.keeping(self.held)
        else:
            pushed = peers
        base = self.held  # what nginx confirmed holding: the push is a patch onto it
        try:
            self.version = self.sync.write(peers)
            if verify and self.confirmed == pushed.digest:
                if self.sync.held().digest == pushed.digest:
                    self.retry.succeeded()
                    return
                log.warning("nginx no longer holds peer table %s (restarted?): pushing it again", pushed.digest)
                base = None
            elif self.confirmed == pushed.digest:
                return
            started = self.clock()
            held = self.sync.push(pushed, self.version if pushed is peers else self.sync.new_version(), base=base)
        except (PeerPushFailed, OSError) as error:
            delay = self.retry.failed(self.clock())
            message = str(error) if isinstance(error, PeerPushFailed) else f"writing {self.sync.table_file}: {error}"
            if message != self.error:
                log.warning("peer table not pushed: %s; retrying in %.0fs", message, delay)
            self.error = message
            self.metrics.peer_pushes.labels("failed").inc()
            self.on_change()
            return
        self._taken(pushed, held, started)

    def _taken(self, peers: PeerTable, held, started: float) -> None:
        self.retry.succeeded()
        self.confirmed, self.held, self.version, self.error = peers.digest, peers, held.version, None
        self.pushed_at = time.time()
        self.took_at = self.clock()
        self.metrics.peer_pushes.labels("confirmed").inc()
        self.metrics.peer_version.set(held.version)
        elapsed = (self.clock() - started) * 1000
        how = "whole" if held.patched is None else f"a patch of {held.patched} pool(s)"
        log.info("nginx took peer table %d: %d peer(s) in %d pool(s), no reload (%s, %.0f ms)", held.version,
                 peers.servers, len(peers.pools), how, elapsed, extra={"duration_ms": round(elapsed)})
        self.on_change()


def push_once(sync: PeerSync, peers: PeerTable | None) -> None:
    """``renderer once``: nginx holds this table when this returns (PeerPushFailed otherwise)."""
    if peers is None:
        return
    try:
        version = sync.write(peers)
    except OSError as error:
        raise PeerPushFailed(f"writing {sync.table_file}: {error.strerror}") from None
    held = sync.push(peers, version)
    log.info("nginx took peer table %d: %d peer(s) in %d pool(s)", held.version, peers.servers, len(peers.pools))
