"""Building the route table from a catalog: the one entry point, and what it keeps between builds.

Building a table for 5,000 services on every catalog change is cheap
because the builder remembers two things from its last build, and only
for the next one:

* each service's own part (:mod:`.service`), with the instances it was
  computed from: a service whose instances are the same objects as last
  time (the catalog reuses unchanged instances) is not looked at again;
* each host (:mod:`.hosts`), with the parts it was assembled from: a host
  whose services' parts are all unchanged is the same ``Host`` object as
  before, so comparing the new table with the last one is mostly identity
  checks and what templates rendered from it (``each()``) is reused.

A catalog that says what changed since the one of the last build
(``Catalog.base``/``changed``: the next node dump's) takes a shorter way
when nothing else did (options, certificates, KV, the fleet, the set of
services): only the changed services' parts are computed again, and when
none of them claims other hosts, paths or TLS than before (an instance
moved, came, went or failed its checks), only the hosts routing to them, or
authenticating or mirroring through them, are built again; everything else
of the last table is kept as it was. At 5,000 services that is about 1 ms
instead of 50. Anything else takes the whole way.

That memory changes no result, only its cost and the identity of equal
parts (property tests compare it with :func:`build` over random changes);
it belongs to whoever builds tables in a row (the daemon's template data
holds one builder). :func:`build` uses a fresh one.
"""

from __future__ import annotations

import dataclasses

from renderer.catalog import kv_certificates
from renderer.catalog.certificates import CertificateSet
from renderer.catalog.kv import KvSnapshot
from renderer.catalog.model import Catalog, Instance

from . import overrides

from .hosts import assemble, build_host, resolve_others
from .model import RENDERER_SERVICE, RouteOptions, RouteRefusal, RouteTable
from .overrides import RouteSettings
from .service import ServiceRoutes, age, service_routes
from .stream import StreamService, listeners
from .voting import ROUTE_KEYS


class RouteBuilder:
    def __init__(self):
        self._services: dict[str, tuple[tuple[Instance, ...], tuple, ServiceRoutes]] = {}
        self._hosts: dict[str, tuple] = {}
        self._hosts_for: tuple | None = None  # the (options, certificates) the known hosts were built with
        self._settings: RouteSettings | None = None  # the KV settings read last: bad values keep what was before
        self._last: _LastBuild | None = None

    def build(self, catalog: Catalog, options: RouteOptions, certificates: CertificateSet = CertificateSet(),
              kv: KvSnapshot | None = None) -> RouteTable:
        # Fleet-wide rates are shared among the live renderers, each registered by itself in the catalog.
        fleet = max(1, len(catalog.instances_of(RENDERER_SERVICE, passing=True)))
        last = self._last
        if last is not None and (options, certificates, fleet) == (last.options, last.certificates, last.fleet) \
                and kv is last.kv:
            table = self._changed_hosts_only(catalog, last)
            if table is not None:
                return table
        self._last = None
        settings = self._settings = (overrides.read(kv, options.kv_prefix, ROUTE_KEYS, self._settings)
                                     if options.kv_prefix else RouteSettings())
        refused: list[RouteRefusal] = []
        notes: list[str] = []
        specs: dict[str, ServiceRoutes] = {}
        tcp: list[StreamService] = []
        routed = [(name, tags) for name, tags, kind in catalog.services()
                  # Connect proxies and gateways inherit their service's tags; they are not routes.
                  if not kind and ("http" in tags or "tcp" in tags)]
        twins = _case_twins(routed, catalog, refused)
        for name, tags in routed:
            if name in twins:
                continue
            instances = catalog.instances_of(name)
            if "http" in tags:
                spec = specs[name] = self._service(name, instances, catalog.instances_of(name, passing=True),
                                                   settings.of(name), fleet)
                refused += spec.refused
                notes += spec.notes
            if "tcp" in tags:
                tcp.append((name, "udp" if "udp" in tags else "tcp", instances,
                            catalog.instances_of(name, passing=True)))
        for gone in [name for name in self._services if name not in specs]:
            del self._services[gone]
        if self._hosts_for != (options, certificates):  # hosts depend on both: start over when either changed
            self._hosts.clear()
            self._hosts_for = (options, certificates)
        hosts, passthrough, exact, waiting, routing = assemble(specs, options, certificates, catalog, refused, notes,
                                                               self._hosts)
        stream = listeners(tcp, options, refused, notes)
        sources = tuple((name, spec.sources) for name, spec in sorted(specs.items()) if spec.sources)
        in_force = tuple(sorted((path, setting.raw) for path, setting in settings.by_path.items()))
        prefix = options.kv_prefix
        challenges = kv_certificates.challenges(kv, prefix) if prefix else ()
        certificate_sources = kv_certificates.sources(kv, prefix) if prefix else ()
        table = RouteTable(tuple(hosts), tuple(passthrough), tuple(stream), tuple(refused), tuple(notes), exact,
                           sources, settings.refused, in_force, options.trusted_proxies, options.proxy_protocol,
                           waiting, challenges, certificate_sources)
        self._last = _LastBuild.of(catalog, options, certificates, kv, fleet, table, specs, routing, tcp, routed)
        return table

    def _changed_hosts_only(self, catalog: Catalog, last: "_LastBuild") -> RouteTable | None:
        """The table of ``catalog`` built from the last one, when only instances of services changed and no
        service claims other hosts, paths or TLS than before; None: take the whole way."""
        changed = _changed_since(catalog, last.catalog)
        if changed is None or catalog.services() is not last.catalog.services() or changed & last.fixed:
            return None
        specs, affected = dict(last.specs), set()
        for name in changed:
            affected |= last.referring.get(name, set())
            before = specs.get(name)
            if before is None:
                continue  # not routed over HTTP (it may be an auth or mirror service: referring above)
            spec = self._service(name, catalog.instances_of(name), catalog.instances_of(name, passing=True),
                                 self._settings.of(name), last.fleet)
            if spec is before:
                continue
            if _claims(spec) != _claims(before):
                return None
            specs[name] = spec
            affected |= last.hosts_of.get(name, set())
        if not affected:
            table = last.table
        else:
            rebuilt = {}
            for host in affected:
                built, _ = build_host(host, last.routing[host], specs, last.certificates, [], [], [])
                if built is None:
                    return None
                rebuilt[host] = built
            resolved = dict(zip(rebuilt, resolve_others(list(rebuilt.values()), catalog)))
            table = last.table.with_hosts(resolved)
            for host, built in resolved.items():
                if host in self._hosts:
                    self._hosts[host] = (tuple((path, name, specs[name]) for path, _, name in last.routing[host]),
                                         built)
        self._last = dataclasses.replace(last, catalog=catalog, table=table, specs=specs)
        return table

    def _service(self, name: str, instances: tuple[Instance, ...], passing: tuple[Instance, ...],
                 settings: tuple, fleet: int) -> ServiceRoutes:
        known = self._services.get(name)
        inputs = (settings, fleet)
        if known is not None and known[1] == inputs and len(known[0]) == len(instances) and all(
                a is b for a, b in zip(known[0], instances)):
            return known[2]
        spec = service_routes(name, instances, passing, settings, fleet)
        self._services[name] = (instances, inputs, spec)
        return spec


@dataclasses.dataclass(frozen=True)
class _LastBuild:
    """What the last whole build took and made, for the next build's shorter way."""

    catalog: Catalog
    options: RouteOptions
    certificates: CertificateSet
    kv: KvSnapshot | None
    fleet: int
    table: RouteTable
    specs: dict[str, ServiceRoutes]
    routing: dict[str, list]               # host -> its routes (path, header match, service), as tried
    hosts_of: dict[str, set[str]]          # service -> the hosts routing to it
    referring: dict[str, set[str]]         # service -> the hosts authenticating or mirroring through it
    fixed: frozenset[str]                  # services whose change takes the whole way (tcp/udp, case twins)

    @classmethod
    def of(cls, catalog, options, certificates, kv, fleet, table, specs, routing, tcp, routed) -> "_LastBuild":
        hosts_of: dict[str, set[str]] = {}
        for host, routes in routing.items():
            for _, _, name in routes:
                hosts_of.setdefault(name, set()).add(host)
        referring: dict[str, set[str]] = {}
        for host in table.hosts:
            for location in (*host.http, *host.https, *host.h2c):
                for other in (location.auth, location.mirror):
                    if other is not None:
                        referring.setdefault(other.service, set()).add(host.name)
        folded: dict[str, list[str]] = {}
        for name, _ in routed:
            folded.setdefault(name.lower(), []).append(name)
        fixed = {name for name, *_ in tcp} | {name for names in folded.values() if len(names) > 1 for name in names}
        fixed |= {route.service for route in table.passthrough}
        return cls(catalog, options, certificates, kv, fleet, table, specs, routing, hosts_of, referring,
                   frozenset(fixed))


def _claims(spec: ServiceRoutes) -> tuple:
    """What of a service's part decides where it is routed and what is refused or noted: the rest (its pools,
    options) changes only the locations of the hosts routing to it."""
    location = spec.location
    return (spec.hosts, spec.paths, spec.tls, spec.https_redirect, spec.created, spec.acme, spec.refused,
            spec.notes, spec.sources, None if location is None else (location.backend, location.match))


def _changed_since(catalog: Catalog, last: Catalog) -> set[str] | None:
    """The services that may differ between ``last`` and ``catalog``, when ``catalog`` was made from it
    (through a few catalogs at most); None when it was not."""
    names: set[str] = set()
    for _ in range(8):
        if catalog is last:
            return names
        base = catalog.base() if catalog.base is not None else None
        if base is None:
            return None
        names |= catalog.changed
        catalog = base
    return None


def _case_twins(routed: list[tuple[str, tuple[str, ...]]], catalog: Catalog,
                refused: list[RouteRefusal]) -> set[str]:
    """Services whose names differ from another's only in case: nginx compares upstream names without
    case, so one of them only is routed, the one registered first (then the first by name)."""
    by_folded: dict[str, list[str]] = {}
    for name, _ in routed:
        by_folded.setdefault(name.lower(), []).append(name)
    twins = set()
    for names in by_folded.values():
        if len(names) < 2:
            continue
        keep = min(names, key=lambda name: (age(catalog.instances_of(name)) or float("inf"), name))
        for name in names:
            if name != keep:
                twins.add(name)
                refused.append(RouteRefusal(name, f"its name differs from service {keep}'s only in case, and nginx "
                                                  f"compares names without case ({keep} was registered first): "
                                                  "not routed"))
    return twins


def build(catalog: Catalog, options: RouteOptions, certificates: CertificateSet = CertificateSet(),
          kv: KvSnapshot | None = None) -> RouteTable:
    """The route table of ``catalog`` (and the KV route settings), built from nothing (no memory of earlier
    builds)."""
    return RouteBuilder().build(catalog, options, certificates, kv)
