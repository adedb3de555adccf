"""Desired vs actual -> the few registrations and deregistrations that differ (pure).

"Actual" is this host's registrar-made services in the local Consul agent
(``/v1/agent/services`` filtered by the ``registrar-host`` meta mark). A
service is unchanged when Consul holds the same name, address, port, tags,
meta and definition digest (``registrar-hash``, which covers the checks);
unchanged services are never re-registered, because every registration wakes
every watcher in the cluster.

An actual service nobody wants is deregistered when its container is known
to be stopped or removed, or runs but no longer wants it. When Docker does
not know its container at all (it disappeared while the registrar was down)
it is removed only with ``--cleanup``.
"""

from __future__ import annotations

import dataclasses

from .desired import Desired
from .model import MARK_CONTAINER, MARK_HASH, MARK_HOST, Service


@dataclasses.dataclass(frozen=True)
class Actual:
    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]

    @classmethod
    def from_agent(cls, entry: dict) -> "Actual":
        return cls(entry.get("ID", ""), entry.get("Service", ""), entry.get("Address", ""),
                   int(entry.get("Port") or 0), tuple(entry.get("Tags") or ()),
                   tuple(sorted((entry.get("Meta") or {}).items())))

    @classmethod
    def from_service(cls, service: Service) -> "Actual":
        """What Consul holds right after registering ``service``."""
        payload = service.payload()
        return cls(service.id, service.name, service.address, service.port, service.tags,
                   tuple(sorted(payload["Meta"].items())))

    @property
    def meta_dict(self) -> dict[str, str]:
        return dict(self.meta)

    @property
    def container(self) -> str:
        return self.meta_dict.get(MARK_CONTAINER, "")


def owned(agent_services: dict, hostname: str) -> dict[str, Actual]:
    """This host's registrar-made services among everything the agent holds."""
    return {service_id: Actual.from_agent(entry) for service_id, entry in agent_services.items()
            if (entry.get("Meta") or {}).get(MARK_HOST) == hostname}


def same(service: Service, actual: Actual) -> bool:
    meta = service.meta_dict
    meta[MARK_HASH] = service.fingerprint()
    return (service.name == actual.name and service.address == actual.address and service.port == actual.port
            and service.tags == actual.tags and meta == actual.meta_dict)


@dataclasses.dataclass(frozen=True)
class Deregistration:
    id: str
    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Plan:
    register: tuple[Service, ...] = ()
    deregister: tuple[Deregistration, ...] = ()
    left: tuple[str, ...] = ()  # orphaned IDs left in place for want of --cleanup

    def __bool__(self) -> bool:
        return bool(self.register or self.deregister)


def plan(desired: Desired, actual: dict[str, Actual], *, cleanup: bool) -> Plan:
    register = [service for service_id, service in sorted(desired.services.items())
                if service_id not in actual or not same(service, actual[service_id])]
    deregister: list[Deregistration] = []
    left: list[str] = []
    for service_id, service in sorted(actual.items()):
        if service_id in desired.services:
            continue
        state = desired.containers.get(service.container)
        if state is None:
            if cleanup:
                deregister.append(Deregistration(service_id, service.name, "container gone (--cleanup)"))
            else:
                left.append(service_id)
        elif state.id in desired.kept:
            continue
        elif state.removed:
            deregister.append(Deregistration(service_id, service.name, f"container {state.name} removed"))
        elif not state.running:
            deregister.append(Deregistration(service_id, service.name, f"container {state.name} stopped"))
        else:
            deregister.append(Deregistration(service_id, service.name, f"no longer wanted by container {state.name}"))
    return Plan(tuple(register), tuple(deregister), tuple(left))
