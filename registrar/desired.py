"""What Consul should hold for this host, from what Docker holds (pure).

Each container Docker knows becomes a :class:`ContainerState`; together they
form :class:`Desired`: the services wanted, by ID, and which containers'
services must be left alone. The daemon keeps one ContainerState per
container, replaces it on every Docker event for that container, and rebuilds
all of them at every full reconciliation.

Choices made here:

* Only running containers want services. A stopped container's services go
  away at the next reconciliation, even if its ``die`` event was missed
  (registrator's "stale services after a missed event"), except with
  ``--deregister on-success`` when it failed: then whatever it has in
  Consul is kept as it is, neither removed nor re-registered (its Docker
  HEALTHCHECK TTL check is no longer refreshed, so it turns critical after
  the TTL: the container is not running). As in registrator, an exit by a
  signal (Docker reports 128 + the signal: ``docker stop`` 143, ``docker
  kill`` 137) counts as success: it was stopped, it did not fail.
* A removed container leaves a tombstone (``removed=True``) so its services
  are deregistered on ``destroy`` without ``--cleanup``; tombstones are
  dropped once Consul no longer holds any of their services.
* Two containers claiming the same service ID (a copied ``SERVICE_ID``):
  the container whose name sorts first keeps it, the other's service is
  skipped with a warning. Deterministic, so reconciliations do not flap.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

from .checks import docker_health
from .labels import container_name, is_running, services_for
from .model import MappingSettings
from .model import STOPPING_CHECK_SUFFIX, STOPPING_TTL, Check, Service, check_id
from .stopping import StopRequest

DEREGISTER_POLICIES = ("always", "on-success")
SIGNALED = 128  # Docker's exit code for a process killed by signal N is 128 + N
_EXITED = re.compile(r"^Exited \((-?\d+)\)")


@dataclasses.dataclass(frozen=True)
class ContainerState:
    id: str  # short (12 hex) ID, as in the registrar-container meta
    name: str
    running: bool
    exit_code: int | None = None
    removed: bool = False
    services: tuple[Service, ...] = ()
    warnings: tuple[str, ...] = ()
    health: tuple[str, str] | None = None  # (Consul status, output) of a Docker HEALTHCHECK
    unreadable: bool = False  # its settings could not be mapped: leave its services as they are
    stopping: StopRequest | None = None  # asked to stop and still running: its services are drained

    def keeps_services(self, deregister: str) -> bool:
        if self.unreadable:
            return True
        return deregister == "on-success" and not self.running and not self.removed and self.failed

    @property
    def failed(self) -> bool:
        """Exited non-zero, and not by a signal (registrator's test: the 128 bit of the exit code)."""
        return self.exit_code not in (None, 0) and not self.exit_code & SIGNALED


def container_state(info: dict, settings: MappingSettings, stopping: StopRequest | None = None) -> ContainerState:
    short_id = info.get("Id", "")[:12]
    state = info.get("State") or {}
    if not is_running(info):
        return ContainerState(short_id, container_name(info), False, exit_code=state.get("ExitCode"))
    mapping = services_for(info, settings)
    services = mapping.services
    if stopping is not None:
        services = tuple(draining(service, stopping) for service in services)
    return ContainerState(short_id, container_name(info), True, services=services,
                          warnings=mapping.warnings, health=docker_health(info), stopping=stopping)


def draining(service: Service, request: StopRequest) -> Service:
    """``service`` with the critical check that takes it out of routing while its container stops."""
    check = Check(id=check_id(service.id, STOPPING_CHECK_SUFFIX), name=f"Container stopping: {request.reason()}",
                  ttl=STOPPING_TTL, status="critical", stopping=True)
    return dataclasses.replace(service, checks=(*service.checks, check))


def from_summary(summary: dict) -> ContainerState:
    """A container that is not running, from ``GET /containers/json?all=1`` without an inspect."""
    names = summary.get("Names") or []
    name = names[0].lstrip("/") if names else summary.get("Id", "")[:12]
    match = _EXITED.match(summary.get("Status") or "")
    return ContainerState(summary.get("Id", "")[:12], name, False,
                          exit_code=int(match.group(1)) if match else None)


def removed(container_id: str, name: str = "") -> ContainerState:
    return ContainerState(container_id[:12], name, False, removed=True)


@dataclasses.dataclass(frozen=True)
class Desired:
    services: dict[str, Service]
    containers: dict[str, ContainerState]  # every container Docker knows, plus tombstones
    kept: frozenset[str]  # container IDs whose services stay untouched
    warnings: tuple[str, ...]


def desired_state(containers: Iterable[ContainerState], deregister: str = "always") -> Desired:
    by_container = {state.id: state for state in containers}
    services: dict[str, Service] = {}
    warnings: list[str] = []
    for state in sorted(by_container.values(), key=lambda s: (s.name, s.id)):
        warnings += state.warnings
        for service in state.services:
            holder = services.get(service.id)
            if holder is not None:
                warnings.append(f"container {state.name} ({state.id}): service ID {service.id!r} is already used "
                                f"by container {holder.container_name}; skipped")
                continue
            services[service.id] = service
    kept = frozenset(s.id for s in by_container.values() if s.keeps_services(deregister))
    return Desired(services, by_container, kept, tuple(warnings))
