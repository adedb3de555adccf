"""Plain values the registrar passes around: a wanted service and its checks.

A :class:`Service` is what one container port should look like in Consul. It
is built by :mod:`registrar.labels`, compared with what Consul holds by
:mod:`registrar.reconcile`, and written by :mod:`registrar.consul_sink`.

Ownership (it only ever removes its own services): every service
carries the meta keys below. ``registrar-host`` names this registrar's host
(``--hostname``); a service without it, or with another host's name, is never
touched. ``registrar-hash`` is a digest of the whole normalised definition, so
"unchanged" is one string comparison and includes the checks, which
``/v1/agent/services`` does not return.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tag_template import Template

MARK_HOST = "registrar-host"
MARK_CONTAINER = "registrar-container"
MARK_HASH = "registrar-hash"
RESERVED_META_PREFIX = "registrar-"

# Docker HEALTHCHECK -> Consul TTL check. The registrar refreshes it every
# HEALTH_HEARTBEAT seconds; if the registrar dies the check expires to
# critical after HEALTH_TTL: health nobody reports is unknown health.
HEALTH_TTL = "90s"
HEALTH_HEARTBEAT = 30.0
HEALTH_CHECK_SUFFIX = "docker-health"
STOPPING_CHECK_SUFFIX = "stopping"
STOPPING_TTL = "24h"  # never passed: the check is removed with the request, or the service on die


def check_id(service_id: str, kind: str | None = None) -> str:
    """Registrator's check ID: ``service:<service id>``, the ID Consul gives a service's one inline check.

    Apps heartbeat a TTL check at ``PUT /v1/agent/check/pass/service:<id>``; a
    service with more checks gets ``service:<id>:<kind>`` for the others.
    """
    return f"service:{service_id}" if kind is None else f"service:{service_id}:{kind}"


@dataclasses.dataclass(frozen=True)
class MappingSettings:
    """How the operator maps containers (flags), the same for every container of this host."""

    hostname: str
    host_address: str
    ip: str | None = None
    internal: bool = False
    explicit: bool = False
    tags: Template | None = None  # --tags: a template evaluated per container
    ip_label: str | None = None   # --use-ip-from-label: the address comes from this container label


@dataclasses.dataclass(frozen=True)
class Check:
    id: str
    name: str
    http: str | None = None
    tcp: str | None = None
    ttl: str | None = None
    args: tuple[str, ...] | None = None
    interval: str | None = None
    timeout: str | None = None
    status: str | None = None
    deregister_after: str | None = None
    tls_skip_verify: bool = False
    method: str | None = None                 # HTTP method of an http(s) check (Consul's default: GET)
    grpc: str | None = None                   # ADDRESS:PORT[/service] of a gRPC health check
    grpc_use_tls: bool = False
    docker_container_id: str | None = None    # a Docker check: Args run inside this container
    shell: str | None = None
    # True for the Docker HEALTHCHECK mirror: its status follows the
    # container and is pushed with TTL updates, so it is not part of identity.
    docker_health: bool = False
    stopping: bool = False  # the drain check: the container was asked to stop (registrar.stopping)

    def payload(self) -> dict:
        body: dict = {"CheckID": self.id, "Name": self.name}
        for key, value in (("HTTP", self.http), ("Method", self.method), ("TCP", self.tcp), ("TTL", self.ttl),
                           ("GRPC", self.grpc), ("DockerContainerID", self.docker_container_id),
                           ("Shell", self.shell), ("Interval", self.interval), ("Timeout", self.timeout),
                           ("Status", self.status),
                           ("DeregisterCriticalServiceAfter", self.deregister_after)):
            if value is not None:
                body[key] = value
        if self.args is not None:
            body["Args"] = list(self.args)
        if self.tls_skip_verify:
            body["TLSSkipVerify"] = True
        if self.grpc_use_tls:
            body["GRPCUseTLS"] = True
        return body

    def identity(self) -> dict:
        body = self.payload()
        if self.docker_health:
            body.pop("Status", None)
        return body


@dataclasses.dataclass(frozen=True)
class Service:
    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]  # sorted (key, value); includes the ownership marks but not the hash
    checks: tuple[Check, ...] = ()
    container_id: str = ""
    container_name: str = ""

    @property
    def meta_dict(self) -> dict[str, str]:
        return dict(self.meta)

    @property
    def health_check(self) -> Check | None:
        return next((check for check in self.checks if check.docker_health), None)

    @property
    def stopping_check(self) -> Check | None:
        return next((check for check in self.checks if check.stopping), None)

    def fingerprint(self) -> str:
        """A digest of everything Consul should hold for this service."""
        identity = {"ID": self.id, "Name": self.name, "Address": self.address, "Port": self.port,
                    "Tags": list(self.tags), "Meta": self.meta_dict,
                    "Checks": [check.identity() for check in self.checks]}
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def payload(self) -> dict:
        """The body of PUT /v1/agent/service/register."""
        meta = self.meta_dict
        meta[MARK_HASH] = self.fingerprint()
        body = {"ID": self.id, "Name": self.name, "Address": self.address, "Port": self.port,
                "Tags": list(self.tags), "Meta": meta}
        if self.checks:
            body["Checks"] = [check.payload() for check in self.checks]
        return body

    def describe(self) -> str:
        return f"{self.name} ({self.id}) at {_hostport(self.address, self.port)}"


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


hostport = _hostport
