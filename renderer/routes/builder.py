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

That memory changes no result, only its cost and the identity of equal
parts; it belongs to whoever builds tables in a row (the daemon's template
data holds one builder). :func:`build` uses a fresh one.
"""

from __future__ import annotations

from renderer.catalog import kv_certificates
from renderer.catalog.certificates import CertificateSet
from renderer.catalog.kv import KvSnapshot
from renderer.catalog.model import Catalog, Instance

from . import overrides

from .hosts import assemble
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

    def build(self, catalog: Catalog, options: RouteOptions, certificates: CertificateSet = CertificateSet(),
              kv: KvSnapshot | None = None) -> RouteTable:
        settings = self._settings = (overrides.read(kv, options.kv_prefix, ROUTE_KEYS, self._settings)
                                     if options.kv_prefix else RouteSettings())
        # Fleet-wide rates are shared among the live renderers, each registered by itself in the catalog.
        fleet = max(1, len(catalog.instances_of(RENDERER_SERVICE, passing=True)))
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
        hosts, passthrough, exact, waiting = assemble(specs, options, certificates, catalog, refused, notes,
                                                      self._hosts)
        stream = listeners(tcp, options, refused, notes)
        sources = tuple((name, spec.sources) for name, spec in sorted(specs.items()) if spec.sources)
        in_force = tuple(sorted((path, setting.raw) for path, setting in settings.by_path.items()))
        prefix = options.kv_prefix
        challenges = kv_certificates.challenges(kv, prefix) if prefix else ()
        certificate_sources = kv_certificates.sources(kv, prefix) if prefix else ()
        return RouteTable(tuple(hosts), tuple(passthrough), tuple(stream), tuple(refused), tuple(notes), exact,
                          sources, settings.refused, in_force, options.trusted_proxies, options.proxy_protocol,
                          waiting, challenges, certificate_sources)

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
