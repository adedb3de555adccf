"""The renderer daemon: one loop, whose state says what is pending.

Threads: one blocking watch on the catalog (if any template reads it), one on
KV (if any template reads keys), the template-file observer. They only put
events on a ``queue.SimpleQueue`` (whose ``put`` is reentrant, so signal
handlers post to it directly); the main thread owns all state, renders and
applies. Events arriving together are handled as one batch, so one change
makes one pass and at most one reload; ``--wait`` adds quiescence on top.

Level-triggered: a pass is due when new data arrived (after ``--wait``),
when template files changed (after they settle), when something that failed
is due for its retry (a template, a file nginx rejected, a destination that
could not be written, an nginx reload: see ``render_pass`` and ``apply``),
and while a pass is incomplete (Consul unreachable, data still missing).
Nothing that failed waits for an unrelated change.

Under systemd (``Type=notify``): READY=1 once the first pass completed, or
as soon as it finds Consul unreachable (the daemon then keeps nginx's
current configuration and retries: a node whose Consul is down at boot must
start, not restart-loop); STATUS= tells which; WATCHDOG=1 from the loop
and from its bounded waits (``agentkit.lifecycle``).

:meth:`Daemon.step` runs one turn of the loop, so tests drive it with fake
watches, a fake Consul and an injected clock, without threads or sleeps.
"""

from __future__ import annotations

import gc
import logging
import queue
import shutil
import tempfile
import time
from collections.abc import Callable

import jinja2

from agentkit.backoff import Retry, consul_agent_backoff
from agentkit.consul import Consul
from agentkit.errors import AgentError, ConfigError, ConsulDenied, ConsulUnavailable
from agentkit.lifecycle import Lifecycle, Stopping
from agentkit.notify import Watchdog, notify as systemd_notify

from .apply import commands
from .apply.applier import Applier, recover
from .apply.nginx_master import NginxMaster
from .catalog import certificates
from .catalog.fetch import DEFAULT_WAIT, Fetched, fetch_catalog, fetch_kv, fill_missing
from .catalog.guard import CatalogGuard
from .catalog.kv import common_prefix
from .catalog.watch import BlockingWatch, Update
from .loop_state import LoopState, PassRecord
from .observe.service import StatusService
from .observe.status import StatusSnapshot, TemplateStatus, readiness, route_change, route_lines
from .peers.sync import PeerPushFailed, PeerSync
from .peers.table import PeerTable
from .quiescence import Quiescence, Wait
from .render.api import TemplateData
from .render.loader import TemplateLoader
from .render.render_pass import PassOutcome, RenderPass
from .render.template_files import TemplateFiles
from .routes.model import RouteTable
from .settings import Settings

log = logging.getLogger("renderer")

STOP, RELOAD_SETTINGS, FILES_CHANGED = "stop", "reload-settings", "files-changed"
MAX_FILL_ROUNDS = 4
PEER_CHECK_EVERY = 10.0  # seconds between asking nginx which peer table it holds (dynamic peers)  # a template may reveal new keys only once it has the previous ones
# An editor or `cat >` writes a template in steps (truncate, write); rendering
# the half-written file could apply an empty, valid config. Template events
# therefore settle this long before the template set is re-read.
TEMPLATE_SETTLE = Wait(0.25, 2.0)


def tune_garbage_collector() -> None:
    """Collect cycles rarely: the catalog is acyclic data, rebuilt on every change.

    Building a large catalog allocates tens of thousands of objects, and with
    Python's default thresholds (700 allocations) the cyclic collector runs
    over and over and scans everything alive. Measured on the 5,000 x 3 node
    dump with the msgspec decoder: catalog build 42 -> 14 ms (the decoded
    dump itself is not tracked, see renderer.node_dump). Cycles are still
    collected, less often.
    """
    gc.set_threshold(100_000, 50, 1000)


def make_pass(settings: Settings, lifecycle: Lifecycle | None = None,
              bytecode_cache: jinja2.BytecodeCache | None = None, retrying: bool = True) -> RenderPass:
    """The render pass for these settings: templates, limits, the nginx commands and their confirmation."""
    lifecycle = lifecycle or Lifecycle()
    master = (NginxMaster(settings.nginx_pid_file, settings.nginx_error_log, settings.reload_timeout, lifecycle)
              if settings.nginx_pid_file else None)

    def reload() -> bool:
        before = master.before() if master else None
        commands.run("nginx reload", settings.reload_command, lifecycle=lifecycle)
        if master is None:
            return False
        master.confirm(before)
        return True

    applier = Applier(check=lambda: commands.run("nginx config check", settings.check_command, lifecycle=lifecycle),
                      reload=reload, clock=lifecycle.clock)
    return RenderPass(TemplateLoader(settings.variables, bytecode_cache), applier, settings.template_specs(), settings.limits,
                      lifecycle, retrying)


def recover_destinations(settings: Settings) -> None:
    """Before the first pass of a process: put back what nginx last confirmed running."""
    for destination in recover(spec.destination for spec in settings.template_specs()):
        log.warning("put %s back as nginx last confirmed running it (an earlier pass was interrupted or "
                    "its reload never confirmed); rendering it again", destination)


def connect(settings: Settings, timeout: float = DEFAULT_WAIT + 20) -> Consul:
    return Consul(settings.consul_address, settings.consul_token, timeout=timeout, tls=settings.consul_tls)


def complete_pass(render_pass: RenderPass, data: TemplateData, client: Consul, fetched: Fetched,
                  force: bool = False, consistency: str = "default") -> tuple[TemplateData, PassOutcome]:
    """Run passes, fetching what templates found missing, until every template rendered."""
    outcome = render_pass.run(data, force)
    for _ in range(MAX_FILL_ROUNDS):
        if not outcome.missing:
            break
        data = fill_missing(client, data, outcome.missing, render_pass.kv_paths(), fetched, consistency)
        outcome = render_pass.run(data, force)
    return data, outcome


class _CatalogFetcher:
    """Keeps the previous catalog so unchanged instances are reused (cheap comparisons)."""

    def __init__(self, client: Consul, consistency: str, previous=None):
        self.client = client
        self.consistency = consistency
        self.previous = previous

    def __call__(self, index: int, wait: float):
        index, catalog = fetch_catalog(self.client, index, wait, self.previous, self.consistency)
        self.previous = catalog
        return index, catalog


def blocking_watch(source: str, fetch, deliver, wait: float, start_index: int):
    return BlockingWatch(source, fetch, deliver, wait, start_index=start_index).start()


class Daemon:
    def __init__(self, settings: Settings, rebuild_settings: Callable[[], Settings] | None = None, *,
                 lifecycle: Lifecycle | None = None, clock=time.monotonic, watch_wait: float = DEFAULT_WAIT,
                 connect: Callable[..., Consul] = connect, watch_factory=blocking_watch,
                 files_factory=TemplateFiles, notify=systemd_notify, make_pass=make_pass):
        self.settings = settings
        self.rebuild_settings = rebuild_settings
        self.lifecycle = lifecycle or Lifecycle(Watchdog.from_environ(), clock=clock)
        self.clock = self.lifecycle.clock
        self.watch_wait = watch_wait
        self.connect, self.watch_factory, self.files_factory = connect, watch_factory, files_factory
        self.notify, self.make_pass = notify, make_pass
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.lifecycle.on_stop(lambda: self.events.put(STOP))
        self.state = LoopState()
        self.data = TemplateData()
        self.fetched = Fetched()
        self.client: Consul | None = None
        self.catalog_watch = self.kv_watch = None
        self.kv_prefix: str | None = None
        self.files: TemplateFiles | None = None
        self.render_pass: RenderPass | None = None
        self.bytecode_dir: str | None = None
        self.serial = 0
        self.forced = True                   # the next pass renders everything (first pass, new settings)
        self.pass_retry = Retry(consul_agent_backoff())  # an incomplete pass (Consul down, data missing)
        self.rescan_retry = Retry()          # a template directory that could not be read
        self.consul_down_logged = False
        self.filtered_warned = False
        self.imported_said = 0
        self.last_raw = None
        self.status = StatusService(self.lifecycle)
        self.change_seen: float | None = None  # when the catalog change not yet in nginx arrived
        self.running_table = self.running_catalog = None  # what nginx runs (renderer.status)
        self.running_lines: set[str] = set()               # ...as route_lines, for the next change's diff
        self.last_change: tuple[tuple[str, ...], float | None] = ((), None)
        self.peers: PeerSync | None = None      # dynamic peers (renderer.peer_sync), when on
        self.peer_retry = Retry()               # a push nginx did not take
        self.peer_confirmed: str | None = None  # the digest nginx confirmed holding
        self.peer_held: PeerTable | None = None  # ...and that table
        self.peer_table_of: tuple = (None, None)  # (route table, its peer table): see _peer_table
        self.peers_took_at: float | None = None  # when a push this pass confirmed (change_to_reload)
        self.peer_version: int | None = None
        self.peer_pushed_at: float | None = None
        self.peer_error: str | None = None
        self.peer_check_at = 0.0                # next time to ask nginx what it holds

    # Signal handlers call these: a flag and a reentrant queue put, nothing that can deadlock.
    def stop(self) -> None:
        self.lifecycle.request_stop()

    def post(self, event) -> None:
        self.events.put(event)

    # The loop -------------------------------------------------------------------------------
    def run(self) -> None:
        tune_garbage_collector()
        self.bytecode_dir = tempfile.mkdtemp(prefix="renderer-bytecode-")
        try:
            recover_destinations(self.settings)
            self.client = self.connect(self.settings, timeout=30)
            if self.settings.status_address:
                self.status.serve(*self.settings.status_address)
            self.files = self.files_factory(lambda: self.events.put(FILES_CHANGED)).start()
            self._configure(self.settings)
            self._publish()
            while self.step():
                pass
        except Stopping:
            log.info("%s; stopping", self.lifecycle.stop_reason or "asked to stop")
        finally:
            self.notify("STOPPING=1")
            self.status.stop()
            self._stop_threads()
            if self.client is not None:
                self.client.close()
            shutil.rmtree(self.bytecode_dir, ignore_errors=True)

    def step(self, block: bool = True) -> bool:
        """One turn: wait for events or the next due time, handle them, run a pass if one is due."""
        timeout = self._next_timeout(self.clock()) if block else 0.0
        batch = []
        try:
            batch.append(self.events.get(timeout=timeout) if timeout != 0.0 else self.events.get_nowait())
        except queue.Empty:
            pass
        while True:  # drain: what arrived together is handled together
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        force = False
        for item in batch:
            if item == STOP or self.lifecycle.stopping:
                log.info("%s; stopping", self.lifecycle.stop_reason or "asked to stop")
                return False
            if item == RELOAD_SETTINGS:
                force |= self._reload_settings()
            elif item == FILES_CHANGED:
                self.template_settle.changed(self.clock())
                self._scan_certificates()
            elif isinstance(item, Update):
                self._take(item)
        now = self.clock()
        released = self.guard.release(now)
        if released is not None:
            self._use_catalog(released)
        if self.template_settle.due_in(now) == 0.0 or self.rescan_retry.due(now):
            self.template_settle.reset()
            self._rescan_templates()
        if force or self._pass_due(now):
            self._pass()
        elif self.peers is not None and (self.peer_retry.due(now) or now >= self.peer_check_at):
            self._sync_peers(verify=True)
        self.lifecycle.tick()
        return True

    def _next_timeout(self, now: float) -> float | None:
        due = [self.quiescence.due_in(now), self.template_settle.due_in(now), self.guard.due_in(now),
               self.lifecycle.watchdog.due_in(now), self.lifecycle.tick_due_in(now)]
        if self.peers is not None:
            due.append(max(0.0, min(self.peer_check_at, self.peer_retry.at or self.peer_check_at) - now))
        for when in (self.render_pass.next_retry(), self.pass_retry.at, self.rescan_retry.at):
            if when is not None:
                due.append(max(0.0, when - now))
        if self.forced and not self.pass_retry.pending:
            due.append(0.0)
        due = [d for d in due if d is not None]
        return min(due) if due else None

    def _pass_due(self, now: float) -> bool:
        if self.forced and not self.pass_retry.pending:
            return True
        retry = self.render_pass.next_retry()
        return (self.quiescence.due_in(now) == 0.0 or self.pass_retry.due(now)
                or (retry is not None and now >= retry))

    def _pass(self) -> None:
        force, self.forced = self.forced, False
        self.quiescence.reset()
        self.serial += 1
        started, wall = self.clock(), time.time()
        outcome = None
        self.peers_took_at = None
        try:
            self.data, outcome = complete_pass(self.render_pass, self.data, self.client, self.fetched, force,
                                               self.settings.consistency)
        except Stopping:
            raise
        except (ConsulUnavailable, ConsulDenied) as error:  # Consul unreachable, or a token that lost a right
            self._consul_failed(error, force)
        except AgentError as error:
            self.pass_retry.failed(self.clock())
            log.error("render pass failed: %s; keeping the current files, retrying", error)
        except Exception:  # a bug must cost a pass, never the daemon (and with it routing)
            delay = self.pass_retry.failed(self.clock())
            log.exception("render pass failed unexpectedly; keeping the current files, retrying in %.1fs", delay)
        else:
            self._consul_answered()
            if self.fetched.catalog is not None:
                self._observe(self.fetched.catalog)
            if outcome.missing:  # more rounds of keys than MAX_FILL_ROUNDS, or data Consul does not have
                delay = self.pass_retry.failed(self.clock())
                log.debug("templates still miss %s; rendering again in %.1fs", sorted(map(str, outcome.missing)), delay)
            else:
                self.pass_retry.succeeded()
                if self.peers is not None:
                    self._sync_peers()
                    if outcome.result is None and self.peers_took_at is not None and self.change_seen is not None:
                        # The change reached nginx through the peer table alone; with a reload in the same
                        # pass, the reload is what carried it (observed when the pass is recorded).
                        self.status.metrics.change_to_reload.observe(max(0.0, self.peers_took_at - self.change_seen))
                        self.change_seen = None
                if not self.state.first_pass_done:
                    self.state.first_pass_done = True
                    self._ready(f"rendered {len(self.render_pass.states)} template(s); following the catalog")
        self._adjust_watches()
        self._record(outcome, started, wall)

    def _consul_failed(self, error: AgentError, forced: bool) -> None:
        delay = self.pass_retry.failed(self.clock())
        self.forced = forced  # what the failed pass was to render everything for still holds
        if not self.consul_down_logged or self.pass_retry.backoff.failures % 10 == 0:
            log.warning("%s; keeping the current files, retrying (next in %.1fs)", error, delay)
        self.consul_down_logged = True
        self.state.consul_reachable = False
        self._ready(f"Consul unreachable ({error}); keeping nginx's current configuration, retrying")
        self.notify("STATUS=Consul unreachable; keeping nginx's current configuration, retrying")

    def _consul_answered(self) -> None:
        if self.consul_down_logged:
            log.info("Consul at %s answers again", self.settings.consul_address)
            self.notify("STATUS=following the catalog")
        self.consul_down_logged = False
        self.state.consul_reachable = True

    def _ready(self, status: str) -> None:
        if not self.state.ready:
            self.state.ready = True
            self.notify(f"READY=1\nSTATUS={status}")

    def _record(self, outcome: PassOutcome | None, started: float, wall: float) -> None:
        result = outcome.result if outcome else None
        self.state.catalog_index = max(self.state.catalog_index, self.fetched.catalog_index)
        self.state.record(PassRecord(
            serial=self.serial, at=wall, seconds=self.clock() - started,
            rendered=outcome.rendered if outcome else 0,
            changed=tuple(str(c.destination) for c in result.applied) if result else (),
            failures=tuple(outcome.failed) if outcome else ("incomplete: Consul unreachable",),
            reloaded=bool(result and result.reloaded), complete=bool(outcome and not outcome.missing),
            check_ms=result.check_ms if result and result.check_ms else None,
            reload_ms=result.reload_ms if result and result.reloaded else None,
            reload_error=result.reload_error if result else None),
            self.render_pass.pending_failures())
        record = self.state.passes[-1]
        result_ok = outcome is not None and not outcome.failed and not outcome.missing
        if result_ok and not self.render_pass.applier.reload_pending:
            # nginx runs what this pass rendered (applied and confirmed, or nothing it needed changed)
            self._running(self.data)
        self.status.pass_done(outcome, record, self.change_seen, self.clock())
        if result is not None and result.confirmed or result_ok and result is None:
            self.change_seen = None  # that change is in nginx now (or needed nothing from it)
        self._publish()
        if outcome is None:
            log.debug("pass %d incomplete: Consul unreachable", self.serial)
        else:
            log.debug("pass %d done at catalog index %d: %d template(s) rendered, %d file(s) changed%s (%.0f ms)",
                      self.serial, self.state.catalog_index, outcome.rendered, len(result.applied) if result else 0,
                      ", nginx reloaded" if result and result.reloaded else "", (self.clock() - started) * 1000)

    # Dynamic peers -------------------------------------------------------------------------------
    def _peer_table(self, data: TemplateData) -> PeerTable | None:
        """The peer table of this data's route table; made once per route table (a pass asks up to three
        times: the early push, the write before a reload, the sync after the pass)."""
        table = data.evaluated(("routes", self.render_pass.loader.route_options))
        if not isinstance(table, RouteTable):
            return None
        if self.peer_table_of[0] is not table:
            self.peer_table_of = (table, PeerTable.of(table))
        return self.peer_table_of[1]

    def _write_peers(self, data: TemplateData) -> None:
        """Before files are applied: the table a reload makes nginx load (init_by_lua) is the new one."""
        peers = self._peer_table(data)
        if peers is not None:
            self.peer_version = self.peers.write(peers)

    def _push_early(self, data: TemplateData) -> None:
        """Before the templates render: an instance move reaches nginx now, not after the render.

        Pools this table drops stay in the push (``PeerTable.keeping``): the
        configuration nginx runs may still read them until the reload this
        pass brings is confirmed. A push that fails here is left to
        ``_sync_peers`` after the pass, which retries and reports it.
        """
        peers = self._peer_table(data)
        if peers is None or peers.digest == self.peer_confirmed or self.peer_error is not None:
            return
        pushed = peers.keeping(self.peer_held)
        started = self.clock()
        try:
            version = self.peers.write(peers) if pushed is peers else self.peers.new_version()
            held = self.peers.push(pushed, version)
        except (PeerPushFailed, OSError) as error:
            log.debug("early peer push failed (%s); pushing after the pass", error)
            return
        self._peers_taken(pushed, held, started)

    def _sync_peers(self, verify: bool = False) -> None:
        """Make nginx hold the current peer table; with ``verify``, ask it first (a restart, a lost push).

        The table is this pass's, plus (while a reload or a template is
        pending, so nginx may still run a configuration that reads them) the
        pools only the table nginx holds has.
        """
        now = self.clock()
        self.peer_check_at = now + PEER_CHECK_EVERY
        peers = self._peer_table(self.data)
        if peers is None:
            return
        if self.render_pass.applier.reload_pending or self.render_pass.pending_failures():
            pushed = peers.keeping(self.peer_held)
        else:
            pushed = peers
        try:
            self.peer_version = self.peers.write(peers)
            if verify and self.peer_confirmed == pushed.digest:
                if self.peers.held().digest == pushed.digest:
                    self.peer_retry.succeeded()
                    return
                log.warning("nginx no longer holds peer table %s (restarted?): pushing it again", pushed.digest)
            elif self.peer_confirmed == pushed.digest:
                return
            started = self.clock()
            held = self.peers.push(pushed, self.peer_version if pushed is peers else self.peers.new_version())
        except (PeerPushFailed, OSError) as error:
            delay = self.peer_retry.failed(self.clock())
            message = str(error) if isinstance(error, PeerPushFailed) else f"writing {self.peers.table_file}: {error}"
            if message != self.peer_error:
                log.warning("peer table not pushed: %s; retrying in %.0fs", message, delay)
            self.peer_error = message
            self.status.metrics.peer_pushes.labels("failed").inc()
            self._publish()
            return
        self._peers_taken(pushed, held, started)

    def _peers_taken(self, peers: PeerTable, held, started: float) -> None:
        self.peer_retry.succeeded()
        self.peer_confirmed, self.peer_held, self.peer_version, self.peer_error = peers.digest, peers, held.version, None
        self.peer_pushed_at = time.time()
        self.peers_took_at = self.clock()
        self.status.metrics.peer_pushes.labels("confirmed").inc()
        self.status.metrics.peer_version.set(held.version)
        log.info("nginx took peer table %d: %d peer(s) in %d pool(s), no reload (%.0f ms)", held.version,
                 peers.servers, len(peers.pools), (self.clock() - started) * 1000,
                 extra={"duration_ms": round((self.clock() - started) * 1000)})
        self._publish()

    def _running(self, data: TemplateData) -> None:
        table = data.evaluated(("routes", self.render_pass.loader.route_options))
        table = table if isinstance(table, RouteTable) else None  # None: no template reads routes()
        if table is self.running_table:
            self.running_catalog = data.catalog
            return
        lines = route_lines(table)
        change = route_change(self.running_lines, lines)
        if change:
            self.last_change = (change, time.time())
        self.running_table, self.running_lines, self.running_catalog = table, lines, data.catalog

    def _publish(self) -> None:
        """A snapshot of what the loop knows, for /ready, /metrics' gauges and the status page."""
        state, pass_ = self.state, self.render_pass
        pending = pass_.pending_failures() if pass_ is not None else {}
        if self.peer_error:
            pending["nginx peer table"] = self.peer_error
        ready, reason = readiness(state.first_pass_done, state.consul_reachable, pending, state.running_serial,
                                  state.catalog_index)
        templates = () if pass_ is None else tuple(
            TemplateStatus(str(s.spec.source), str(s.spec.destination), s.error) for s in pass_.states.values())
        held = self.guard.missing() if pass_ is not None else ()
        due = self.guard.due_in(self.clock()) if held else None
        self.status.publish(StatusSnapshot(
            self.status.version, state.started, time.time(), ready, reason, state.consul_reachable,
            state.catalog_index, state.running_serial, tuple(reversed(state.passes))[:20],
            tuple(sorted(pending.items())), templates, self.running_table, self.running_catalog, held,
            time.time() + due if due is not None else None, *self.last_change,
            peers=(self.peer_version, self.peer_confirmed, self.peer_pushed_at) if self.peers else None))

    # Settings and templates ---------------------------------------------------------------------
    def _configure(self, settings: Settings) -> None:
        self.settings = settings
        fresh = self.make_pass(settings, self.lifecycle, self._bytecode_cache())
        if self.render_pass is not None:  # SIGHUP: outputs of templates now gone get removed
            fresh.removed = [state.spec for dest, state in self.render_pass.states.items()
                             if dest not in fresh.states]
            # What nginx has not confirmed yet stays pending across new settings.
            fresh.applier.unconfirmed = self.render_pass.applier.unconfirmed
            fresh.applier.reload_retry = self.render_pass.applier.reload_retry
        self.render_pass = fresh
        self.peers = PeerSync.installed(settings)
        if self.peers is not None:
            fresh.before_apply = self._write_peers
            fresh.before_render = self._push_early
        self.quiescence = Quiescence(settings.wait)
        self.guard = CatalogGuard(grace=settings.grace)
        self.template_settle = Quiescence(TEMPLATE_SETTLE)
        self.forced = True
        self._scan_certificates()
        self._watch_files()
        log.info("watching %d template(s)%s", len(fresh.states),
                 f" in {len(settings.template_dirs)} watched director{'y' if len(settings.template_dirs) == 1 else 'ies'}"
                 if settings.template_dirs else "")

    def _bytecode_cache(self):
        return jinja2.FileSystemBytecodeCache(self.bytecode_dir) if self.bytecode_dir else None

    def _scan_certificates(self) -> None:
        """The certificate directory (``--var cert_dir``) is data, like the catalog: changed, it renders."""
        found = certificates.scan(self.settings.variables.get("cert_dir"))
        if found != self.data.certificates:
            self.data = self.data.with_certificates(found)
            self.quiescence.changed(self.clock())

    def _watch_files(self) -> None:
        if self.files is None:
            return
        cert_dir = self.settings.variables.get("cert_dir")
        self.files.watch([source for source, _ in self.settings.template_dirs], self.render_pass.input_files()
                         | {str(spec.source) for spec in self.settings.templates}, [cert_dir] if cert_dir else [])
        # A render can reveal a partial in a directory not watched until now, edited meanwhile.
        if any(state.inputs is not None and state.inputs_changed() for state in self.render_pass.states.values()):
            self.events.put(FILES_CHANGED)

    def _rescan_templates(self) -> None:
        try:
            specs = self.settings.template_specs()
        except ConfigError as error:
            delay = self.rescan_retry.failed(self.clock())
            if self.rescan_retry.backoff.failures == 1:
                log.error("%s; keeping the previous template set (and its outputs), checking again in %.0fs",
                          error, delay)
            return
        if self.rescan_retry.pending:
            log.info("template directories readable again")
        self.rescan_retry.succeeded()
        self.render_pass.set_specs(specs)
        self.quiescence.changed(self.clock())
        self._watch_files()

    def _reload_settings(self) -> bool:
        if self.rebuild_settings is None:
            return False
        try:
            settings = self.rebuild_settings()
            settings.template_specs()  # every template directory readable, no destination named twice
        except AgentError as error:
            log.error("SIGHUP: keeping the current settings: %s", error)
            return False
        if (settings.consul_address, settings.consul_token, settings.consul_tls) != (
                self.settings.consul_address, self.settings.consul_token, self.settings.consul_tls):
            self._reconnect(settings)
        self._configure(settings)
        log.info("SIGHUP: settings and templates re-read")
        return True

    def _reconnect(self, settings: Settings) -> None:
        """A new Consul address, token or TLS setting: drop the watches and the data they fed, start over."""
        self._stop_watches()
        self.client.close()
        self.client = self.connect(settings, timeout=30)
        self.data, self.fetched = TemplateData(certificates=self.data.certificates), Fetched()

    # Data ----------------------------------------------------------------------------------
    def _take(self, update: Update) -> None:
        if update.error:
            if self.state.consul_reachable is not False:  # the watch says why (once); /ready says so too
                self.state.consul_reachable = False
                self._publish()
            return
        self.state.consul_reachable = True
        if update.source == "catalog" and update.data is not None:
            if self.change_seen is None:
                self.change_seen = self.clock()
            self._observe(update.data)
            self.state.catalog_index = update.index
            self._use_catalog(self.guard.offer(self.data.catalog, update.data, update.reset, self.clock()))
        elif update.source == "kv" and update.data is not None:
            self.data = self.data.with_kv(update.data)
            self.quiescence.changed(self.clock())

    def _observe(self, catalog) -> None:
        """What a catalog as Consul answered it says beside its data, said once per change of mind."""
        if catalog is self.last_raw:
            return
        self.last_raw = catalog
        if catalog.filtered_by_acls and not self.filtered_warned:
            log.warning("Consul filtered the catalog by ACLs (X-Consul-Results-Filtered-By-ACLs): the renderer's "
                        "token cannot read every node or service, so nginx gets only the part it sees; grant "
                        "node_prefix \"\" and service_prefix \"\" read (README, ACL tokens)")
        self.filtered_warned = catalog.filtered_by_acls
        if catalog.imported and not self.imported_said:
            log.info("left out %d node(s) imported from peered clusters (PeerName): only this cluster's "
                     "services are routed", catalog.imported)
        self.imported_said = catalog.imported

    def _use_catalog(self, catalog) -> None:
        self.data = self.data.with_catalog(catalog)
        self.quiescence.changed(self.clock())

    def _adjust_watches(self) -> None:
        if self.render_pass.uses_catalog():
            if self.catalog_watch is None:
                fetcher = _CatalogFetcher(self.connect(self.settings), self.settings.consistency, self.data.catalog)
                self.catalog_watch = self.watch_factory("catalog", fetcher, self.events.put, self.watch_wait,
                                                        self.fetched.catalog_index)
        elif self.catalog_watch is not None:
            self.catalog_watch.stop()
            self.catalog_watch = None
            self.data = self.data.with_catalog(None)
        paths = self.render_pass.kv_paths()
        prefix = common_prefix(paths) if paths else None
        if prefix != self.kv_prefix:
            if self.kv_watch is not None:
                self.kv_watch.stop()
                self.kv_watch = None
            self.kv_prefix = prefix
            if prefix is not None:
                client, consistency = self.connect(self.settings), self.settings.consistency
                start = self.fetched.kv_index if self.fetched.kv_prefix == prefix else 0
                self.kv_watch = self.watch_factory(
                    "kv", lambda index, wait: fetch_kv(client, prefix, index, wait, consistency),
                    self.events.put, self.watch_wait, start)
        self._watch_files()

    def _stop_watches(self) -> None:
        for watch in (self.catalog_watch, self.kv_watch):
            if watch is not None:
                watch.stop()
        self.catalog_watch = self.kv_watch = None
        self.kv_prefix = None

    def _stop_threads(self) -> None:
        self._stop_watches()
        if self.files:
            self.files.stop()
