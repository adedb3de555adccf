"""The registrar's loop: Docker events and timers in, the few Consul writes that differ out.

Two threads, each with one stop event and joined on shutdown:

* ``docker-events`` (:class:`registrar.docker_source.EventStream`) turns
  Docker container events into queue items, and a broken stream into a
  reconnection followed by a full reconciliation;
* the caller's thread runs :meth:`Daemon.run`: the only place that talks to
  Consul, so container events are applied one at a time, in order.

Signals go through agentkit's Lifecycle, the renderer's stop path too: the
handler stores a flag and puts on a ``queue.SimpleQueue`` (reentrant), so it
never waits on a lock the interrupted loop holds.

Timers in that loop: a full reconciliation at start, every ``--resync``
seconds, after the event stream reconnects, and after Consul or Docker
failures (capped backoff, agentkit's); a poll of ``/v1/agent/services`` every
``POLL_INTERVAL`` (Consul 1.8 has no blocking query on that endpoint) that
notices an agent which restarted empty and restores this host's services
within seconds; a heartbeat for the Docker HEALTHCHECK TTL checks; the stop
deadline of each container being drained (wall-clock times: Docker's).
Under systemd (``Type=notify``) READY=1 is sent after the first full
reconciliation, or as soon as the first one finds Consul unreachable (the
registrar then follows Docker and retries: a host whose Consul agent is down
at boot must start, not restart-loop); STATUS= says which; WATCHDOG=1 pings
come from the loop; STOPPING=1 on shutdown.

When Consul is unreachable the desired state is kept and still follows
Docker; nothing is written until Consul answers again, then everything is
reconciled at once.

:meth:`Daemon.step` runs one turn of the loop, so tests drive it with a fake
registrar, fake events and injected clocks, without threads or sleeps.
"""

from __future__ import annotations

import logging
import math
import queue
import time

from prometheus_client import CONTENT_TYPE_LATEST

from agentkit.backoff import Backoff, consul_agent_backoff
from agentkit.lifecycle import Lifecycle
from agentkit.notify import Watchdog, notify
from agentkit.status_server import StatusEndpoint, package_version

from .config import Config
from .docker_source import ContainerEvent, EventStream
from .errors import ConsulDenied, ConsulUnavailable, DockerUnavailable
from .model import HEALTH_HEARTBEAT
from .status import RegistrarSnapshot, container_views, readiness
from .status_page import render as render_page
from .sync import Registrar

log = logging.getLogger("registrar")

POLL_INTERVAL = 1.0
UNEXPECTED_RETRY = 5.0
STOP, EVENT, RESYNC = "stop", "event", "resync"


class Daemon:
    def __init__(self, registrar: Registrar, config: Config, clock=time.monotonic, poll_interval=POLL_INTERVAL,
                 events_factory=EventStream, consul_backoff: Backoff | None = None,
                 docker_backoff: Backoff | None = None, lifecycle: Lifecycle | None = None, notify=notify,
                 wall=time.time):
        """``clock`` times the loop's own timers; ``wall`` is compared with Docker's (stop deadlines)."""
        self.registrar = registrar
        self.config = config
        self.lifecycle = lifecycle or Lifecycle(Watchdog.from_environ(), clock=clock)
        self.clock, self.wall = self.lifecycle.clock, wall
        self.poll_interval = poll_interval
        self.events_factory = events_factory
        self.notify = notify
        # Consul is the local agent: retry it often (cap 2s) so a restart is noticed within seconds.
        self.consul_backoff = consul_backoff or consul_agent_backoff()
        self.docker_backoff = docker_backoff or Backoff(0.5, 10.0)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.lifecycle.on_stop(lambda: self.queue.put((STOP,)))
        self.ready = False
        self.consul_down = self.docker_down = False
        self.reconciled = False  # the first full reconciliation is done
        now = self.clock()
        self.full_due, self.poll_due, self.health_due = now, now + poll_interval, now + HEALTH_HEARTBEAT
        self.started = wall()
        self.version = package_version()
        self.endpoint = StatusEndpoint("registrar", self.lifecycle, render_page, registrar.metrics.text,
                                       CONTENT_TYPE_LATEST, self._snapshot())

    def stop(self, reason: str = "asked to stop") -> None:
        """Safe from a signal handler (agentkit's Lifecycle: a flag and a reentrant queue put)."""
        self.lifecycle.request_stop(reason)

    def run(self) -> None:
        if self.config.status_address:
            self.endpoint.serve(*self.config.status_address)
        events = self.events_factory(self.config.docker_url, self._on_event,
                                     lambda: self.queue.put((RESYNC, "Docker event stream reconnected")))
        events.start()
        # Subscribe before the first full reconciliation, so nothing falls between them.
        events.connected.wait(10)
        try:
            self.full_due = self.clock()
            while self.step():
                pass
            log.info("%s; stopping", self.lifecycle.stop_reason or "asked to stop")
        finally:
            self.notify("STOPPING=1")
            self.endpoint.stop()
            events.stop()
            events.join()
            log.info("stopped")

    def step(self, block: bool = True) -> bool:
        """One turn: wait for an event or the next due timer, handle it; False once asked to stop."""
        if self.lifecycle.stopping:
            return False
        timeout = self._next_timeout() if block else 0.0
        try:
            item = self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait()
        except queue.Empty:
            item = None
        if self.lifecycle.stopping or (item and item[0] == STOP):
            return False
        try:
            self._handle(item)
        except (ConsulUnavailable, ConsulDenied) as error:
            self._consul_failed(error)
        except DockerUnavailable as error:
            delay = self.docker_backoff.next()
            if not self.docker_down:
                log.warning("%s; keeping the last known containers, retrying (next in %.1fs)", error, delay)
                self._ready(f"Docker unreachable ({error}); retrying")
            self.docker_down = True
            self.full_due = self.clock() + delay
        except Exception:  # a bug must cost one pass, not the daemon; the next full pass retries
            log.exception("unexpected error; reconciling everything again in %.0fs", UNEXPECTED_RETRY)
            self.full_due = self.clock() + UNEXPECTED_RETRY
        self._publish()
        self.lifecycle.tick()
        return True

    def _next_timeout(self) -> float:
        now = self.clock()
        timeout = max(0.0, min(self.full_due, self.poll_due, self.health_due) - now)
        if self.lifecycle.watchdog.enabled:
            timeout = min(timeout, self.lifecycle.watchdog.due_in(now))
        give_up = self.registrar.next_give_up()
        if give_up is not None:
            timeout = min(timeout, max(0.0, give_up - self.wall()))
        return timeout

    def _handle(self, item) -> None:
        registrar = self.registrar
        if item and item[0] == EVENT:
            event = item[1]
            registrar.metrics.docker_events.labels(event.action).inc()
            log.debug("docker event %s %s (%s)%s", event.action, event.name, event.id[:12],
                      f" signal {event.attribute('signal')}" if event.action == "kill" else "")
            registrar.observe(event.id, event.name, event)
            if not self.consul_down:
                registrar.apply()
        elif item and item[0] == RESYNC:
            log.debug("full reconciliation requested: %s", item[1])
            self.full_due = self.clock()
        now = self.clock()
        if now >= self.full_due:
            self._full_sync(now)
        if now >= self.poll_due:
            self.poll_due = now + self.poll_interval
            if not self.consul_down:
                registrar.check_consul()
        if now >= self.health_due:
            self.health_due = now + HEALTH_HEARTBEAT
            if not self.consul_down:
                registrar.heartbeat()
        give_up = registrar.next_give_up()
        if give_up is not None and give_up <= self.wall():
            registrar.give_up_stops(self.wall())
            if not self.consul_down:
                registrar.apply()

    def _full_sync(self, now: float) -> None:
        with self.registrar.metrics.reconcile_seconds.time():
            self.registrar.full_sync(cleanup=self.config.cleanup)
        self.reconciled = True
        self.full_due = now + self.config.resync if self.config.resync else math.inf
        # systemd (Type=notify): started once the first full reconciliation is done.
        self._ready("reconciled; following Docker")
        if self.consul_down:
            log.info("Consul at %s answers again; reconciled", self.config.consul_address)
            self.notify("STATUS=following Docker")
        if self.docker_down:
            log.info("Docker at %s answers again; reconciled", self.config.docker_url)
        self.consul_down = self.docker_down = False
        self.consul_backoff.reset()
        self.docker_backoff.reset()

    def _consul_failed(self, error: Exception) -> None:
        self.registrar.actual = None
        delay = self.consul_backoff.next()
        if not self.consul_down or self.consul_backoff.worth_saying:
            log.warning("%s; keeping the desired state, retrying (next in %.1fs)", error, delay)
        if not self.consul_down:
            self._ready(f"Consul unreachable ({error}); following Docker, retrying")
            self.notify("STATUS=Consul unreachable; following Docker, retrying")
        self.consul_down = True
        self.full_due = self.clock() + delay

    def _ready(self, status: str) -> None:
        if not self.ready:
            self.ready = True
            self.notify(f"READY=1\nSTATUS={status}")

    def _on_event(self, event: dict) -> None:
        container_event = ContainerEvent.from_docker(event)
        if container_event is not None:
            self.queue.put((EVENT, container_event))

    def _snapshot(self) -> RegistrarSnapshot:
        registrar = self.registrar
        consul = None if registrar.actual is None and not self.consul_down else not self.consul_down
        docker = None if not self.reconciled and not self.docker_down else not self.docker_down
        ready, reason = readiness(self.reconciled, consul, docker)
        desired_warnings = tuple(w for state in registrar.containers.values() for w in state.warnings)
        return RegistrarSnapshot(self.version, self.config.hostname, self.started, self.wall(), ready, reason,
                                 consul, docker, len(registrar.actual or {}),
                                 container_views(registrar.containers, set(registrar.actual or {})),
                                 desired_warnings, registrar.left, registrar.last_reconcile)

    def _publish(self) -> None:
        snapshot = self._snapshot()
        self.registrar.metrics.publish(snapshot)
        self.endpoint.publish(snapshot)
