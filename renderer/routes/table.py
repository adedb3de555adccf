"""Routes declared by service meta, as one table (pure): the catalog in, what nginx should route out.

The registrar turns ``SERVICE_<KEY>`` labels into meta ``<key>``, so
``docker run -l SERVICE_TAGS=http -l SERVICE_HOSTS=api.example.org -l SERVICE_PATH=/v1/ ...``
is the whole interface. A service tagged ``http`` gets routes, one tagged
``tcp`` a stream listener (``udp`` too: a UDP one). The keys, with
``renderer.route_values`` saying what each may hold:

* route keys, which belong to the service: ``hosts``, ``path``,
  ``strip_path``, ``tls``, ``backend``, ``https_redirect``,
  ``canary_percent``, ``auth``, ``auth_headers``, ``rate_limit``,
  ``rate_burst``, ``allow``, ``max_body``, ``timeout``;
* instance keys: ``weight`` (1-100, default 1) and ``canary`` (true/false).

Decisions, each deterministic so every nginx node renders the same table:

* **Instances that disagree** on a route key (a rolling deploy): the value
  carried by most passing instances wins (an unset key is a value too; on a
  tie, a set value beats unset, then the smaller value); the route keeps
  routing and a note says so. A value that does not parse is left out of
  the vote with a refusal naming service, instance, key and value; a key
  that has no valid value left (every instance holds a bad one) refuses the
  service's routes. A bad ``weight`` or ``canary`` refuses that instance.
  A value the catalog withheld as unsafe for nginx counts as a bad one:
  dropping it silently could open a route it restricted (``allow``).
* **Hosts**: ``hosts``, else ``NAME.DOMAIN``. ``NAME.DOMAIN`` belongs to the
  service NAME while it exists: another service claiming it is refused.
* **Conflicts**: one (host, path) is routed to one service. The owner of the
  host's default name wins; otherwise the service whose name sorts first.
  The other is refused, named. The same rule settles a host one service
  passes through (SNI) while another terminates it.
* **Paths** are plain prefixes matched on segment boundaries: ``/v1``
  answers ``/v1`` and ``/v1/...``, never ``/v12``; the longest wins.
* **TLS**: ``terminate`` needs the host's certificate (``certificates``);
  without it the host's terminated routes are refused, naming the files
  looked for. ``passthrough`` is L4: keys it cannot honour (anything but
  ``hosts``, ``tls``, ``weight``) refuse the route rather than be silently
  ignored (an allow-list nobody enforces). gRPC needs HTTP/2, which nginx
  1.22 speaks only on its TLS listener: ``backend=grpc`` needs
  ``tls=terminate``.
* **Canary**: instances with ``canary=true`` form their own pool; the
  service's ``canary_percent`` of clients go to it (sticky per client).
  With no canary instance passing, every client gets the stable pool; with
  no stable instance passing, the canary pool takes everyone; while
  ``canary_percent`` is 0 (the default) canary instances get no traffic.
* **Auth**: ``auth=service:NAME[/path]``; with no passing instance of NAME
  the route answers 503: never open.

Building a table for 5,000 services is cheap on a catalog change because a
service whose instances are the same objects as last time (the catalog
reuses unchanged instances) is not looked at again (``_SERVICE_CACHE``), and
a host whose services' parts are all unchanged is the same ``Host`` object
as before (``_HOST_CACHE``): comparing the new table with the last one is
then mostly identity checks.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import ipaddress
from collections.abc import Mapping

from renderer.catalog.certificates import Certificate, CertificateSet
from renderer.catalog.model import Catalog, Instance
from . import values as values
from .stream import ListenPolicy

ROUTE_KEYS = {
    "hosts": values.hosts, "path": values.paths, "strip_path": values.boolean, "tls": values.tls,
    "backend": values.backend, "https_redirect": values.boolean, "canary_percent": values.percent,
    "auth": values.auth, "auth_headers": values.header_names, "rate_limit": values.rate,
    "rate_burst": values.burst, "allow": values.networks, "max_body": values.size, "timeout": values.duration,
}
ROUTE_KEY_SET = frozenset(ROUTE_KEYS)
PASSTHROUGH_KEYS = frozenset({"hosts", "tls"})
DEFAULT_RATE_BURST = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Server:
    address: str  # ADDRESS:PORT as nginx takes it (IPv6 in brackets)
    weight: int
    instance: str
    node: str


@dataclasses.dataclass(frozen=True, slots=True)
class Pool:
    name: str
    service: str
    servers: tuple[Server, ...]

    @property
    def ip_only(self) -> bool:
        """Every server is an IP address: the pool can take its peers from nginx's Lua balancer."""
        return all(ip_port(server.address) is not None for server in self.servers)


@dataclasses.dataclass(frozen=True, slots=True)
class Auth:
    service: str
    path: str
    headers: tuple[str, ...]
    pool: Pool | None  # None: no passing instance: the route answers 503


@dataclasses.dataclass(frozen=True, slots=True)
class Location:
    path: str                    # "/" or a prefix without its trailing slash
    service: str
    action: str                  # "proxy", "redirect" (to HTTPS) or "unavailable" (503)
    pool: Pool | None
    canary: Pool | None = None
    canary_percent: int = 0
    backend: str = "http"
    strip_path: bool = False
    auth: Auth | None = None
    rate_limit: str | None = None
    rate_burst: int = DEFAULT_RATE_BURST
    allow: tuple[str, ...] = ()
    max_body: str | None = None
    timeout: str | None = None
    id: str = ""                 # stable, short: names what belongs to this location (its auth subrequest)
    service_id: str = ""         # stable, short: names what belongs to the service (its rate zone, canary split)

    @property
    def plain(self) -> bool:
        """Proxies over HTTP with no option: what most locations are, rendered in three lines."""
        return (self.action == "proxy" and self.backend == "http" and self.canary is None and self.auth is None
                and not self.strip_path and not self.rate_limit and not self.allow and not self.max_body
                and not self.timeout)

    @property
    def options(self) -> tuple[str, ...]:
        """What this location does beyond proxying, for ``renderer routes``."""
        shown = []
        if self.backend != "http":
            shown.append(f"backend={self.backend}")
        if self.strip_path:
            shown.append("strip_path")
        if self.canary is not None:
            shown.append(f"canary {self.canary_percent}% -> {self.canary.name}")
        if self.auth is not None:
            shown.append(f"auth=service:{self.auth.service}{self.auth.path}")
        if self.rate_limit:
            shown.append(f"rate_limit={self.rate_limit} burst={self.rate_burst}")
        if self.allow:
            shown.append(f"allow={','.join(self.allow)}")
        if self.max_body:
            shown.append(f"max_body={self.max_body}")
        if self.timeout:
            shown.append(f"timeout={self.timeout}")
        return tuple(shown)


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    name: str
    http: tuple[Location, ...]    # on the plain HTTP listener
    https: tuple[Location, ...]   # on the HTTPS listener (TLS ends at nginx); empty: no HTTPS server
    certificate: Certificate | None

    # What the templates ask of each listener's locations, computed once: (http, https).
    proxies: tuple[bool, bool] = (False, False)   # any location proxies (rather than redirects)
    grpc: tuple[bool, bool] = (False, False)      # any location speaks gRPC

    @classmethod
    def of(cls, name: str, http: tuple[Location, ...], https: tuple[Location, ...],
           certificate: Certificate | None) -> "Host":
        def proxying(locations):
            return any(location.action != "redirect" for location in locations)

        def grpc(locations):
            return any(location.backend in ("grpc", "grpcs") for location in locations)

        return cls(name, http, https, certificate, (proxying(http), proxying(https)), (grpc(http), grpc(https)))


@dataclasses.dataclass(frozen=True, slots=True)
class Passthrough:
    host: str
    service: str
    pool: Pool | None


@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    port: int
    protocol: str  # "tcp" or "udp"
    service: str
    pool: Pool | None


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """A route, instance or value left out, and why."""

    service: str
    reason: str
    instance: str = ""
    key: str = ""
    value: str = ""

    def __str__(self) -> str:
        who = f"service {self.service}" + (f" instance {self.instance}" if self.instance else "")
        what = f" {self.key}={self.value!r}" if self.key else ""
        return f"{who}{what}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class RouteOptions:
    domain: str = ""
    http_port: int = 80
    https_port: int = 443
    listen: ListenPolicy = ListenPolicy.from_variables({})

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> "RouteOptions":
        policy = ListenPolicy.from_variables(variables)
        return cls(str(variables.get("domain", "")).strip().lower(), int(variables.get("http_port", 80)),
                   int(variables.get("https_port", 443)), policy)


@dataclasses.dataclass(frozen=True)
class RouteTable:
    hosts: tuple[Host, ...] = ()
    passthrough: tuple[Passthrough, ...] = ()
    listeners: tuple[Listener, ...] = ()
    refused: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()

    @functools.cached_property
    def pools(self) -> tuple[Pool, ...]:
        """Every pool an HTTP location proxies to (stable, canary, auth), each once, by name."""
        found: dict[str, Pool] = {}
        for host in self.hosts:
            for location in (*host.http, *host.https):
                for pool in (location.pool, location.canary, location.auth.pool if location.auth else None):
                    if pool is not None and location.action != "redirect":
                        found.setdefault(pool.name, pool)
        return tuple(found[name] for name in sorted(found))

    @functools.cached_property
    def locations(self) -> tuple[Location, ...]:
        """Every distinct location (a route served on both listeners counts once)."""
        found: dict[str, Location] = {}
        for host in self.hosts:
            for location in (*host.https, *host.http):
                if location.action != "redirect":
                    found.setdefault(location.id, location)
        return tuple(found[key] for key in sorted(found))

    def routes(self):
        """(scheme, host, location) for every HTTP route, in the table's order: what people are shown."""
        for host in self.hosts:
            for scheme, locations in (("http", host.http), ("https", host.https)):
                for location in locations:
                    yield scheme, host, location

    @property
    def has_https(self) -> bool:
        return any(host.https for host in self.hosts)

    @functools.cached_property
    def services(self) -> tuple[Location, ...]:
        """One location per routed service (its service-wide settings: rate zone, canary split)."""
        found: dict[str, Location] = {}
        for location in self.locations:
            found.setdefault(location.service_id, location)
        return tuple(found[key] for key in sorted(found))

    @functools.cached_property
    def canaries(self) -> tuple[Location, ...]:
        """Of ``services``, those that split clients to canary instances."""
        return tuple(location for location in self.services if location.canary)

    @functools.cached_property
    def rate_limited(self) -> tuple[Location, ...]:
        """Of ``services``, those limited per client address."""
        return tuple(location for location in self.services if location.rate_limit)


# One service's own part of the table: a function of its instances only, so it is cached.
@dataclasses.dataclass(frozen=True)
class _ServiceRoutes:
    hosts: tuple[str, ...] | None      # None: the default NAME.DOMAIN
    paths: tuple[str, ...]
    tls: str | None
    https_redirect: bool
    location: Location | None          # the template for every (host, path), pool included; None: refused
    canary_percent: int
    refused: tuple[Refusal, ...]
    notes: tuple[str, ...]


# Service name -> (the instances it was computed from, its _ServiceRoutes); pruned on every build.
_SERVICE_CACHE: dict[str, tuple[tuple[Instance, ...], object]] = {}
# Host name -> (its (path, service, _ServiceRoutes) parts, the Host built), for these options and certificates.
_HOST_CACHE: dict[str, tuple] = {}
_HOST_CACHE_FOR: tuple | None = None


def build(catalog: Catalog, options: RouteOptions, certificates: CertificateSet = CertificateSet()) -> RouteTable:
    refused: list[Refusal] = []
    notes: list[str] = []
    specs: dict[str, _ServiceRoutes] = {}
    tcp: list[tuple[str, str, tuple[Instance, ...], tuple[Instance, ...]]] = []
    used_keys = set()
    for name, tags, kind in catalog.services():
        if kind:  # Connect proxies and gateways inherit their service's tags; they are not routes
            continue
        instances = catalog.instances_of(name)
        if "http" in tags:
            spec = _cached(name, instances,
                           lambda: _http_service(name, instances, catalog.instances_of(name, passing=True)))
            used_keys.add(name)
            specs[name] = spec
            refused += spec.refused
            notes += spec.notes
        if "tcp" in tags:
            tcp.append((name, "udp" if "udp" in tags else "tcp", instances, catalog.instances_of(name, passing=True)))
    for key in [k for k in _SERVICE_CACHE if k not in used_keys]:
        del _SERVICE_CACHE[key]
    hosts, passthrough = _assemble_http(specs, options, certificates, refused, notes, catalog)
    listeners = _listeners(tcp, options, refused)
    return RouteTable(tuple(hosts), tuple(passthrough), tuple(listeners), tuple(refused), tuple(notes))


def _cached(key: str, instances: tuple[Instance, ...], compute):
    known = _SERVICE_CACHE.get(key)
    if known is not None and len(known[0]) == len(instances) and all(a is b for a, b in zip(known[0], instances)):
        return known[1]
    result = compute()
    _SERVICE_CACHE[key] = (instances, result)
    return result


def _vote(name: str, voters: tuple[Instance, ...], refused: list[Refusal], notes: list[str]):
    """The route keys' values (parsed), by the rule in the module docstring; None when a key has none valid."""
    chosen: dict[str, object] = {}
    for key, parse in ROUTE_KEYS.items():
        counts: collections.Counter = collections.Counter()
        parsed: dict[str, object] = {}
        for instance in voters:
            raw = instance.meta.get(key)
            if raw is None:
                if key in instance.withheld:  # set, but unsafe for nginx: a vote for nothing valid
                    refused.append(Refusal(name, "its value is unsafe for nginx and was withheld", instance.id,
                                           key, "(withheld)"))
                    continue
                counts[None] += 1
                continue
            try:
                parsed[raw] = parse(raw)
            except ValueError as error:
                refused.append(Refusal(name, str(error), instance.id, key, raw))
                continue
            counts[raw] += 1
        if not counts:
            refused.append(Refusal(name, f"no instance has a valid {key}: its routes are not served"))
            return None
        winner = min(counts.items(), key=lambda item: (-item[1], item[0] is None, item[0] or ""))[0]
        if len(counts) > 1:
            seen = ", ".join(f"{'unset' if v is None else repr(v)} on {n}" for v, n in sorted(
                counts.items(), key=lambda item: (item[0] is None, item[0] or "")))
            notes.append(f"service {name}: instances disagree on {key} ({seen}); routing with "
                         f"{'it unset' if winner is None else repr(winner)}")
        if winner is not None:
            chosen[key] = parsed[winner]
    return chosen


def _http_service(name: str, instances: tuple[Instance, ...], passing: tuple[Instance, ...]) -> _ServiceRoutes:
    refused: list[Refusal] = []
    notes: list[str] = []
    voters = passing or instances
    if all(ROUTE_KEY_SET.isdisjoint(instance.meta) and not instance.withheld for instance in voters):
        keys = {}
    else:
        keys = _vote(name, voters, refused, notes)
        if keys is None:
            return _ServiceRoutes(None, ("/",), None, False, None, 0, tuple(refused), tuple(notes))
    tls = keys.get("tls")
    if tls == "passthrough":
        extra = sorted(set(keys) - PASSTHROUGH_KEYS)
        if extra:
            refused.append(Refusal(name, f"tls=passthrough forwards TLS untouched (layer 4): {', '.join(extra)} "
                                         "cannot be applied; its routes are not served"))
            return _ServiceRoutes(None, ("/",), None, False, None, 0, tuple(refused), tuple(notes))
    backend = keys.get("backend", "http")
    if backend in ("grpc", "grpcs") and tls != "terminate":
        refused.append(Refusal(name, f"backend={backend} needs tls=terminate (nginx 1.22 speaks HTTP/2 only on "
                                     "its TLS listener); its routes are not served"))
        return _ServiceRoutes(None, ("/",), None, False, None, 0, tuple(refused), tuple(notes))
    stable, canary = _servers(name, passing, refused)
    percent = keys.get("canary_percent", 0)
    pool = Pool(name, name, tuple(stable)) if stable else None
    canary_pool = Pool(f"_canary_{name}", name, tuple(canary)) if canary and percent > 0 else None
    if canary and percent == 0:
        notes.append(f"service {name}: {len(canary)} canary instance(s) get no traffic while canary_percent is 0")
    if pool is None and canary_pool is not None:  # only canaries pass: they take everyone
        pool, canary_pool = canary_pool, None
    auth = keys.get("auth")
    location = Location(
        path="/", service=name, service_id=_short_id(name), action="proxy" if pool else "unavailable", pool=pool, canary=canary_pool,
        canary_percent=percent if canary_pool else 0, backend=backend, strip_path=keys.get("strip_path", False),
        auth=Auth(auth[0], auth[1], keys.get("auth_headers", ()), None) if auth else None,
        rate_limit=keys.get("rate_limit"), rate_burst=keys.get("rate_burst", DEFAULT_RATE_BURST),
        allow=keys.get("allow", ()), max_body=keys.get("max_body"), timeout=keys.get("timeout"))
    return _ServiceRoutes(keys.get("hosts"), keys.get("path", ("/",)), tls,
                          keys.get("https_redirect", tls == "terminate"), location, percent,
                          tuple(refused), tuple(notes))


INSTANCE_KEYS = {"weight": (values.weight, 1), "canary": (values.boolean, False)}


def _servers(name: str, passing: tuple[Instance, ...], refused: list[Refusal]) -> tuple[list[Server], list[Server]]:
    stable, canary = [], []
    for instance in passing:
        chosen = {}
        for key, (parse, default) in INSTANCE_KEYS.items():
            if key in instance.withheld:
                refused.append(Refusal(name, "its value is unsafe for nginx and was withheld; this instance is "
                                             "not routed", instance.id, key, "(withheld)"))
                break
            try:
                chosen[key] = parse(instance.meta[key]) if key in instance.meta else default
            except ValueError as error:
                refused.append(Refusal(name, f"{error}; this instance is not routed", instance.id, key,
                                       instance.meta[key]))
                break
        else:
            server = Server(instance.host_port, chosen["weight"], instance.id, instance.node)
            (canary if chosen["canary"] else stable).append(server)
    return stable, canary


@functools.lru_cache(maxsize=65536)
def ip_port(address: str) -> tuple[str, int] | None:
    """``10.0.0.1:80`` or ``[fe80::1]:80`` -> (ip, port); None for a host name.

    Cached: ``ipaddress`` parsing costs microseconds, every pass asks for every
    server, and the addresses of a fleet change slowly.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, int(port)


def _short_id(text: str) -> str:
    """Ten hex digits: a valid nginx variable and zone name for anything, the same on every node."""
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _location_id(host: str, path: str) -> str:
    return _short_id(f"{host} {path}")


def _assemble_http(specs: dict[str, _ServiceRoutes], options: RouteOptions, certificates: CertificateSet,
                   refused: list[Refusal], notes: list[str], catalog: Catalog):
    """Claims of every service -> hosts and passthroughs, conflicts settled by the documented rule."""
    global _HOST_CACHE_FOR
    if _HOST_CACHE_FOR != (options, certificates):  # hosts depend on both: start over when either changed
        _HOST_CACHE.clear()
        _HOST_CACHE_FOR = (options, certificates)
    reserved = {f"{name}.{options.domain}": name for name, spec in specs.items()
                if spec.hosts is None and options.domain}
    # (host, path) -> claimants; host -> SNI claimants (terminate and passthrough)
    claims: dict[tuple[str, str], list[str]] = {}
    sni: dict[str, list[str]] = {}
    for name in sorted(specs):
        spec = specs[name]
        if spec.location is None:
            continue
        hosts = spec.hosts
        if hosts is None:
            if not options.domain:
                refused.append(Refusal(name, "has no hosts meta and no domain is set (--var domain=...): "
                                             "not routed"))
                continue
            hosts = (f"{name}.{options.domain}",)
        for host in hosts:
            owner = reserved.get(host)
            if owner is not None and owner != name:
                refused.append(Refusal(name, f"host {host} is service {owner}'s default name; not routed there",
                                       key="hosts", value=",".join(hosts)))
                continue
            if spec.tls in ("terminate", "passthrough"):
                sni.setdefault(host, []).append(name)
            if spec.tls != "passthrough":
                for path in spec.paths:
                    claims.setdefault((host, path), []).append(name)

    def winner(host: str, names: list[str]) -> str:
        owner = reserved.get(host)
        return owner if owner in names else min(names)

    # One TLS handshake per host name: a passthrough takes the name whole; terminations share it.
    sni_winner = {host: winner(host, names) for host, names in sni.items()}
    for host, names in sni.items():
        first = sni_winner[host]
        for name in names:
            if name != first and "passthrough" in (specs[name].tls, specs[first].tls):
                refused.append(Refusal(name, f"host {host}: service {first} holds its TLS (tls={specs[first].tls}; "
                                             "the host's owner, or the first by name); not routed", key="tls",
                                       value=specs[name].tls))

    by_host: dict[str, list[tuple[str, str]]] = {}
    for (host, path), names in sorted(claims.items()):
        chosen = winner(host, names)
        spec = specs[chosen]
        if spec.tls == "terminate" and specs[sni_winner[host]].tls == "passthrough":
            continue  # the host's TLS is passed through: refused above
        for name in names:
            if name != chosen:
                refused.append(Refusal(name, f"host {host} path {path} is routed to service {chosen} (the host's "
                                             "owner, or the first by name); not routed there", key="path",
                                       value=path))
        by_host.setdefault(host, []).append((path, chosen))

    hosts = []
    for host in sorted(by_host):
        routes = by_host[host]
        parts = tuple((path, name, specs[name]) for path, name in routes)
        known = _HOST_CACHE.get(host)
        if known is not None and len(known[0]) == len(parts) and all(
                a[0] == b[0] and a[1] == b[1] and a[2] is b[2] for a, b in zip(known[0], parts)):
            hosts.append(known[1])  # its services' parts are the same objects: the same host
            continue
        certificate = None
        if any(specs[name].tls == "terminate" for _, name in routes):
            found = certificates.find(host)
            if isinstance(found, Certificate):
                certificate = found
            else:
                for path, name in [r for r in routes if specs[r[1]].tls == "terminate"]:
                    refused.append(Refusal(name, f"host {host} path {path}: no certificate ({found}); not routed",
                                           key="tls", value="terminate"))
                routes = [r for r in routes if specs[r[1]].tls != "terminate"]
                if not routes:
                    continue
        http, https = [], []
        for path, name in sorted(routes):
            spec = specs[name]
            location = dataclasses.replace(spec.location, path=path, id=_location_id(host, path))
            if spec.tls == "terminate":
                https.append(location)
                http.append(dataclasses.replace(location, action="redirect") if spec.https_redirect else location)
            else:
                http.append(location)
        built = Host.of(host, tuple(http), tuple(https), certificate)
        hosts.append(built)
        if not any(location.auth for location in (*http, *https)):  # auth pools are other services': not cached
            _HOST_CACHE[host] = (parts, built)
    for name in set(_HOST_CACHE) - set(by_host):
        del _HOST_CACHE[name]
    hosts = _resolve_auth(hosts, catalog, refused)

    passthrough = []
    for host in sorted(sni):
        name = sni_winner[host]
        if specs[name].tls == "passthrough":
            pool = specs[name].location.pool
            passthrough.append(Passthrough(host, name, dataclasses.replace(pool, name=f"_sni_{name}") if pool
                                           else None))
    return hosts, passthrough


def _resolve_auth(hosts: list[Host], catalog: Catalog, refused: list[Refusal]) -> list[Host]:
    """Give each auth=service:NAME its pool (NAME's passing instances), resolved across services."""
    pools: dict[str, Pool | None] = {}

    def pool_of(name: str) -> Pool | None:
        if name not in pools:
            servers = tuple(Server(i.host_port, 1, i.id, i.node) for i in catalog.instances_of(name, passing=True))
            pools[name] = Pool(f"_auth_{name}", name, servers) if servers else None
        return pools[name]

    def resolved(location: Location) -> Location:
        if location.auth is None:
            return location
        return dataclasses.replace(location, auth=dataclasses.replace(location.auth,
                                                                      pool=pool_of(location.auth.service)))

    if not any(location.auth for host in hosts for location in (*host.http, *host.https)):
        return hosts
    return [Host.of(host.name, tuple(map(resolved, host.http)), tuple(map(resolved, host.https)), host.certificate)
            for host in hosts]


def _listeners(tcp, options: RouteOptions, refused: list[Refusal]) -> list[Listener]:
    """tcp (and udp) services -> listeners on their port: meta listen_port, else the name's numeric suffix."""
    listeners: dict[tuple[int, str], Listener] = {}
    for name, protocol, instances, passing in sorted(tcp):
        declared = next((i.meta["listen_port"] for i in instances if "listen_port" in i.meta), "")
        suffix = name.rsplit("-", 1)[-1] if "-" in name else ""
        port = declared or suffix
        if not port.isdigit():
            refused.append(Refusal(name, "tcp service without a listen_port meta or a numeric name suffix: "
                                         "no listener"))
            continue
        problem = options.listen.problem(port)
        if problem:
            refused.append(Refusal(name, f"{problem}: no listener", key="listen_port", value=port))
            continue
        key = (int(port), protocol)
        if key in listeners:
            refused.append(Refusal(name, f"port {port}/{protocol} is already service {listeners[key].service}'s: "
                                         "no listener", key="listen_port", value=port))
            continue
        servers = tuple(Server(i.host_port, 5, i.id, i.node) for i in passing)
        listeners[key] = Listener(int(port), protocol, name, Pool(name, name, servers) if servers else None)
    return [listeners[key] for key in sorted(listeners)]
