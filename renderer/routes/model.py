"""The route table's values (pure data): servers, pools, locations, hosts, listeners, and why a part was refused.

Every value is frozen. The builder (:mod:`.builder`) hands out the same
object for a part that did not change, so comparing a new table with the
last one is mostly identity checks, and what templates rendered from an
object (``each()``) stays valid while the table holds it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
from collections.abc import Mapping

from renderer.catalog.certificates import Certificate
from renderer.errors import ConfigError

from . import values, views
from .listen_ports import ListenPolicy

# A rate limit's burst when the service sets none: five times the rate's count (10r/s lets 50 through at
# once, then 10 a second). ingress-nginx's default multiplier: a browser opening a page sends a handful of
# requests at once, and nginx's own default (no burst) answers the second of two requests 50 ms apart with 429.
BURST_PER_RATE = 5
# How many other instances a request may be tried on when the service sets no ``retries``: nginx's own
# default is every instance of the pool, so a request timing out is tried on all fifty of them in turn.
DEFAULT_RETRIES = 2
DEFAULT_RETRY_ON = ("error", "timeout")  # nginx's own default: no connection, no answer in time
# What a preflight allows when the service names no methods or headers (ingress-nginx's defaults), and how
# long a browser keeps the answer (Chromium keeps none longer than 2 hours).
CORS_METHODS = ("DELETE", "GET", "OPTIONS", "PATCH", "POST", "PUT")
CORS_HEADERS = ("Authorization", "Cache-Control", "Content-Type", "DNT", "If-Modified-Since", "Keep-Alive",
                "Range", "User-Agent", "X-Requested-With")
CORS_MAX_AGE = 7200
# What each renderer registers itself as (renderer.observe.registration): the live ones share fleet-wide rates.
RENDERER_SERVICE = "consul-nginx-sync-renderer"


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
    # Every server is an IP address: the pool can take its peers from nginx's Lua balancer. Worked out once,
    # when the pool is made (a pool is reused while its service's instances are): the template, the zone's
    # size and the peer table ask it of every pool on every render.
    ip_only: bool = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "ip_only", all(ip_port(server.address) is not None for server in self.servers))


@dataclasses.dataclass(frozen=True, slots=True)
class Auth:
    service: str
    path: str
    headers: tuple[str, ...]
    pool: Pool | None  # None: no passing instance: the route answers 503


@dataclasses.dataclass(frozen=True, slots=True)
class Mirror:
    """A copy of each request (``percent`` of them) sent to another service, its answers thrown away."""

    service: str
    percent: int
    pool: Pool | None  # None: no passing instance: nothing is mirrored


@dataclasses.dataclass(frozen=True, slots=True)
class Cors:
    """Cross-origin requests answered at the edge: preflights by nginx, the headers on real answers only for an
    allowed origin."""

    origins: tuple[str, ...]          # ("*",): any origin
    methods: tuple[str, ...] = CORS_METHODS
    headers: tuple[str, ...] = CORS_HEADERS
    credentials: bool = False
    max_age: int = CORS_MAX_AGE


@dataclasses.dataclass(frozen=True, slots=True)
class Location:
    path: str                    # "/" or a prefix without its trailing slash
    service: str
    action: str                  # "proxy", "redirect" (to HTTPS), "unavailable" (503), "maintenance" (503, Retry-After)
    pool: Pool | None
    canary: Pool | None = None
    canary_percent: int = 0
    backend: str = "http"
    strip_path: bool = False
    auth: Auth | None = None
    rate_limit: str | None = None      # what this nginx node enforces (its share of a fleet-wide rate)
    rate_burst: int = 0
    rate_declared: str | None = None   # the fleet-wide rate declared, when shared among rate_nodes nodes
    rate_nodes: int = 1
    allow: tuple[str, ...] = ()
    max_body: str | None = None
    timeout: str | None = None
    connect_timeout: str | None = None
    retries: int = DEFAULT_RETRIES
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    cors: Cors | None = None
    methods: tuple[str, ...] = ()                              # () any
    request_headers: tuple[tuple[str, str], ...] = ()          # (name, value); "" removes it
    response_headers: tuple[tuple[str, str], ...] = ()
    mirror: Mirror | None = None
    match: tuple[str, str] | None = None  # (header, value): only requests carrying it; None: the path's default
    id: str = ""                 # stable, short: names what belongs to this location (its auth subrequest)
    service_id: str = ""         # stable, short: names what belongs to the service (its rate zone, canary split)

    @property
    def plain(self) -> bool:
        """Proxies over HTTP with no option: what most locations are, rendered in three lines."""
        return (self.action == "proxy" and self.backend == "http" and self.canary is None and self.auth is None
                and not self.strip_path and not self.rate_limit and not self.allow and not self.max_body
                and not self.timeout and self.cors is None and not self.methods and not self.request_headers
                and not self.response_headers and not self.retry_policy and not self.connect_timeout
                and self.mirror is None and self.match is None)

    @property
    def retry_policy(self) -> bool:
        """Its retries differ from the server-wide default: the location says its own."""
        return self.retries != DEFAULT_RETRIES or self.retry_on != DEFAULT_RETRY_ON

    @property
    def gateway(self) -> tuple[str, ...]:
        """The gateway keys it sets (CORS, methods, headers, retries, connect timeout), as shown to people."""
        shown = []
        if self.match is not None:
            shown.append(f"only {self.match[0]}: {self.match[1]}")
        if self.cors is not None:
            cors = self.cors
            shown.append(f"cors={','.join(cors.origins)}" + (" with credentials" if cors.credentials else ""))
        if self.methods:
            shown.append(f"methods={','.join(self.methods)}")
        for key, pairs in (("request_headers", self.request_headers), ("response_headers", self.response_headers)):
            if pairs:
                shown.append(f"{key}=" + ",".join(f"{name}:{value}" for name, value in pairs))
        if self.retry_policy:
            shown.append(f"retries={self.retries}" + (f" on {','.join(self.retry_on)}" if self.retries else ""))
        if self.connect_timeout:
            shown.append(f"connect_timeout={self.connect_timeout}")
        if self.mirror is not None:
            shown.append(f"mirror={self.mirror.percent}% to service:{self.mirror.service}" + (
                "" if self.mirror.pool else " (no passing instance: nothing mirrored)"))
        return tuple(shown)

    @property
    def peer_split(self) -> bool:
        """With dynamic peers, its canary split is made by the Lua balancer (both pools are in the peer table,
        renderer.peers.table): the template proxies to ``_split_<service_id>`` and a share change is no reload."""
        return self.canary is not None and self.pool is not None and self.pool.ip_only and self.canary.ip_only

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
        if self.rate_limit and self.rate_declared:
            shown.append(f"rate_limit={self.rate_declared} for the fleet: {self.rate_limit} burst={self.rate_burst} "
                         f"on each of {self.rate_nodes} nginx nodes")
        elif self.rate_limit:
            shown.append(f"rate_limit={self.rate_limit} burst={self.rate_burst}")
        if self.allow:
            shown.append(f"allow={','.join(self.allow)}")
        if self.max_body:
            shown.append(f"max_body={self.max_body}")
        if self.timeout:
            shown.append(f"timeout={self.timeout}")
        return (*shown, *self.gateway)


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    name: str
    http: tuple[Location, ...]    # on the plain HTTP listener
    https: tuple[Location, ...]   # on the HTTPS listener (TLS ends at nginx); empty: no HTTPS server
    certificate: Certificate | None

    # What the templates ask of each listener's locations, computed once: (http, https).
    proxies: tuple[bool, bool] = (False, False)   # any location proxies (rather than redirects)
    grpc: tuple[bool, bool] = (False, False)      # any location speaks gRPC
    h2c: tuple[Location, ...] = ()  # plaintext gRPC, on the HTTP/2-only listener (h2c_port); empty: none

    @classmethod
    def of(cls, name: str, http: tuple[Location, ...], https: tuple[Location, ...],
           certificate: Certificate | None, h2c: tuple[Location, ...] = ()) -> "Host":
        def proxying(locations):
            return any(location.action != "redirect" for location in locations)

        def grpc(locations):
            return any(location.backend in ("grpc", "grpcs") for location in locations)

        return cls(name, http, https, certificate, (proxying(http), proxying(https)), (grpc(http), grpc(https)),
                   h2c)


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
class RouteRefusal:
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
    names_bucket: int = 64  # nginx's server_names_hash_bucket_size, as its http {} block sets it
    kv_prefix: str | None = None  # where the operator's route settings are in KV (routes.overrides); None: none
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For names the client (--var trusted_proxies)
    proxy_protocol: bool = False  # they name it with the PROXY protocol instead, on every public listener

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> "RouteOptions":
        policy = ListenPolicy.from_variables(variables)
        bucket = str(variables.get("server_names_hash_bucket_size", 64)).strip()
        if not bucket.isascii() or not bucket.isdigit() or not 32 <= int(bucket) <= 65536:
            raise ConfigError(f"--var server_names_hash_bucket_size={bucket!r}: expected nginx's setting, "
                              "a number like 64 or 128")
        prefix = str(variables.get("kv_prefix") or "").strip().strip("/") or None
        trusted = str(variables.get("trusted_proxies") or "").strip()
        try:
            proxies = values.networks(trusted) if trusted else ()
        except ValueError as error:
            raise ConfigError(f"--var trusted_proxies={trusted!r}: {error}; expected a comma list of the load "
                              "balancers' addresses or CIDR ranges") from None
        try:
            proxy_protocol = values.boolean(str(variables.get("proxy_protocol") or "false"))
        except ValueError:
            raise ConfigError(f"--var proxy_protocol={variables.get('proxy_protocol')!r}: expected true or false")
        if proxy_protocol and not proxies:
            raise ConfigError("--var proxy_protocol=true needs --var trusted_proxies: the balancers whose PROXY "
                              "header names the client")
        return cls(str(variables.get("domain", "")).strip().lower(), int(variables.get("http_port", 80)),
                   int(variables.get("https_port", 443)), policy, int(bucket), prefix, proxies, proxy_protocol)

    @property
    def longest_host(self) -> int:
        """The longest server name nginx's hash holds: its bucket (rounded up to a 64-byte cache line) less
        two pointers and two bytes (ngx_hash_init's NGX_HASH_ELT_SIZE); measured: 64 -> 46, 128 -> 110."""
        return -(-self.names_bucket // 64) * 64 - 18


@dataclasses.dataclass(frozen=True)
class RouteTable:
    hosts: tuple[Host, ...] = ()
    passthrough: tuple[Passthrough, ...] = ()
    listeners: tuple[Listener, ...] = ()
    refused: tuple[RouteRefusal, ...] = ()
    notes: tuple[str, ...] = ()
    # Host names nginx terminates that a passthrough wildcard covers: the SNI switch sends them to nginx's own
    # TLS by name, since an exact name beats a wildcard.
    terminated_under_wildcards: tuple[str, ...] = ()
    # (service, ((key, where its value came from), ...)) for every value not built in: labels, KV.
    sources: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    kv_refused: tuple = ()  # the route settings in KV refused (routes.overrides.KvRefusal)
    settings_in_force: tuple[tuple[str, str], ...] = ()  # (KV path, value) of every route setting applied
    trusted_proxies: tuple[str, ...] = ()  # RouteOptions.trusted_proxies and proxy_protocol, for the templates
    proxy_protocol: bool = False
    acme_wanted: tuple[str, ...] = ()  # hosts waiting for a certificate from the fleet's ACME issuer
    challenges: tuple[tuple[str, str], ...] = ()  # (token, key authorization): every nginx answers them
    certificate_sources: tuple[tuple[str, str], ...] = ()  # (host, acme | import) of KV's certificates

    @functools.cached_property
    def pools(self) -> tuple[Pool, ...]:
        """Every pool an HTTP location proxies to (stable, canary, auth), each once, by name."""
        return views.pools(self.hosts)

    @functools.cached_property
    def locations(self) -> tuple[Location, ...]:
        """Every distinct location (a route served on both listeners counts once)."""
        return views.locations(self.hosts)

    @functools.cached_property
    def _places(self) -> dict[str, dict]:
        """Where each host, pool, location and service is in its view (filled as the views are asked)."""
        return {}

    def _place(self, view: str, key) -> dict:
        if view not in self._places:
            self._places[view] = views.index(getattr(self, view), key)
        return self._places[view]

    def with_hosts(self, rebuilt: Mapping[str, Host]) -> "RouteTable":
        """This table with the hosts ``rebuilt`` (by name) in place of its own, the rest as it is; the views
        this table computed are updated from its own rather than computed again (same pools, locations and
        services: the builder rebuilds hosts only when no route changed), in time proportional to ``rebuilt``."""
        where = self._place("hosts", lambda host: host.name)
        hosts = list(self.hosts)
        replaced = []
        for name, host in rebuilt.items():
            replaced.append((hosts[where[name]], host))
            hosts[where[name]] = host
        table = dataclasses.replace(self, hosts=tuple(hosts))
        table._places["hosts"] = where  # the same names in the same places
        known = self.__dict__
        if "pools" in known:
            pools = views.updated_pools(self.pools, self._place("pools", views.pool_name), replaced)
            if pools is not None:
                table.__dict__["pools"], table._places["pools"] = pools, self._places["pools"]
        if "locations" in known:
            locations = views.updated_locations(self.locations, self._place("locations", views.location_id), replaced)
            if locations is not None:
                table.__dict__["locations"], table._places["locations"] = locations, self._places["locations"]
                if "services" in known:
                    came = [location for _, new in replaced for location in views.host_locations(new)]
                    services = views.updated_services(self.services, self._place("services", views.service_id),
                                                      came)
                    if services is not None:
                        table.__dict__["services"], table._places["services"] = services, self._places["services"]
        return table

    def routes(self):
        """(scheme, host, location) for every HTTP route, in the table's order: what people are shown."""
        for host in self.hosts:
            for scheme, locations in (("http", host.http), ("https", host.https), ("h2c", host.h2c)):
                for location in locations:
                    yield scheme, host, location

    def upstream_zone_size(self, dynamic: bool = False) -> str | None:
        """The size of the one shared memory zone every static upstream keeps its run-time state in (None: no
        static upstream). With ``dynamic``, pools of IP addresses take their peers from the Lua balancer and
        need none.

        One zone for all, not one each: nginx finds a zone by comparing its name with every zone declared before
        it, so at 5,000 upstreams their own zones made half of every check and reload (1 s of 2 here). Measured,
        a server takes under 800 bytes of it and a pool under 1 KiB; 1 KiB each plus 1 MiB, rounded up to a
        power of two so that a few more instances do not change the rendered text.
        """
        static = [pool for pool in self.pools if pool.servers and not (dynamic and pool.ip_only)]
        if not static:
            return None
        kib = 1024 + sum(1 + len(pool.servers) for pool in static)
        mib = 1
        while mib * 1024 < kib:
            mib *= 2
        return f"{mib}m"

    @property
    def default_tries(self) -> int:
        """How many instances a request may be tried on where its service sets no ``retries`` (every server)."""
        return DEFAULT_RETRIES + 1

    @property
    def has_https(self) -> bool:
        return any(host.https for host in self.hosts)

    @property
    def has_h2c(self) -> bool:
        return any(host.h2c for host in self.hosts)

    @functools.cached_property
    def services(self) -> tuple[Location, ...]:
        """One location per routed service (its service-wide settings: rate zone, canary split)."""
        return views.services(self.locations)

    @functools.cached_property
    def canaries(self) -> tuple[Location, ...]:
        """Of ``services``, those that split clients to canary instances (not while in maintenance)."""
        return tuple(location for location in self.services if location.canary and location.action == "proxy")

    @functools.cached_property
    def cross_origin(self) -> tuple[Location, ...]:
        """Of ``services``, those answering cross-origin requests (CORS)."""
        return tuple(location for location in self.services if location.cors and location.action == "proxy")

    @functools.cached_property
    def mirrored(self) -> tuple[Location, ...]:
        """Of ``services``, those copying a share of their requests to another service."""
        return tuple(location for location in self.services if location.mirror and location.mirror.pool
                     and location.mirror.percent and location.action == "proxy")

    @functools.cached_property
    def rate_limited(self) -> tuple[Location, ...]:
        """Of ``services``, those limited per client address."""
        return tuple(location for location in self.services if location.rate_limit)


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


def short_id(text: str) -> str:
    """Ten hex digits: a valid nginx variable and zone name for anything, the same on every node."""
    return hashlib.sha1(text.encode()).hexdigest()[:10]
