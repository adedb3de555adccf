"""One HTTP service's own part of the route table, from its instances alone (pure).

A service tagged ``http`` declares its routes with meta (the registrar
turns ``SERVICE_<KEY>`` labels into meta ``<key>``):

* route keys, which belong to the service (settled by :mod:`.voting` when
  instances disagree): ``hosts``, ``path``, ``strip_path``, ``tls``,
  ``backend``, ``https_redirect``, ``canary_percent``, ``auth``,
  ``auth_headers``, ``rate_limit``, ``rate_burst``, ``allow``,
  ``max_body``, ``timeout``;
* instance keys: ``weight`` (1-100, default 1) and ``canary`` (true/false);
  a bad one refuses that instance only.

What a service's part cannot hold is refused here, before hosts are
assembled: ``tls=passthrough`` is layer 4, so keys it cannot honour
(anything but ``hosts`` and ``tls``) refuse the route rather than be
silently ignored (an allow-list nobody enforces); gRPC needs HTTP/2, which
nginx 1.22 speaks only on its TLS listener, so ``backend=grpc`` needs
``tls=terminate``.

**Canary**: instances with ``canary=true`` form their own pool; the
service's ``canary_percent`` of clients go to it (sticky per client). With
no canary instance passing every client gets the stable pool; with no
stable instance passing the canary pool takes everyone; while
``canary_percent`` is 0 (the default) canary instances get no traffic.

A service's part is a function of its instances only, so the builder
computes it again only when they changed.
"""

from __future__ import annotations

import dataclasses

from renderer.catalog.model import Instance

from . import values
from .model import DEFAULT_RATE_BURST, Auth, Location, Pool, RouteRefusal, Server, short_id
from .voting import ROUTE_KEY_SET, vote

PASSTHROUGH_KEYS = frozenset({"hosts", "tls"})
INSTANCE_KEYS = {"weight": (values.weight, 1), "canary": (values.boolean, False)}


@dataclasses.dataclass(frozen=True)
class ServiceRoutes:
    hosts: tuple[str, ...] | None      # None: the default NAME.DOMAIN
    paths: tuple[str, ...]
    tls: str | None
    https_redirect: bool
    location: Location | None          # the template for every (host, path), pool included; None: refused
    canary_percent: int
    refused: tuple[RouteRefusal, ...]
    notes: tuple[str, ...]
    created: int = 0                   # the service's first registration (Consul's CreateIndex): who came first


def service_routes(name: str, instances: tuple[Instance, ...], passing: tuple[Instance, ...]) -> ServiceRoutes:
    """The part of the table service ``name`` declares, from its instances and those of them passing."""
    refused: list[RouteRefusal] = []
    notes: list[str] = []
    created = age(instances)

    def refuse(reason: str | None = None) -> ServiceRoutes:
        if reason:
            refused.append(RouteRefusal(name, reason))
        return ServiceRoutes(None, ("/",), None, False, None, 0, tuple(refused), tuple(notes), created)

    voters = passing or instances
    if all(ROUTE_KEY_SET.isdisjoint(instance.meta) and not instance.withheld for instance in voters):
        keys = {}
    else:
        keys = vote(name, voters, refused, notes)
        if keys is None:
            return refuse()
    tls = keys.get("tls")
    if tls == "passthrough":
        extra = sorted(set(keys) - PASSTHROUGH_KEYS)
        if extra:
            return refuse(f"tls=passthrough forwards TLS untouched (layer 4): {', '.join(extra)} cannot be "
                          "applied; its routes are not served")
    backend = keys.get("backend", "http")
    if backend in ("grpc", "grpcs") and tls != "terminate":
        return refuse(f"backend={backend} needs tls=terminate (nginx 1.22 speaks HTTP/2 only on its TLS "
                      "listener); its routes are not served")
    stable, canary = servers(name, passing, refused)
    percent = keys.get("canary_percent", 0)
    pool = Pool(name, name, tuple(stable)) if stable else None
    canary_pool = Pool(f"_canary_{name}", name, tuple(canary)) if canary and percent > 0 else None
    if canary and percent == 0:
        notes.append(f"service {name}: {len(canary)} canary instance(s) get no traffic while canary_percent is 0")
    if pool is None and canary_pool is not None:  # only canaries pass: they take everyone
        pool, canary_pool = canary_pool, None
    auth = keys.get("auth")
    location = Location(
        path="/", service=name, service_id=short_id(name), action="proxy" if pool else "unavailable", pool=pool,
        canary=canary_pool, canary_percent=percent if canary_pool else 0, backend=backend,
        strip_path=keys.get("strip_path", False),
        auth=Auth(auth[0], auth[1], keys.get("auth_headers", ()), None) if auth else None,
        rate_limit=keys.get("rate_limit"), rate_burst=keys.get("rate_burst", DEFAULT_RATE_BURST),
        allow=keys.get("allow", ()), max_body=keys.get("max_body"), timeout=keys.get("timeout"))
    return ServiceRoutes(keys.get("hosts"), keys.get("path", ("/",)), tls,
                         keys.get("https_redirect", tls == "terminate"), location, percent,
                         tuple(refused), tuple(notes), created)


def age(instances: tuple[Instance, ...]) -> int:
    """When the service was first registered: the oldest CreateIndex among its instances (0: not known)."""
    return min((instance.created for instance in instances if instance.created), default=0)


def servers(name: str, passing: tuple[Instance, ...], refused: list[RouteRefusal]) -> tuple[list[Server], list[Server]]:
    """(stable, canary) servers of the passing instances; one with a bad instance key is refused alone."""
    stable, canary = [], []
    for instance in passing:
        chosen = {}
        for key, (parse, default) in INSTANCE_KEYS.items():
            if key in instance.withheld:
                refused.append(RouteRefusal(name, "its value is unsafe for nginx and was withheld; this instance is "
                                             "not routed", instance.id, key, "(withheld)"))
                break
            try:
                chosen[key] = parse(instance.meta[key]) if key in instance.meta else default
            except ValueError as error:
                refused.append(RouteRefusal(name, f"{error}; this instance is not routed", instance.id, key,
                                            instance.meta[key]))
                break
        else:
            server = Server(instance.host_port, chosen["weight"], instance.id, instance.node)
            (canary if chosen["canary"] else stable).append(server)
    return stable, canary
