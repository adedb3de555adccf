"""Hosts assembled from every service's claims, conflicts settled by one rule every node computes alike (pure).

* **Hosts**: ``hosts``, else ``NAME.DOMAIN`` (lower-cased, as nginx
  compares names). ``NAME.DOMAIN`` belongs to the service NAME while it
  exists: another service claiming it is refused.
* **Conflicts**: one (host, path) is routed to one service. The owner of the
  host's default name wins; otherwise the service registered first (the
  oldest Consul ``CreateIndex`` of its instances: a route already served
  stays with its service when another claims it later), then the one whose
  name sorts first. The other is refused, named. The same rule settles a
  host one service passes through (SNI) while another terminates it: one TLS
  handshake per host name, so a passthrough takes the name whole. An exact
  name beats a wildcard (``*.example.org``), as in nginx's own server names:
  a passthrough wildcard never takes the handshakes of a host nginx
  terminates.
* **Length**: a host name must fit nginx's server-name hash bucket
  (``--var server_names_hash_bucket_size``, nginx's default 64: names up to
  46 characters; 128: up to 110); a longer one would make nginx refuse every
  file, so its routes are refused alone.
* **Paths** are plain prefixes matched on segment boundaries: ``/v1``
  answers ``/v1`` and ``/v1/...``, never ``/v12``; the longest wins.
* **Header routes** (``match_header=X-Version:2``) share a host and path
  with its default route: a request carrying the header with that value
  goes to them, any other to the default route, or 404 without one. A claim
  is (host, path, header and value), settled by the rule above; where one
  request carries the headers of two header routes, the first registered
  takes it.
* **TLS**: ``terminate`` needs the host's certificate; without it the
  host's terminated routes are refused, naming the files looked for, unless
  a service of the host asks the fleet's ACME issuer for it (``tls_acme``):
  the host is then served over plain HTTP until the certificate arrives.
* **Plaintext gRPC** (``backend=grpc`` without ``tls``) is served on the
  HTTP/2-only listener ``--var h2c_port``: nginx 1.22 cannot tell an HTTP/1
  client from an HTTP/2 one on a plaintext port (prior knowledge only), so
  it is never on ``http_port``; without ``h2c_port`` it is refused.
* **Auth**: ``auth=service:NAME[/path]`` gets NAME's passing instances as
  its pool, resolved across services; with none the route answers 503:
  never open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from renderer.catalog.certificates import Certificate, CertificateSet
from renderer.catalog.model import Catalog

from .model import Host, Location, Passthrough, Pool, RouteRefusal, RouteOptions, Server, short_id
from .service import ServiceRoutes

INFINITY = float("inf")  # an age not known sorts after every known one
GRPC = ("grpc", "grpcs")


def assemble(specs: dict[str, ServiceRoutes], options: RouteOptions, certificates: CertificateSet, catalog: Catalog,
             refused: list[RouteRefusal], notes: list[str],
             known: dict[str, tuple]) -> tuple[list[Host], list[Passthrough], tuple[str, ...], tuple[str, ...]]:
    """Claims of every service -> hosts, passthroughs, the host names nginx terminates that a
    passthrough wildcard covers (the SNI switch must name them: an exact name beats a wildcard), and the
    hosts waiting for a certificate from the fleet's ACME issuer.

    ``known`` is the builder's memory of the hosts it built last, for these
    options and certificates: host name -> (its (path, service, part) parts,
    the Host). A host whose parts are the same objects is handed out again;
    ``known`` is brought up to date for the next build.
    """
    reserved = {f"{name}.{options.domain}".lower(): name for name, spec in specs.items()
                if spec.hosts is None and options.domain}
    # (host, path) -> claimants; host -> SNI claimants (terminate and passthrough)
    claims: dict[tuple[str, str, str], list[str]] = {}  # (host, path, header match or "") -> claimants
    sni: dict[str, list[str]] = {}
    for name in sorted(specs):
        spec = specs[name]
        if spec.location is None:
            continue
        if spec.location.backend in GRPC and spec.tls != "terminate" and options.listen.h2c_port is None:
            refused.append(RouteRefusal(name, f"backend={spec.location.backend} without tls=terminate is plaintext "
                                              "gRPC, served on a listener of its own (--var h2c_port=PORT: nginx "
                                              "1.22 speaks plaintext HTTP/2 only where every client does); not "
                                              "routed", key="backend", value=spec.location.backend))
            continue
        hosts = spec.hosts
        if hosts is None:
            if not options.domain:
                refused.append(RouteRefusal(name, "has no hosts meta and no domain is set (--var domain=...): "
                                             "not routed"))
                continue
            hosts = (f"{name}.{options.domain}".lower(),)
        for host in hosts:
            if len(host) > options.longest_host:
                refused.append(RouteRefusal(
                    name, f"host {host} is {len(host)} characters: nginx's server names hold up to "
                          f"{options.longest_host} (server_names_hash_bucket_size {options.names_bucket}, --var "
                          "server_names_hash_bucket_size); not routed there", key="hosts", value=host))
                continue
            owner = reserved.get(host)
            if owner is not None and owner != name:
                refused.append(RouteRefusal(name, f"host {host} is service {owner}'s default name; not routed there",
                                            key="hosts", value=",".join(hosts)))
                continue
            if spec.tls in ("terminate", "passthrough"):
                sni.setdefault(host, []).append(name)
            if spec.tls != "passthrough":
                for path in spec.paths:
                    claims.setdefault((host, path, _match_key(spec.location)), []).append(name)

    def winner(host: str, names: list[str]) -> str:
        owner = reserved.get(host)
        return owner if owner in names else min(names, key=lambda name: (specs[name].created or INFINITY, name))

    # One TLS handshake per host name: a passthrough takes the name whole; terminations share it.
    sni_winner = {host: winner(host, names) for host, names in sni.items()}
    for host, names in sni.items():
        first = sni_winner[host]
        for name in names:
            if name != first and "passthrough" in (specs[name].tls, specs[first].tls):
                refused.append(RouteRefusal(
                    name, f"host {host}: service {first} holds its TLS (tls={specs[first].tls}; the host's owner, "
                          "or the first registered); not routed", key="tls", value=specs[name].tls))

    by_host: dict[str, list[tuple[str, str, str]]] = {}
    for (host, path, match), names in sorted(claims.items()):
        chosen = winner(host, names)
        spec = specs[chosen]
        if spec.tls == "terminate" and specs[sni_winner[host]].tls == "passthrough":
            continue  # the host's TLS is passed through: refused above
        for name in names:
            if name != chosen:
                refused.append(RouteRefusal(
                    name, f"host {host} path {path}{f' with {match}' if match else ''} is routed to service "
                          f"{chosen} (the host's owner, or the first registered); not routed there",
                    key="path", value=path))
        by_host.setdefault(host, []).append((path, match, chosen))

    hosts, waiting, routing = [], [], {}
    for host in sorted(by_host):
        # Per path: its default route first, then the header routes in the order they are tried (the first
        # registered first, as conflicts are settled).
        routes = routing[host] = sorted(by_host[host],
                                        key=lambda r: (r[0], r[1] != "", specs[r[2]].created or INFINITY, r[2]))
        parts = tuple((path, name, specs[name]) for path, _, name in routes)
        previous = known.get(host)
        if previous is not None and len(previous[0]) == len(parts) and all(
                a[0] == b[0] and a[1] == b[1] and a[2] is b[2] for a, b in zip(previous[0], parts)):
            hosts.append(previous[1])  # its services' parts are the same objects: the same host
            continue
        built, refusing = build_host(host, routes, specs, certificates, refused, notes, waiting)
        if built is None:
            continue
        hosts.append(built)
        # Auth and mirror pools are other services': a host with either is not kept either.
        if not refusing and not any(location.auth or location.mirror
                                    for location in (*built.http, *built.https, *built.h2c)):
            known[host] = (parts, built)
    for name in set(known) - set(by_host):
        del known[name]
    hosts = resolve_others(hosts, catalog)

    passthrough = []
    for host in sorted(sni):
        name = sni_winner[host]
        if specs[name].tls == "passthrough":
            pool = specs[name].location.pool
            passthrough.append(Passthrough(host, name, dataclasses.replace(pool, name=f"_sni_{name}") if pool
                                           else None))
    wildcards = [route.host[1:] for route in passthrough if route.host.startswith("*.")]
    exact = tuple(host.name for host in hosts if host.https and not host.name.startswith("*.")
                  and any(host.name.endswith(suffix) for suffix in wildcards))
    return hosts, passthrough, exact, tuple(waiting), routing


def build_host(host: str, routes: list[tuple[str, str, str]], specs: Mapping[str, ServiceRoutes],
               certificates: CertificateSet, refused: list[RouteRefusal], notes: list[str],
               waiting: list[str]) -> tuple[Host | None, bool]:
    """The host from its routes ((path, header match, service), in the order tried), and whether it was built
    with a refusal or note (a host without a certificate); None when none of its routes is left."""
    certificate = None
    refusing = False  # a host built with a refusal is built again each time, so the refusal is always said
    if any(specs[name].tls == "terminate" for _, _, name in routes):
        found = certificates.find(host)
        if isinstance(found, Certificate):
            certificate = found
        elif any(specs[name].acme for _, _, name in routes) and not host.startswith("*."):
            # Its certificate is the fleet issuer's to order: plain HTTP meanwhile, never another's.
            refusing = True
            waiting.append(host)
            notes.append(f"host {host} waits for its certificate from the fleet's ACME issuer (tls_acme): "
                         "served over plain HTTP until then")
        else:
            refusing = True
            for path, _, name in [r for r in routes if specs[r[2]].tls == "terminate"]:
                refused.append(RouteRefusal(name, f"host {host} path {path}: no certificate ({found}); not routed",
                                            key="tls", value="terminate"))
            routes = [r for r in routes if specs[r[2]].tls != "terminate"]
            if not routes:
                return None, True
    http, https, h2c = [], [], []
    for path, match, name in routes:
        spec = specs[name]
        # Nothing to strip from "/": its location takes the path as it comes.
        location = dataclasses.replace(spec.location, path=path,
                                       id=short_id(f"{host} {path}" + (f" {match}" if match else "")),
                                       strip_path=spec.location.strip_path and path != "/")
        if spec.tls == "terminate" and certificate is None:
            http.append(location)  # waiting for its certificate (above)
        elif spec.tls == "terminate":
            https.append(location)
            http.append(dataclasses.replace(location, action="redirect") if spec.https_redirect else location)
        elif location.backend in GRPC:
            h2c.append(location)
        else:
            http.append(location)
    return Host.of(host, tuple(http), tuple(https), certificate, tuple(h2c)), refusing


def _match_key(location: Location) -> str:
    """A header route's part of its claim: ``x-version: 2`` (header names compare without case); "" for none."""
    return f"{location.match[0].lower()}: {location.match[1]}" if location.match else ""


def resolve_others(hosts: list[Host], catalog: Catalog) -> list[Host]:
    """Give each auth=service:NAME and mirror=service:NAME its pool (NAME's passing instances), resolved
    across services."""
    pools: dict[tuple[str, str], Pool | None] = {}

    def pool_of(kind: str, name: str) -> Pool | None:
        if (kind, name) not in pools:
            servers = tuple(Server(i.host_port, 1, i.id, i.node) for i in catalog.instances_of(name, passing=True))
            pools[kind, name] = Pool(f"_{kind}_{name}", name, servers) if servers else None
        return pools[kind, name]

    def resolved(location: Location) -> Location:
        if location.auth is not None:
            location = dataclasses.replace(location, auth=dataclasses.replace(
                location.auth, pool=pool_of("auth", location.auth.service)))
        if location.mirror is not None:
            location = dataclasses.replace(location, mirror=dataclasses.replace(
                location.mirror, pool=pool_of("mirror", location.mirror.service)))
        return location

    if not any(location.auth or location.mirror for host in hosts
               for location in (*host.http, *host.https, *host.h2c)):
        return hosts
    return [Host.of(host.name, tuple(map(resolved, host.http)), tuple(map(resolved, host.https)), host.certificate,
                    tuple(map(resolved, host.h2c))) for host in hosts]
