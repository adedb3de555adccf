"""What the registrar shows about itself: one immutable snapshot per turn of its loop (pure).

The status endpoint (``/``, ``/ready``, ``/metrics``' gauges) reads only the
last published snapshot, from its own thread.
"""

from __future__ import annotations

import dataclasses

from .desired import ContainerState
from .model import Service


@dataclasses.dataclass(frozen=True)
class ServiceView:
    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...]
    checks: tuple[str, ...]
    in_consul: bool


@dataclasses.dataclass(frozen=True)
class ContainerView:
    id: str
    name: str
    running: bool
    state: str                         # running, exited 3, removed, stopping: sent SIGTERM at ...
    stopping: bool
    services: tuple[ServiceView, ...]
    warnings: tuple[str, ...]          # why a service or key of it was skipped


@dataclasses.dataclass(frozen=True)
class RegistrarSnapshot:
    version: str
    hostname: str
    started: float
    published: float
    ready: bool
    ready_reason: str
    consul_reachable: bool | None
    docker_reachable: bool | None
    services_owned: int = 0
    containers: tuple[ContainerView, ...] = ()
    warnings: tuple[str, ...] = ()
    orphans: tuple[str, ...] = ()       # services of this host whose container Docker does not know
    last_reconcile: float | None = None


def readiness(reconciled: bool, consul_reachable: bool | None, docker_reachable: bool | None) -> tuple[bool, str]:
    if consul_reachable is False:
        return False, "not ready: Consul unreachable; following Docker, retrying"
    if docker_reachable is False:
        return False, "not ready: Docker unreachable; retrying"
    if not reconciled:
        return False, "not ready: the first full reconciliation has not completed"
    return True, "ready: Consul holds what Docker runs"


def container_views(containers: dict[str, ContainerState], owned: set[str]) -> tuple[ContainerView, ...]:
    views = []
    for state in sorted(containers.values(), key=lambda s: (not s.running, s.name)):
        if state.removed:
            text = "removed"
        elif state.stopping is not None:
            text = f"stopping: {state.stopping.reason()} (drained until it exits)"
        elif state.running:
            text = "running"
        else:
            text = f"exited {state.exit_code}" if state.exit_code is not None else "not running"
        views.append(ContainerView(state.id, state.name, state.running, text, state.stopping is not None,
                                   tuple(_service(s, owned) for s in state.services), state.warnings))
    return tuple(views)


def _service(service: Service, owned: set[str]) -> ServiceView:
    return ServiceView(service.id, service.name, service.address, service.port, service.tags,
                       tuple(check.id for check in service.checks), service.id in owned)
