"""The renderer's status page (``/``): the routing table as nginx has it, and why anything is missing (pure).

From one :class:`renderer.observe.status.StatusSnapshot`; the template is
``page.html.j2`` next to this module, over the daemons' shared frame
(:mod:`agentkit.status_page`: every value HTML-escaped, since catalog values
are nginx-safe, not HTML-safe: ``<`` may be in a meta value).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from agentkit import status_page
from renderer.catalog.model import PASSING, Catalog, Instance
from renderer.routes.model import Location, Pool, RouteTable
from renderer.routes.report import not_proxied

from .certificates import days_left
from .status import StatusSnapshot

_ENV = status_page.environment(Path(__file__).parent)


@dataclasses.dataclass(frozen=True)
class Member:
    """One instance of a route's service, in nginx or not, and why."""

    address: str
    instance: str
    node: str
    status: str
    weight: int | None
    routed: bool
    note: str = ""


@dataclasses.dataclass(frozen=True)
class RouteRow:
    listener: str         # http, https, tcp/9999, tls-passthrough
    where: str            # host and path, or port
    service: str
    action: str           # proxy, redirect to HTTPS, 503 ...
    options: str
    members: tuple[Member, ...]


def _members(pools: tuple[Pool | None, ...], service: str, catalog: Catalog | None) -> tuple[Member, ...]:
    servers = {}
    for pool in pools:
        if pool is None:
            continue
        for server in pool.servers:
            note = "canary" if pool.name.startswith("_canary_") else ""
            servers[server.instance] = Member(server.address, server.instance, server.node, PASSING, server.weight,
                                              True, note)
    members = list(servers.values())
    for instance in catalog.instances_of(service) if catalog is not None else ():
        if instance.id not in servers:
            why = "not passing" if instance.status != PASSING else "not routed (see left out)"
            members.append(Member(instance.host_port, instance.id, instance.node, instance.status, None, False, why))
    return tuple(members)


def _action(location: Location) -> str:
    return not_proxied(location) or f"{location.backend} proxy"


def route_rows(table: RouteTable, catalog: Catalog | None) -> list[RouteRow]:
    rows = []
    for scheme, host, location in table.routes():
        members = () if location.action == "redirect" else _members(
            (location.pool, location.canary), location.service, catalog)
        rows.append(RouteRow(scheme, f"{host.name}{location.path}", location.service, _action(location),
                             " ".join(location.options) if location.action != "redirect" else "", members))
    for route in table.passthrough:
        rows.append(RouteRow("tls-passthrough", route.host, route.service,
                             "TLS to the instances" if route.pool else "closed: no passing instance", "",
                             _members((route.pool,), route.service, catalog)))
    for listener in table.listeners:
        rows.append(RouteRow(listener.protocol, str(listener.port), listener.service,
                             "proxy" if listener.pool else "no passing instance", "",
                             _members((listener.pool,), listener.service, catalog)))
    return rows


def service_rows(catalog: Catalog) -> list[tuple[str, tuple[Instance, ...]]]:
    return [(name, catalog.instances_of(name)) for name, _, _ in catalog.services()]


def render(snapshot: StatusSnapshot, hostname: str, traffic: dict | None = None,
           certificates: list | None = None) -> str:
    """The page; ``traffic``: the last window as :func:`renderer.observe.traffic.summary` gives it (None: not
    counted); ``certificates``: (host, source, not after) of those nginx serves."""
    table, catalog = snapshot.table, snapshot.catalog
    return status_page.render(
        _ENV, "page.html.j2", "renderer", hostname, snapshot, traffic=traffic,
        routes=route_rows(table, catalog) if table is not None else None,
        services=service_rows(catalog) if table is None and catalog is not None else None,
        left_out=list(catalog.refused) if catalog is not None else [],
        refused=list(table.refused) if table is not None else [],
        settings=list(table.settings_in_force) if table is not None else [],
        settings_refused=list(table.kv_refused) if table is not None else [],
        notes=list(table.notes) if table is not None else [],
        certificates=[(host, source, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(not_after)),
                       days_left(not_after)) for host, source, not_after in certificates or ()])
