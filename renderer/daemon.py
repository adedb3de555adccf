"""The renderer daemon: one loop, whose state says what is pending.

Threads: the watches (:mod:`renderer.catalog.watches`: one blocking query
on the catalog if any template reads it, one on KV if any template reads
keys) and the template-file observer (:mod:`renderer.render.template_files`).
They only put events on a ``queue.SimpleQueue`` (whose ``put`` is
reentrant, so signal handlers post to it directly); the main thread owns
all state, renders and applies. Events arriving together are handled as one
batch, so one change makes one pass and at most one reload; ``--wait`` adds
quiescence on top.

Level-triggered: a pass is due when new data arrived (after ``--wait``),
when template files changed (after they settle), when something that failed
is due for its retry (a template, a file nginx refused, a destination that
could not be written, an nginx reload: see ``render_pass`` and ``apply``),
and while a pass is incomplete (Consul unreachable, data still missing).
Nothing that failed waits for an unrelated change. With dynamic peers the
loop also keeps nginx holding the current peer table
(:mod:`renderer.peers.coordinator`).

Under systemd (``Type=notify``): READY=1 once the first pass completed, or
as soon as it finds Consul unreachable (the daemon then keeps nginx's
current configuration and retries: a node whose Consul is down at boot must
start, not restart-loop); STATUS= tells which; WATCHDOG=1 from the loop
and from its bounded waits (``agentkit.lifecycle``).

:meth:`Daemon.step` runs one turn of the loop, so tests drive it with fake
watches, a fake Consul and an injected clock, without threads or sleeps.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Callable

from agentkit.backoff import Retry, consul_agent_backoff
from agentkit.consul import Consul
from agentkit.errors import AgentError, ConfigError, ConsulDenied, ConsulUnavailable
from agentkit.lifecycle import Lifecycle, Stopping
from agentkit.notify import Watchdog, notify as systemd_notify

from . import wiring
from .catalog import certificates
from .catalog.fetch import DEFAULT_WAIT, Fetched
from .catalog.guard import CatalogGuard
from .catalog.watch import Update
from .catalog.watches import CatalogRemarks, Watches, blocking_watch
from .certs.fleet import FleetCertificates
from .observe.registration import Registration
from .observe.service import StatusService
from .observe.status import LoopState, PassRecord, TemplateStatus
from .peers.coordinator import PeerCoordinator
from .peers.sync import PeerSync
from .quiescence import Quiescence, Wait
from .render.api import TemplateData
from .render.fill import complete_pass
from .render.render_pass import PassOutcome, RenderPass
from .render.template_files import TemplateFiles
from .routes.model import RouteTable
from .settings import Settings

log = logging.getLogger("renderer")

STOP, RELOAD_SETTINGS, FILES_CHANGED = "stop", "reload-settings", "files-changed"
# An editor or `cat >` writes a template in steps (truncate, write); rendering
# the half-written file could apply an empty, valid config. Template events
# therefore settle this long before the template set is re-read.
TEMPLATE_SETTLE = Wait(0.25, 2.0)


class Daemon:
    def __init__(self, settings: Settings, rebuild_settings: Callable[[], Settings] | None = None, *,
                 lifecycle: Lifecycle | None = None, clock=time.monotonic, watch_wait: float = DEFAULT_WAIT,
                 connect: Callable[..., Consul] = wiring.connect, watch_factory=blocking_watch,
                 files_factory=TemplateFiles, notify=systemd_notify, make_pass=wiring.make_pass):
        self.settings = settings
        self.rebuild_settings = rebuild_settings
        self.lifecycle = lifecycle or Lifecycle(Watchdog.from_environ(), clock=clock)
        self.clock = self.lifecycle.clock
        self.watch_wait, self.watch_factory = watch_wait, watch_factory
        self.connect, self.files_factory = connect, files_factory
        self.notify, self.make_pass = notify, make_pass
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.lifecycle.on_stop(lambda: self.events.put(STOP))
        self.state = LoopState()
        self.data = TemplateData()
        self.fetched = Fetched()
        self.client: Consul | None = None
        self.watches = self._watches(settings)
        self.remarks = CatalogRemarks()
        self.files: TemplateFiles | None = None
        self.render_pass: RenderPass | None = None
        self.bytecode = None
        self.serial = 0
        self.forced = True                   # the next pass renders everything (first pass, new settings)
        self.pass_retry = Retry(consul_agent_backoff())  # an incomplete pass (Consul down, data missing)
        self.rescan_retry = Retry()          # a template directory that could not be read
        self.consul_down = False
        self.pass_error: str | None = None  # why the last pass failed as a whole (/ready says it)
        self.status = StatusService(self.lifecycle)
        self.change_seen: float | None = None  # when the catalog change not yet in nginx arrived
        self.peers: PeerCoordinator | None = None  # dynamic peers, when on
        self.registration: Registration | None = None  # this renderer in the catalog, with a status address
        self.certs: FleetCertificates | None = None  # KV's certificates into cert_dir; with ACME, the issuer

    # Signal handlers call these: a flag and a reentrant queue put, nothing that can deadlock.
    def stop(self) -> None:
        self.lifecycle.request_stop()

    def post(self, event) -> None:
        self.events.put(event)

    # The loop -------------------------------------------------------------------------------
    def run(self) -> None:
        wiring.tune_garbage_collector()
        with contextlib.ExitStack() as cleanup:
            self.bytecode = cleanup.enter_context(wiring.bytecode_cache())
            try:
                wiring.recover_destinations(self.settings)
                self.client = self.connect(self.settings, timeout=30)
                if self.settings.status_address:
                    self.status.serve(*self.settings.status_address, traffic_log=self.settings.traffic_log)
                    if self.settings.register:
                        host, _ = self.settings.status_address
                        self.registration = Registration(host, self.status.endpoint.server.port, self.status.version,
                                                         self.clock)
                self.files = self.files_factory(lambda: self.events.put(FILES_CHANGED)).start()
                self.certs = wiring.start_certificates(self.settings, self.connect, lambda: self.data.catalog,
                                                       lambda: self.status.running_table)
                cleanup.callback(lambda: self.certs and self.certs.stop())
                self._configure(self.settings)
                self._publish()
                while self.step():
                    pass
            except Stopping:
                log.info("%s; stopping", self.lifecycle.stop_reason or "asked to stop")
            finally:
                self.notify("STOPPING=1")
                if self.registration is not None and self.client is not None:
                    self.registration.remove(self.client)
                self.status.stop()
                self.watches.stop()
                if self.files:
                    self.files.stop()
                if self.client is not None:
                    self.client.close()

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
        elif self.peers is not None and self.peers.due(now):
            self.peers.ensure(self.render_pass.view(self.data), verify=True)
        if self.registration is not None and self.registration.due(self.clock()):
            self.registration.ensure(self.client)
        self.lifecycle.tick()
        return True

    def _next_timeout(self, now: float) -> float | None:
        due = [self.quiescence.due_in(now), self.template_settle.due_in(now), self.guard.due_in(now),
               self.lifecycle.watchdog.due_in(now), self.lifecycle.tick_due_in(now)]
        if self.peers is not None:
            due.append(self.peers.due_in(now))
        if self.registration is not None:
            due.append(self.registration.due_in(now))
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
        if self.peers is not None:
            self.peers.start_pass()
        try:
            self.data, outcome = complete_pass(self.render_pass, self.data, self.client, self.fetched, force,
                                               self.settings.consistency)
        except Stopping:
            raise
        except (ConsulUnavailable, ConsulDenied) as error:  # Consul unreachable, or a token that lost a right
            self._consul_failed(error, force)
        except AgentError as error:
            self.pass_retry.failed(self.clock())
            self.pass_error = str(error)
            log.error("render pass failed: %s; keeping the current files, retrying", error)
        except Exception as error:  # a bug must cost a pass, never the daemon (and with it routing)
            delay = self.pass_retry.failed(self.clock())
            self.pass_error = f"failed unexpectedly ({type(error).__name__}: {error}); see the log"
            log.exception("render pass failed unexpectedly; keeping the current files, retrying in %.1fs", delay)
        else:
            self.pass_error = None
            self._consul_answered()
            if self.certs is not None and self.certs.kv_changed(self.data.kv):  # KV fetched by the pass
                self._scan_certificates()
            if outcome.follow_up:  # services were left out: the other templates leave them out too, now
                self.quiescence.changed(self.clock())
            if self.fetched.catalog is not None:
                self.remarks.observe(self.fetched.catalog)
            if outcome.missing:  # more rounds of keys than MAX_FILL_ROUNDS, or data Consul does not have
                delay = self.pass_retry.failed(self.clock())
                log.debug("templates still miss %s; rendering again in %.1fs", sorted(map(str, outcome.missing)), delay)
            else:
                self.pass_retry.succeeded()
                if self.peers is not None:
                    self._peers_after_pass(outcome)
                if not self.state.first_pass_done:
                    self.state.first_pass_done = True
                    self._ready(f"rendered {len(self.render_pass.states)} template(s); following the catalog")
        self._follow_dependencies()
        self._record(outcome, started, wall)

    def _peers_after_pass(self, outcome: PassOutcome) -> None:
        self.peers.ensure(self.render_pass.view(self.data))
        if outcome.result is None and self.peers.took_at is not None and self.change_seen is not None:
            # The change reached nginx through the peer table alone; with a reload in the same
            # pass, the reload is what carried it (observed when the pass is recorded).
            self.status.metrics.change_to_reload.observe(max(0.0, self.peers.took_at - self.change_seen))
            self.change_seen = None

    def _consul_failed(self, error: AgentError, forced: bool) -> None:
        delay = self.pass_retry.failed(self.clock())
        self.forced = forced  # what the failed pass was to render everything for still holds
        if not self.consul_down or self.pass_retry.backoff.worth_saying:
            log.warning("%s; keeping the current files, retrying (next in %.1fs)", error, delay)
        self.consul_down = True
        self.state.consul_reachable = False
        self._ready(f"Consul unreachable ({error}); keeping nginx's current configuration, retrying")
        self.notify("STATUS=Consul unreachable; keeping nginx's current configuration, retrying")

    def _consul_answered(self) -> None:
        if self.consul_down:
            log.info("Consul at %s answers again", self.settings.consul_address)
            self.notify("STATUS=following the catalog")
        self.consul_down = False
        self.state.consul_reachable = True

    def _ready(self, status: str) -> None:
        if not self.state.ready:
            self.state.ready = True
            self.notify(f"READY=1\nSTATUS={status}")

    def _record(self, outcome: PassOutcome | None, started: float, wall: float) -> None:
        result = outcome.result if outcome else None
        self.state.catalog_index = max(self.state.catalog_index, self.fetched.catalog_index)
        record = PassRecord.of(self.serial, wall, self.clock() - started, outcome)
        self.state.record(record, self.render_pass.pending_failures())
        result_ok = outcome is not None and not outcome.failed and not outcome.missing
        if result_ok and not self.render_pass.applier.reload_pending:
            # nginx runs what this pass rendered (applied and confirmed, or nothing it needed changed)
            seen = self.render_pass.view(self.data)
            table = seen.evaluated(("routes", self.render_pass.loader.route_options))
            self.status.running(table if isinstance(table, RouteTable) else None, seen.catalog)
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

    def _publish(self) -> None:
        pass_ = self.render_pass
        pending = pass_.pending_failures() if pass_ is not None else {}
        if self.peers is not None and self.peers.error:
            pending["nginx peer table"] = self.peers.error
        if self.pass_error:
            pending["render pass"] = self.pass_error
        templates = () if pass_ is None else tuple(
            TemplateStatus(str(s.spec.source), str(s.spec.destination), s.error) for s in pass_.states.values())
        held = self.guard.missing() if pass_ is not None else ()
        due = self.guard.due_in(self.clock()) if held else None
        excluded = () if pass_ is None else tuple(
            (e.service, e.reason, e.template) for e in pass_.exclusions.current.values())
        self.status.publish(self.state, pending, templates, held, time.time() + due if due is not None else None,
                            self.peers.status if self.peers is not None else None, excluded)

    # Settings and templates ---------------------------------------------------------------------
    def _watches(self, settings: Settings) -> Watches:
        return Watches(lambda: self.connect(self.settings), settings.consistency, self.events.put, self.watch_wait,
                       self.watch_factory)

    def _configure(self, settings: Settings) -> None:
        self.settings = settings
        fresh = self.make_pass(settings, self.lifecycle, self.bytecode)
        if self.render_pass is not None:  # SIGHUP: outputs of templates now gone get removed
            fresh.removed = [state.spec for dest, state in self.render_pass.states.items()
                             if dest not in fresh.states]
            # What nginx has not confirmed yet stays pending across new settings.
            fresh.applier.unconfirmed = self.render_pass.applier.unconfirmed
            fresh.applier.reload_retry = self.render_pass.applier.reload_retry
        self.render_pass = fresh
        self._configure_peers(PeerSync.installed(settings))
        self.quiescence = Quiescence(settings.wait)
        self.guard = CatalogGuard(grace=settings.grace)
        self.template_settle = Quiescence(TEMPLATE_SETTLE)
        self.forced = True
        self._scan_certificates()
        self._watch_files()
        directories = len(settings.template_dirs)
        log.info("watching %d template(s)%s", len(fresh.states),
                 f" in {directories} watched director{'y' if directories == 1 else 'ies'}" if directories else "")

    def _configure_peers(self, sync: PeerSync | None) -> None:
        """Dynamic peers on, off, or on with new settings: what nginx holds is still known after a SIGHUP."""
        if sync is None:
            self.peers = None
            return
        if self.peers is None:
            self.peers = PeerCoordinator(sync, self.status.metrics, self.clock, self._publish)
        self.peers.sync = sync
        self.peers.attach(self.render_pass)

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
            if self.rescan_retry.backoff.worth_saying:
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
        if (settings.consul_address, settings.consul_token, settings.consul_tls, settings.consistency) != (
                self.settings.consul_address, self.settings.consul_token, self.settings.consul_tls,
                self.settings.consistency):
            self._reconnect(settings)
        self._configure(settings)
        log.info("SIGHUP: settings and templates re-read")
        return True

    def _reconnect(self, settings: Settings) -> None:
        """A new Consul address, token, TLS setting or consistency: drop the watches and the data they fed."""
        self.watches.stop()
        self.client.close()
        self.client = self.connect(settings, timeout=30)
        self.watches = self._watches(settings)
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
            self.remarks.observe(update.data)
            self.state.catalog_index = update.index
            self._use_catalog(self.guard.offer(self.data.catalog, update.data, update.reset, self.clock()))
        elif update.source == "kv" and update.data is not None:
            self.data = self.data.with_kv(update.data)
            self.quiescence.changed(self.clock())
            if self.certs is not None and self.certs.kv_changed(self.data.kv):  # written into cert_dir
                self._scan_certificates()

    def _use_catalog(self, catalog) -> None:
        self.data = self.data.with_catalog(catalog)
        self.quiescence.changed(self.clock())

    def _follow_dependencies(self) -> None:
        """Watch what the templates read in their last renders (Consul and files), nothing more."""
        if not self.watches.follow(self.render_pass.uses_catalog(), self.render_pass.kv_paths(), self.data.catalog,
                                   self.fetched) and self.data.catalog is not None:
            self.data = self.data.with_catalog(None)
        self._watch_files()
