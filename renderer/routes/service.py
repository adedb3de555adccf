"""One HTTP service's own part of the route table, from its instances and the operator's settings (pure).

A service tagged ``http`` declares its routes with meta (the registrar
turns ``SERVICE_<KEY>`` labels into meta ``<key>``):

* route keys, which belong to the service (settled by :mod:`.voting` when
  instances disagree): ``hosts``, ``path``, ``strip_path``, ``tls``,
  ``backend``, ``https_redirect``, ``canary_percent``, ``auth``,
  ``auth_headers``, ``rate_limit``, ``rate_burst``, ``rate_limit_scope``,
  ``allow``, ``max_body``, ``timeout``, ``maintenance``, and the gateway
  keys of :mod:`.gateway` (``cors_*``, ``methods``, ``request_headers``,
  ``response_headers``, ``retries``, ``retry_on``, ``connect_timeout``,
  ``mirror``, ``mirror_percent``);
* instance keys: ``weight`` (1-100, default 1) and ``canary`` (true/false);
  a bad one refuses that instance only.

What a service's part cannot hold is refused here, before hosts are
assembled: ``tls=passthrough`` is layer 4, so keys it cannot honour
(anything but ``hosts`` and ``tls``) refuse the route rather than be
silently ignored (an allow-list nobody enforces).

**Canary**: instances with ``canary=true`` form their own pool; the
service's ``canary_percent`` of clients go to it (sticky per client). The
canary declares it: the vote among the canary instances that carry it, and
only where none does, among the stable ones, so stable containers need no
canary key and a new version is rolled out by starting it alone. With no
canary instance passing every client gets the stable pool; with no stable
instance passing the canary pool takes everyone; while ``canary_percent``
is 0 (the default) only requests with ``X-Canary: always`` reach the canary
pool (a dark launch).

**Route settings** (:mod:`.overrides`): for each key, a KV override beats
the labels, which beat a KV default, which beats the built-in default;
``maintenance`` (KV or label) answers 503 for the service's routes.
``rate_limit`` holds for the fleet: this node enforces its share among the
``fleet_size`` live renderers, unless ``rate_limit_scope=node``.

A service's part is a function of its instances, its settings and the
fleet size only, so the builder computes it again only when they changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from renderer.catalog.model import Instance

from . import values
from .gateway import gateway_options
from .model import BURST_PER_RATE, Auth, Location, Pool, RouteRefusal, Server, short_id
from .voting import ROUTE_KEY_SET, ROUTE_KEYS, vote, vote_key

NONE: Mapping = MappingProxyType({})

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
    sources: tuple[tuple[str, str], ...] = ()  # (key, where its value came from) for every key not built in
    acme: bool = False                 # tls_acme: its hosts' certificates come from the fleet's ACME issuer


def service_routes(name: str, instances: tuple[Instance, ...], passing: tuple[Instance, ...],
                   settings: tuple = (NONE, NONE), fleet_size: int = 1) -> ServiceRoutes:
    """The part of the table service ``name`` declares, from its instances (and those of them passing), the
    operator's KV ``settings`` for it (overrides, defaults), and the number of nginx nodes sharing a rate."""
    refused: list[RouteRefusal] = []
    notes: list[str] = []
    created = age(instances)
    overrides, defaults = settings

    def refuse(reason: str | None = None) -> ServiceRoutes:
        if reason:
            refused.append(RouteRefusal(name, reason))
        return ServiceRoutes(None, ("/",), None, False, None, 0, tuple(refused), tuple(notes), created)

    voters = passing or instances
    labelled = {key: parse for key, parse in ROUTE_KEYS.items() if key not in overrides and key != "canary_percent"}
    if all(ROUTE_KEY_SET.isdisjoint(instance.meta) and not instance.withheld for instance in voters):
        keys, sources = {}, {}
    else:
        keys = vote(name, voters, refused, notes, labelled)
        if keys is None:
            return refuse()
        sources = dict.fromkeys(keys, "label")
    if "canary_percent" not in overrides:
        percent, origin = _canary_percent(name, voters, refused, notes)
        if percent is None and origin is None:
            return refuse()
        if percent is not None:
            keys["canary_percent"], sources["canary_percent"] = percent, origin
    for key, setting in defaults.items():
        if key not in keys and key not in overrides:
            keys[key], sources[key] = setting.value, setting.origin("default")
    for key, setting in overrides.items():
        keys[key], sources[key] = setting.value, setting.origin("override")
    tls = keys.get("tls")
    if tls == "passthrough":
        extra = sorted(set(keys) - PASSTHROUGH_KEYS)
        if extra:
            return refuse(f"tls=passthrough forwards TLS untouched (layer 4): {', '.join(extra)} cannot be "
                          "applied; its routes are not served")
    backend = keys.get("backend", "http")
    stable, canary = servers(name, passing, refused)
    percent = keys.get("canary_percent", 0)
    pool = Pool(name, name, tuple(stable)) if stable else None
    # A canary pool whenever canary instances pass, even at 0 %: "X-Canary: always" reaches it (a dark launch).
    canary_pool = Pool(f"_canary_{name}", name, tuple(canary)) if canary else None
    if canary and percent == 0:
        notes.append(f"service {name}: {len(canary)} canary instance(s) get no traffic while canary_percent is 0 "
                     "(but requests with X-Canary: always)")
    if pool is None and canary_pool is not None:  # only canaries pass: they take everyone
        pool, canary_pool = canary_pool, None
    auth = keys.get("auth")
    declared = keys.get("rate_limit")
    burst = keys.get("rate_burst", BURST_PER_RATE * int(declared.split("r/")[0]) if declared else 0)
    nodes = fleet_size if declared and keys.get("rate_limit_scope", "fleet") == "fleet" else 1
    action = "maintenance" if keys.get("maintenance") else "proxy" if pool else "unavailable"
    location = Location(
        path="/", service=name, service_id=short_id(name), action=action, pool=pool,
        canary=canary_pool, canary_percent=percent if canary_pool else 0, backend=backend,
        strip_path=keys.get("strip_path", False),
        auth=Auth(auth[0], auth[1], keys.get("auth_headers", ()), None) if auth else None,
        rate_limit=node_share(declared, nodes) if declared else None,
        rate_burst=-(-burst // nodes), rate_declared=declared if nodes > 1 else None, rate_nodes=nodes,
        allow=keys.get("allow", ()), max_body=keys.get("max_body"), timeout=keys.get("timeout"),
        **gateway_options(name, keys, refused, notes))
    return ServiceRoutes(keys.get("hosts"), keys.get("path", ("/",)), tls,
                         keys.get("https_redirect", tls == "terminate"), location, percent,
                         tuple(refused), tuple(notes), created, tuple(sorted(sources.items())),
                         bool(keys.get("tls_acme")) and tls == "terminate")


def age(instances: tuple[Instance, ...]) -> int:
    """When the service was first registered: the oldest CreateIndex among its instances (0: not known)."""
    return min((instance.created for instance in instances if instance.created), default=0)


def _canary_percent(name: str, voters: tuple[Instance, ...], refused: list[RouteRefusal],
                    notes: list[str]) -> tuple[int | None, str | None]:
    """The canary declares its share: the vote among the canary instances that carry it, else among the
    stable ones (a value on stable instances counts only where no canary instance has one).

    (percent, where it came from); (None, "") when none carries it; (None, None) when none holds a valid one.
    """
    canaries = tuple(i for i in voters if _is_canary(i))
    carriers = [group for group in (canaries, tuple(i for i in voters if not _is_canary(i)))
                if any("canary_percent" in i.meta or "canary_percent" in i.withheld for i in group)]
    if not carriers:
        return None, ""
    group = carriers[0]
    valid, percent = vote_key(name, "canary_percent", values.percent, group, refused, notes)
    if not valid:
        return None, None
    return percent, "label (canary instances)" if group is canaries else "label"


def _is_canary(instance: Instance) -> bool:
    try:
        return values.boolean(instance.meta.get("canary", "false"))
    except ValueError:
        return False


def node_share(rate: str, nodes: int) -> str:
    """This node's share of a fleet-wide ``rate`` (nginx notation): ``10r/s`` on 2 nodes is ``5r/s``, on 3
    ``200r/m``; rounded up to whole requests a minute (nginx counts no finer), so never 0."""
    if nodes <= 1:
        return rate
    count, unit = int(rate.split("r/")[0]), rate.rsplit("/", 1)[1]
    per_minute = -(-(count * 60 if unit == "s" else count) // nodes)
    return f"{per_minute // 60}r/s" if per_minute % 60 == 0 else f"{per_minute}r/m"


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
