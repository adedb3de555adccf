"""Converging this host's services in Consul on what Docker runs: both sides read, the difference written.

:class:`Registrar` holds the desired state (every container's, from
:mod:`registrar.desired`) and what Consul holds of this host's services, and
makes the few writes that differ (:mod:`registrar.reconcile` decides them).
It talks to Docker and Consul through the edges it is given
(:mod:`registrar.docker_source`, :mod:`registrar.consul_sink`), and to no
thread or timer: the loop (:mod:`registrar.daemon`) says when. Per-service
refusals are returned, never raised, so one refused service never stops the
others.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from . import stopping
from .config import Config
from .consul_sink import ConsulSink
from .desired import ContainerState, container_state, desired_state, from_summary, removed
from .docker_source import ContainerEvent, DockerSource
from .errors import AgentError, ConsulDenied, ServiceRefused
from .labels import is_running
from .metrics import RegistrarMetrics
from .model import MappingSettings
from .reconcile import Actual, plan

log = logging.getLogger("registrar")


class Registrar:
    """Desired and actual state, and the decisions; no threads, no timers."""

    def __init__(self, config: Config, docker: DockerSource, consul: ConsulSink, mapping: MappingSettings,
                 metrics: RegistrarMetrics | None = None, wall=time.time):
        self.config = config
        self.wall = wall  # the wall clock: Docker's event times and stop deadlines are wall-clock times
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
        now = self.wall()
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
            if request is not None and request.give_up_at > self.wall():
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
        self.last_reconcile = self.wall()
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
