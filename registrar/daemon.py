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
within seconds; a heartbeat for the Docker HEALTHCHECK TTL checks.
Under systemd (``Type=notify``) READY=1 is sent after the first full
reconciliation, or as soon as the first one finds Consul unreachable (the
registrar then follows Docker and retries: a host whose Consul agent is down
at boot must start, not restart-loop); STATUS= says which; WATCHDOG=1 pings
come from the loop; STOPPING=1 on shutdown.

When Consul is unreachable the desired state is kept and still follows
Docker; nothing is written until Consul answers again, then everything is
reconciled at once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import time

import tenacity
from prometheus_client import CONTENT_TYPE_LATEST

from agentkit.backoff import Backoff, consul_agent_backoff
from agentkit.lifecycle import Lifecycle
from agentkit.notify import Watchdog, notify
from agentkit.status_server import StatusEndpoint, package_version

from .config import Config
from .consul_sink import ConsulSink
from . import stopping
from .desired import ContainerState, container_state, desired_state, from_summary, removed
from .docker_source import ContainerEvent, DockerSource, EventStream
from .errors import AgentError, ConsulDenied, ConsulUnavailable, DockerUnavailable, ServiceRefused
from .labels import is_running
from .model import MappingSettings
from .metrics import RegistrarMetrics
from .model import HEALTH_HEARTBEAT
from .status import RegistrarSnapshot, container_views, readiness
from .status_page import render as render_page
from .reconcile import Actual, plan

log = logging.getLogger("registrar")

POLL_INTERVAL = 1.0
UNEXPECTED_RETRY = 5.0


class Registrar:
    """Desired and actual state, and the decisions; no threads, no timers."""

    def __init__(self, config: Config, docker: DockerSource, consul: ConsulSink, mapping: MappingSettings,
                 metrics: RegistrarMetrics | None = None):
        self.config = config
        self.metrics = metrics or RegistrarMetrics()
        self.docker = docker
        self.consul = consul
        self.mapping = mapping
        self.containers: dict[str, ContainerState] = {}
        self.actual: dict[str, Actual] | None = None  # None: unknown (Consul unreachable)
        self._warned: set[str] = set()
        self._left: set[str] = set()
        self._refused_said: dict[str, str] = {}
        self._health_pushed: dict[str, tuple[str, str]] = {}
        self.stops: dict[str, stopping.StopRequest] = {}  # short container ID -> its stop request (drain)
        self.last_reconcile: float | None = None
        self.left: tuple[str, ...] = ()
        self._draining_said: set[str] = set()

    # Docker side -----------------------------------------------------------------
    def read_docker(self) -> None:
        """Rebuild every container's state from Docker; on failure nothing changes."""
        states: dict[str, ContainerState] = {}
        for summary in self.docker.containers():
            # Inspect whatever may be running: a paused container still reports Running in its
            # inspect, as its unpause event will, so both paths must agree or services flap.
            if summary.get("State") in ("running", "paused", "restarting"):
                info = self.docker.inspect(summary["Id"])
                if info is None:
                    continue  # removed between the listing and the inspect
                state = self._state(info)
            else:
                state = from_summary(summary)
            states[state.id] = state
        # Tombstones stay until Consul no longer holds any of their services.
        holders = {service.container for service in (self.actual or {}).values()}
        for state in self.containers.values():
            if state.removed and state.id not in states and state.id in holders:
                states[state.id] = state
        self.containers = states
        for short_id in [c for c in self.stops if not (c in states and states[c].running)]:
            del self.stops[short_id]
        if self.config.drain:
            self._recover_stops()

    def _recover_stops(self) -> None:
        """Stops under way as Docker's recent events tell them (level-triggered: no event is needed).

        At start, and after the event stream broke, stops began or ended
        unseen. For each running container the last kill (with its stop
        signal), start or die Docker still holds decides whether it is being
        stopped; what no event mentions keeps its state.
        """
        now = time.time()
        found: dict[str, stopping.StopRequest | None] = {}
        for event in self.docker.recent_events(now - stopping.LOOKBACK, ("kill", "start", "die")):
            short_id = event.id[:12]
            state = self.containers.get(short_id)
            if event.action != "kill" or state is None or not state.running:
                found[short_id] = None
            elif found.get(short_id) is None:  # the first stop signal counts; a later SIGKILL does not reset it
                info = self.docker.inspect(event.id)
                request = stopping.stop_request(info, event.attribute("signal"), event.at) if info else None
                if request is not None:
                    found[short_id] = request
                elif short_id not in found:
                    found[short_id] = None
        changed = []
        for short_id, request in found.items():
            if request is not None and request.give_up_at <= now:
                request = None  # given up already: it did not stop
            known = self.stops.get(short_id)
            if request is None and known is not None:
                del self.stops[short_id]
                changed.append(short_id)
            elif request is not None and known is None:
                self.stops[short_id] = request
                changed.append(short_id)
        for short_id in changed:  # their services follow from this reconciliation on
            info = self.docker.inspect(short_id)
            if info is not None:
                self.containers[short_id] = self._state(info)

    def observe(self, container_id: str, name: str = "", event: ContainerEvent | None = None) -> ContainerState:
        """Re-read one container after an event (level-triggered: the event says only 'look').

        A ``kill`` event is the one whose content counts: with the stop signal it
        starts a drain (see :mod:`registrar.stopping`); a ``start`` ends one.
        """
        info = self.docker.inspect(container_id)
        short_id = container_id[:12]
        if info is None or not is_running(info) or (event is not None and event.action == "start"):
            self.stops.pop(short_id, None)
        elif event is not None and event.action == "kill" and self.config.drain and short_id not in self.stops:
            request = stopping.stop_request(info, event.attribute("signal"), event.at)
            if request is not None and request.give_up_at > time.time():
                self.stops[short_id] = request
        state = self._state(info) if info is not None else removed(container_id, name)
        self.containers[state.id] = state
        return state

    def give_up_stops(self, now: float) -> None:
        """Containers asked to stop that still run past their stop timeout did not stop: put them back."""
        for short_id, request in list(self.stops.items()):
            if now < request.give_up_at:
                continue
            del self.stops[short_id]
            state = self.containers.get(short_id)
            if state is not None and state.running:
                log.warning("container %s was %s and still runs past its stop timeout: it did not stop; its "
                            "services are routable again", state.name, request.reason())
                self.observe(short_id, state.name)

    def next_give_up(self) -> float | None:
        """Wall-clock time of the next stop request to give up, if any."""
        return min((request.give_up_at for request in self.stops.values()), default=None)

    def _state(self, info: dict) -> ContainerState:
        # One container's odd payload must not stop the others: the agent never crashes on one.
        try:
            return container_state(info, self.mapping, self.stops.get(str(info.get("Id", ""))[:12]))
        except Exception as error:  # a bug or a payload shape Docker never documented
            log.exception("container %s: cannot map its settings", info.get("Name") or info.get("Id"))
            return ContainerState(str(info.get("Id", ""))[:12], str(info.get("Name", "")).lstrip("/"), True,
                                  warnings=(f"container {info.get('Name')}: settings unreadable ({error!r}); "
                                            "its services are left as they are",), unreadable=True)

    # Consul side -----------------------------------------------------------------
    def full_sync(self, cleanup: bool = False) -> list[AgentError]:
        # Consul first: while it is down this fails fast, before inspecting every container.
        actual = self.consul.owned_services()
        if not self.mapping.host_address:  # learned from the agent at the first contact (no --ip)
            self.mapping = dataclasses.replace(self.mapping, host_address=self.consul.host_address())
        self.actual = actual
        self.read_docker()
        failures = self.apply(cleanup=cleanup)
        self.last_reconcile = time.time()
        log.debug("full reconciliation done: %d container(s) known, %d service(s) of this host in Consul",
                  len(self.containers), len(self.actual or ()))
        return failures

    def check_consul(self) -> list[AgentError]:
        """Compare Consul with what we believe it holds; repair if it differs (agent restart)."""
        fresh = self.consul.owned_services()
        if self.actual is not None and fresh == self.actual:
            return []
        if self.actual is not None:
            missing = sorted(set(self.actual) - set(fresh))
            if missing:
                log.warning("Consul lost %d of this host's services (%s); restoring them", len(missing),
                            ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""))
            self._health_pushed.clear()
        self.actual = fresh
        return self.apply()

    def apply(self, cleanup: bool = False) -> list[AgentError]:
        """Make Consul match the desired state; per-service refusals are returned, not raised."""
        if self.actual is None:
            self.actual = self.consul.owned_services()
        desired = desired_state(self.containers.values(), self.config.deregister)
        for warning in desired.warnings:
            if warning not in self._warned:
                log.warning("%s", warning)
        self._warned = set(desired.warnings)
        steps = plan(desired, self.actual, cleanup=cleanup)
        failures: list[AgentError] = []
        for service in steps.register:
            changed = service.id in self.actual
            try:
                self.consul.register(service)
            except (ServiceRefused, ConsulDenied) as error:
                self.metrics.registrations.labels("refused").inc()
                failures.append(error)
                self._refused(service.id, str(error))
                continue
            self.metrics.registrations.labels("ok").inc()
            self._refused_said.pop(service.id, None)
            self.actual[service.id] = Actual.from_service(service)
            check = service.health_check
            if check is not None:
                state = self.containers.get(service.container_id)
                self._health_pushed[check.id] = state.health if state and state.health else (check.status, "")
            stop = self.containers.get(service.container_id)
            if service.stopping_check is not None and stop is not None and stop.stopping is not None:
                if service.id not in self._draining_said:
                    self.metrics.drains.inc()
                    log.info("drained %s: container %s was %s; out of routing until it exits", service.describe(),
                             stop.name, stop.stopping.reason(),
                             extra={"service": service.name, "service_id": service.id, "container": stop.name,
                                    "signal": stop.stopping.signal})
                self._draining_said.add(service.id)
            else:
                self._draining_said.discard(service.id)
                log.info("registered %s%s", service.describe(), " (definition changed)" if changed else "",
                         extra={"service": service.name, "service_id": service.id,
                                "container": service.container_name})
        for step in steps.deregister:
            try:
                self.consul.deregister(step.id, step.name)
            except (ServiceRefused, ConsulDenied) as error:
                self.metrics.deregistrations.labels("refused").inc()
                failures.append(error)
                self._refused(step.id, str(error))
                continue
            self.metrics.deregistrations.labels("ok").inc()
            self._refused_said.pop(step.id, None)
            self.actual.pop(step.id, None)
            log.info("deregistered %s (%s): %s", step.name, step.id, step.reason,
                     extra={"service": step.name, "service_id": step.id, "reason": step.reason})
        for service_id in steps.left:
            if service_id not in self._left:
                log.info("left %s in Consul: its container is unknown to Docker (--cleanup removes it)",
                         service_id)
        self._left = set(steps.left)
        self.left = tuple(steps.left)
        holders = {service.container for service in self.actual.values()}
        for container_id in [c for c, s in self.containers.items() if s.removed and c not in holders]:
            del self.containers[container_id]
        failures += self.push_health(desired.services.values())
        return failures

    def push_health(self, services, force: bool = False) -> list[AgentError]:
        """Keep each Docker HEALTHCHECK TTL check equal to its container's health."""
        failures: list[AgentError] = []
        for service in services:
            check = service.health_check
            state = self.containers.get(service.container_id)
            if check is None or state is None or state.health is None or service.id not in (self.actual or {}):
                continue
            if not force and self._health_pushed.get(check.id) == state.health:
                continue
            status, output = state.health
            try:
                self.consul.update_ttl(check.id, status, output, service.name)
            except (ServiceRefused, ConsulDenied) as error:
                failures.append(error)
                log.debug("health update of %s refused: %s", check.id, error)
                continue
            if self._health_pushed.get(check.id, (None,))[0] != status:
                log.info("health of %s (%s) is %s: %s", service.name, service.id, status, output,
                         extra={"service": service.name, "service_id": service.id, "status": status})
            self._health_pushed[check.id] = state.health
        return failures

    def heartbeat(self) -> list[AgentError]:
        desired = desired_state(self.containers.values(), self.config.deregister)
        return self.push_health(desired.services.values(), force=True)

    def _refused(self, service_id: str, message: str) -> None:
        # The same refusal comes back at every pass; say it once at warning level.
        if self._refused_said.get(service_id) != message:
            log.warning("%s", message)
        else:
            log.debug("%s", message)
        self._refused_said[service_id] = message


class Daemon:
    def __init__(self, registrar: Registrar, config: Config, clock=time.monotonic, poll_interval=POLL_INTERVAL,
                 events_factory=EventStream, consul_backoff: Backoff | None = None,
                 docker_backoff: Backoff | None = None, lifecycle: Lifecycle | None = None, notify=notify):
        self.registrar = registrar
        self.config = config
        self.lifecycle = lifecycle or Lifecycle(Watchdog.from_environ(), clock=clock)
        self.clock = self.lifecycle.clock
        self.poll_interval = poll_interval
        self.events_factory = events_factory
        self.notify = notify
        # Consul is the local agent: retry it often (cap 2s) so a restart is noticed within seconds.
        self.consul_backoff = consul_backoff or consul_agent_backoff()
        self.docker_backoff = docker_backoff or Backoff(0.5, 10.0)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.lifecycle.on_stop(lambda: self.queue.put(("stop",)))
        self.ready = False
        self.consul_down = self.docker_down = False
        self.reconciled = False  # the first full reconciliation is done
        self.started = time.time()
        self.version = package_version()
        self.endpoint = StatusEndpoint("registrar", self.lifecycle, render_page, registrar.metrics.text,
                                       CONTENT_TYPE_LATEST, self._snapshot())

    def stop(self, reason: str = "asked to stop") -> None:
        """Safe from a signal handler (agentkit's Lifecycle: a flag and a reentrant queue put)."""
        self.lifecycle.request_stop(reason)

    def _ready(self, status: str) -> None:
        if not self.ready:
            self.ready = True
            self.notify(f"READY=1\nSTATUS={status}")

    def _on_event(self, event: dict) -> None:
        container_event = ContainerEvent.from_docker(event)
        if container_event is not None:
            self.queue.put(("event", container_event))

    def _snapshot(self) -> RegistrarSnapshot:
        registrar = self.registrar
        consul = None if registrar.actual is None and not self.consul_down else not self.consul_down
        docker = None if not self.reconciled and not self.docker_down else not self.docker_down
        ready, reason = readiness(self.reconciled, consul, docker)
        desired_warnings = tuple(w for state in registrar.containers.values() for w in state.warnings)
        return RegistrarSnapshot(self.version, self.config.hostname, self.started, time.time(), ready, reason,
                                 consul, docker, len(registrar.actual or {}),
                                 container_views(registrar.containers, set(registrar.actual or {})),
                                 desired_warnings, registrar.left, registrar.last_reconcile)

    def _publish(self) -> None:
        snapshot = self._snapshot()
        self.registrar.metrics.publish(snapshot)
        self.endpoint.publish(snapshot)

    def run(self) -> None:
        if self.config.status_address:
            self.endpoint.serve(*self.config.status_address)
        events = self.events_factory(self.config.docker_url, self._on_event,
                                     lambda: self.queue.put(("resync", "Docker event stream reconnected")))
        events.start()
        # Subscribe before the first full reconciliation, so nothing falls between them.
        events.connected.wait(10)
        try:
            self._loop()
            log.info("%s; stopping", self.lifecycle.stop_reason or "asked to stop")
        finally:
            self.notify("STOPPING=1")
            self.endpoint.stop()
            events.stop()
            events.join()
            log.info("stopped")

    def _loop(self) -> None:
        now = self.clock()
        full_due, poll_due, health_due = now, now + self.poll_interval, now + HEALTH_HEARTBEAT
        consul_backoff, docker_backoff = self.consul_backoff, self.docker_backoff
        registrar = self.registrar
        watchdog = self.lifecycle.watchdog
        while not self.lifecycle.stopping:
            now = self.clock()
            timeout = max(0.0, min(full_due, poll_due, health_due) - now)
            if watchdog.enabled:
                timeout = min(timeout, watchdog.due_in(now))
            give_up = registrar.next_give_up()
            if give_up is not None:
                timeout = min(timeout, max(0.0, give_up - time.time()))
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if self.lifecycle.stopping or (item and item[0] == "stop"):
                break
            try:
                if item and item[0] == "event":
                    event = item[1]
                    registrar.metrics.docker_events.labels(event.action).inc()
                    log.debug("docker event %s %s (%s)%s", event.action, event.name, event.id[:12],
                              f" signal {event.attribute('signal')}" if event.action == "kill" else "")
                    registrar.observe(event.id, event.name, event)
                    if not self.consul_down:
                        registrar.apply()
                elif item and item[0] == "resync":
                    log.debug("full reconciliation requested: %s", item[1])
                    full_due = self.clock()
                now = self.clock()
                if now >= full_due:
                    with registrar.metrics.reconcile_seconds.time():
                        registrar.full_sync(cleanup=self.config.cleanup)
                    self.reconciled = True
                    full_due = now + self.config.resync if self.config.resync else math.inf
                    # systemd (Type=notify): started once the first full reconciliation is done.
                    self._ready("reconciled; following Docker")
                    if self.consul_down:
                        log.info("Consul at %s answers again; reconciled", self.config.consul_address)
                        self.notify("STATUS=following Docker")
                    if self.docker_down:
                        log.info("Docker at %s answers again; reconciled", self.config.docker_url)
                    self.consul_down = self.docker_down = False
                    consul_backoff.reset()
                    docker_backoff.reset()
                if now >= poll_due:
                    poll_due = now + self.poll_interval
                    if not self.consul_down:
                        registrar.check_consul()
                if now >= health_due:
                    health_due = now + HEALTH_HEARTBEAT
                    if not self.consul_down:
                        registrar.heartbeat()
                if registrar.next_give_up() is not None and registrar.next_give_up() <= time.time():
                    registrar.give_up_stops(time.time())
                    if not self.consul_down:
                        registrar.apply()
            except (ConsulUnavailable, ConsulDenied) as error:
                registrar.actual = None
                delay = consul_backoff.next()
                if not self.consul_down or consul_backoff.worth_saying:
                    log.warning("%s; keeping the desired state, retrying (next in %.1fs)", error, delay)
                if not self.consul_down:
                    self._ready(f"Consul unreachable ({error}); following Docker, retrying")
                    self.notify("STATUS=Consul unreachable; following Docker, retrying")
                self.consul_down = True
                full_due = self.clock() + delay
            except DockerUnavailable as error:
                delay = docker_backoff.next()
                if not self.docker_down:
                    log.warning("%s; keeping the last known containers, retrying (next in %.1fs)", error, delay)
                    self._ready(f"Docker unreachable ({error}); retrying")
                self.docker_down = True
                full_due = self.clock() + delay
            except Exception:  # a bug must cost one pass, not the daemon; the next full pass retries
                log.exception("unexpected error; reconciling everything again in %.0fs", UNEXPECTED_RETRY)
                full_due = self.clock() + UNEXPECTED_RETRY
            self._publish()
            self.lifecycle.tick()


def connect(sink: ConsulSink, attempts: int, interval: float, sleep=time.sleep) -> dict:
    """Reach Consul at start-up: ``attempts`` retries ``interval`` seconds apart (-1: forever)."""
    def before_sleep(state: tenacity.RetryCallState) -> None:
        log.warning("%s; retrying in %.1fs (attempt %d)", state.outcome.exception(), interval,
                    state.attempt_number + 1)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(ConsulUnavailable),
        stop=tenacity.stop_never if attempts < 0 else tenacity.stop_after_attempt(attempts + 1),
        wait=tenacity.wait_fixed(interval), sleep=sleep, reraise=True, before_sleep=before_sleep)
    return retrying(sink.agent_services)
