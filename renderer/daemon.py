"""The renderer daemon: one event loop, a few watch threads, one pass at a time.

Threads: one blocking watch on the catalog (if any template reads it), one on
KV (if any template reads keys), the template-directory observer. They only
put events on the queue; the main thread owns all state, renders and applies.
Events arriving together are handled as one batch, so one change makes one
pass and at most one reload; ``--wait`` adds quiescence on top.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections.abc import Callable

from agentkit.backoff import Backoff, consul_agent_backoff
from agentkit.consul import Consul
from agentkit.errors import AgentError, ConsulUnavailable
from agentkit.notify import notify

from . import commands
from .apply import Applier, recover
from .consul_data import DEFAULT_WAIT, Fetched, fetch_catalog, fetch_kv, fill_missing
from .kv import common_prefix
from .guard import CatalogGuard
from .quiescence import Quiescence, Wait
from .render_pass import RenderPass
from .settings import Settings
from .template_api import TemplateData
from .template_dirs import TemplateDirWatcher
from .templates import TemplateLoader
from .watch import BlockingWatch, Update

log = logging.getLogger("renderer")

STOP, RELOAD_SETTINGS, TEMPLATES_CHANGED = "stop", "reload-settings", "templates-changed"
MAX_FILL_ROUNDS = 4  # a template may reveal new keys only once it has the previous ones
# An editor or `cat >` writes a template in steps (truncate, write); rendering
# the half-written file could apply an empty, valid config. Template events
# therefore settle this long before the template set is re-read.
TEMPLATE_SETTLE = Wait(0.25, 2.0)


def tune_garbage_collector() -> None:
    """Collect cycles rarely: the catalog is acyclic data, rebuilt on every change.

    Building a large catalog allocates tens of thousands of objects, and with
    Python's default thresholds (700 allocations) the cyclic collector runs
    over and over and scans everything alive. Measured on the 5,000 x 3 node
    dump: catalog build 42 -> 14 ms (the decoded dump itself is not tracked,
    see renderer.node_dump). Cycles are still collected, less often.
    """
    gc.set_threshold(100_000, 50, 1000)


def make_pass(settings: Settings) -> RenderPass:
    """The render pass for these settings, after undoing any pass a crash interrupted."""
    specs = settings.template_specs()
    for destination in recover({spec.destination.parent for spec in specs}
                               | {dest for _, dest in settings.template_dirs}):
        log.warning("put %s back as it was before an interrupted pass", destination)
    applier = Applier(check=lambda: commands.run("nginx config check", settings.check_command),
                      reload=lambda: commands.run("nginx reload", settings.reload_command))
    return RenderPass(TemplateLoader(settings.variables), applier, specs)


def connect(settings: Settings, timeout: float = DEFAULT_WAIT + 20) -> Consul:
    return Consul(settings.consul_address, settings.consul_token, timeout=timeout)


def complete_pass(render_pass: RenderPass, data: TemplateData, client: Consul, fetched: Fetched,
                  force: bool = False):
    """Run passes, fetching what templates found missing, until every template rendered."""
    outcome = render_pass.run(data, force)
    for _ in range(MAX_FILL_ROUNDS):
        if not outcome.missing:
            break
        data = fill_missing(client, data, outcome.missing, render_pass.kv_paths(), fetched)
        outcome = render_pass.run(data, force)
    return data, outcome


class _CatalogFetcher:
    """Keeps the previous catalog so unchanged instances are reused (cheap comparisons)."""

    def __init__(self, client: Consul):
        self.client = client
        self.previous = None

    def __call__(self, index: int, wait: float):
        index, catalog = fetch_catalog(self.client, index, wait, self.previous)
        self.previous = catalog
        return index, catalog


class Daemon:
    def __init__(self, settings: Settings, rebuild_settings: Callable[[], Settings] | None = None,
                 clock=time.monotonic, watch_wait: float = DEFAULT_WAIT):
        self.settings = settings
        self.rebuild_settings = rebuild_settings
        self.clock = clock
        self.watch_wait = watch_wait
        self.events: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.data = TemplateData()
        self.fetched = Fetched()
        self.catalog_watch: BlockingWatch | None = None
        self.kv_watch: BlockingWatch | None = None
        self.kv_prefix: str | None = None
        self.dir_watcher: TemplateDirWatcher | None = None
        self.render_pass: RenderPass | None = None

    # For signal handlers: hand the event to a helper thread, so a handler
    # never waits on the queue's lock while the interrupted loop holds it.
    def post(self, event) -> None:
        threading.Thread(target=self.events.put, args=(event,), daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self.post(STOP)

    def run(self) -> None:
        tune_garbage_collector()
        self.client = connect(self.settings, timeout=30)
        self._configure(self.settings)
        try:
            if not self._first_pass():
                return
            notify("READY=1")
            self._loop()
        finally:
            notify("STOPPING=1")
            self._stop_threads()
            self.client.close()

    def _configure(self, settings: Settings) -> None:
        self.settings = settings
        fresh = make_pass(settings)
        if self.render_pass is not None:  # SIGHUP: outputs of templates now gone get removed
            fresh.removed = [state.spec for dest, state in self.render_pass.states.items()
                             if dest not in fresh.states]
            fresh.applier.reload_pending = self.render_pass.applier.reload_pending
        self.render_pass = fresh
        self.quiescence = Quiescence(settings.wait)
        self.guard = CatalogGuard(grace=settings.grace)
        self.template_settle = Quiescence(TEMPLATE_SETTLE)
        if self.dir_watcher:
            self.dir_watcher.stop()
            self.dir_watcher = None
        directories = [source for source, _ in settings.template_dirs]
        if directories:
            self.dir_watcher = TemplateDirWatcher(directories, lambda: self.events.put(TEMPLATES_CHANGED)).start()
        log.info("watching %d template(s)%s", len(fresh.states),
                 f" in {len(directories)} watched director{'y' if len(directories) == 1 else 'ies'}"
                 if directories else "")

    def _first_pass(self) -> bool:
        """Render everything once, retrying Consul forever; False if asked to stop meanwhile.

        Between attempts it still obeys SIGHUP (a corrected Consul address is
        the usual fix for a first pass that cannot reach Consul) and SIGTERM.
        """
        backoff = consul_agent_backoff()
        while True:
            try:
                self._pass(force=True)
                return True
            except ConsulUnavailable as error:
                delay = backoff.next()
                log.warning("%s; keeping the current files, retrying in %.1fs", error, delay)
            deadline = self.clock() + delay
            while (remaining := deadline - self.clock()) > 0:
                try:
                    event = self.events.get(timeout=remaining)
                except queue.Empty:
                    break
                if event == STOP:
                    return False
                if event == RELOAD_SETTINGS and self._reload_settings():
                    break
                if event == TEMPLATES_CHANGED:
                    self._rescan_templates()

    def _pass(self, force: bool = False) -> None:
        self.data, _ = complete_pass(self.render_pass, self.data, self.client, self.fetched, force)
        self._adjust_watches()

    def _loop(self) -> None:
        retry_backoff = Backoff(initial=0.5, cap=30)
        retry_at: float | None = None
        while True:
            now = self.clock()
            timeouts = [t for t in (self.quiescence.due_in(now), self.template_settle.due_in(now),
                                    self.guard.due_in(now),
                                    None if retry_at is None else max(0.0, retry_at - now)) if t is not None]
            try:
                event = self.events.get(timeout=min(timeouts) if timeouts else None)
            except queue.Empty:
                event = None
            batch = [] if event is None else [event]
            while True:  # drain: what arrived together is handled together
                try:
                    batch.append(self.events.get_nowait())
                except queue.Empty:
                    break
            force = False
            for item in batch:
                if item == STOP:
                    log.info("stopping")
                    return
                if item == RELOAD_SETTINGS:
                    force |= self._reload_settings()
                elif item == TEMPLATES_CHANGED:
                    self.template_settle.changed(self.clock())
                elif isinstance(item, Update):
                    self._take(item)
            now = self.clock()
            released = self.guard.release(now)
            if released is not None:
                self._use_catalog(released)
            if self.template_settle.due_in(now) == 0.0:
                self.template_settle.reset()
                self._rescan_templates()
            due = force or self.quiescence.due_in(now) == 0.0 or (retry_at is not None and now >= retry_at)
            if not due:
                continue
            self.quiescence.reset()
            try:
                self._pass(force=force)
                retry_at = None
                retry_backoff.reset()
            except Exception as error:  # no failed pass may take the daemon (and routing) down
                delay = retry_backoff.next()
                retry_at = self.clock() + delay
                if isinstance(error, AgentError):  # Consul unreachable, or a token that lost a right
                    log.warning("%s; keeping the current files, retrying in %.1fs", error, delay)
                else:  # a bug: the operator and we need the traceback
                    log.exception("render pass failed unexpectedly; keeping the current files, retrying in "
                                  "%.1fs", delay)

    def _rescan_templates(self) -> None:
        try:
            self.render_pass.set_specs(self.settings.template_specs())
        except AgentError as error:
            log.error("template directories: %s; keeping the previous template set", error)
            return
        self.quiescence.changed(self.clock())

    def _take(self, update: Update) -> None:
        if update.error:
            return
        if update.source == "catalog" and update.data is not None:
            self._use_catalog(self.guard.offer(self.data.catalog, update.data, update.reset, self.clock()))
        elif update.source == "kv" and update.data is not None:
            self.data = TemplateData(self.data.catalog, update.data)
            self.quiescence.changed(self.clock())

    def _use_catalog(self, catalog) -> None:
        self.data = TemplateData(catalog, self.data.kv)
        self.quiescence.changed(self.clock())

    def _reload_settings(self) -> bool:
        if self.rebuild_settings is None:
            return False
        try:
            settings = self.rebuild_settings()
        except AgentError as error:
            log.error("SIGHUP: keeping the current settings: %s", error)
            return False
        if (settings.consul_address, settings.consul_token) != (self.settings.consul_address,
                                                                self.settings.consul_token):
            self._reconnect(settings)
        self._configure(settings)
        log.info("SIGHUP: settings and templates re-read")
        return True

    def _reconnect(self, settings: Settings) -> None:
        """A new Consul address or token: drop the watches and the data they fed, start over."""
        self._stop_watches()
        self.client.close()
        self.client = connect(settings, timeout=30)
        self.data, self.fetched = TemplateData(), Fetched()

    def _adjust_watches(self) -> None:
        if self.render_pass.uses_catalog():
            if self.catalog_watch is None:
                fetcher = _CatalogFetcher(connect(self.settings))
                fetcher.previous = self.data.catalog
                self.catalog_watch = BlockingWatch("catalog", fetcher, self.events.put, self.watch_wait,
                                                   start_index=self.fetched.catalog_index).start()
        elif self.catalog_watch is not None:
            self.catalog_watch.stop()
            self.catalog_watch = None
            self.data = TemplateData(None, self.data.kv)
        paths = self.render_pass.kv_paths()
        prefix = common_prefix(paths) if paths else None
        if prefix != self.kv_prefix:
            if self.kv_watch is not None:
                self.kv_watch.stop()
                self.kv_watch = None
            self.kv_prefix = prefix
            if prefix is not None:
                client = connect(self.settings)
                start = self.fetched.kv_index if self.fetched.kv_prefix == prefix else 0
                self.kv_watch = BlockingWatch("kv", lambda index, wait: fetch_kv(client, prefix, index, wait),
                                              self.events.put, self.watch_wait, start_index=start).start()

    def _stop_watches(self) -> None:
        for watch in (self.catalog_watch, self.kv_watch):
            if watch is not None:
                watch.stop()
        self.catalog_watch = self.kv_watch = None
        self.kv_prefix = None

    def _stop_threads(self) -> None:
        self._stop_watches()
        if self.dir_watcher:
            self.dir_watcher.stop()
