"""The route table for people (pure): ``renderer routes`` prints it, ``--url`` says which route answers.

Both read the same table the templates render, so what they say is what
nginx does: a host is matched exactly, then by its longest ``*.`` wildcard;
a path by its longest prefix on segment boundaries (``/v1`` takes ``/v1``
and ``/v1/x``, never ``/v12``); over HTTPS a passed-through name goes to its
instances untouched, and a name with no HTTPS route has its handshake
refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .model import Host, Location, Pool, RouteTable


def _pool(pool: Pool | None) -> str:
    if pool is None:
        return "no passing instance"
    return ", ".join(f"{s.address} w{s.weight}" for s in pool.servers)


def not_proxied(location: Location) -> str | None:
    """What a location answers instead of proxying (a redirect, a 503 and why); None when it proxies."""
    if location.action == "redirect":
        return "308 to HTTPS"
    if location.action == "unavailable":
        return "503: no passing instance"
    if location.action == "maintenance":
        return "503 with Retry-After: maintenance (route setting)"
    if location.auth is not None and location.auth.pool is None:
        return f"503: auth service {location.auth.service} has no passing instance"
    return None


def _action(location: Location) -> str:
    return not_proxied(location) or _pool(location.pool)


def format_table(table: RouteTable) -> str:
    lines = []
    rows = []
    for scheme, host, location in table.routes():
        rows.append((scheme, host.name, location.path, location.service, _action(location),
                     " ".join(location.options) if location.action != "redirect" else ""))
    if rows:
        header = ("", "HOST", "PATH", "SERVICE")
        widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(4)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  INSTANCES")
        for row in rows:
            text = "  ".join(value.ljust(width) for value, width in zip(row[:4], widths)) + "  " + row[4]
            lines.append(text + (f"  [{row[5]}]" if row[5] else ""))
    for route in table.passthrough:
        lines.append(f"passthrough {route.host} -> {route.service}: {_pool(route.pool)} (TLS ends in the container)")
    for listener in table.listeners:
        lines.append(f"{listener.protocol} {listener.port} -> {listener.service}: {_pool(listener.pool)}")
    if not lines:
        lines.append("no routes")
    if table.sources:
        lines.append("settings (where each value comes from; anything not named is built in):")
        lines += [f"  {service}: " + ", ".join(f"{key} from {origin}" for key, origin in keys)
                  for service, keys in table.sources]
    if table.kv_refused:
        lines.append("route settings refused:")
        lines += [f"  {refusal}" for refusal in table.kv_refused]
    if table.refused:
        lines.append("refused:")
        lines += [f"  {refusal}" for refusal in table.refused]
    if table.notes:
        lines.append("notes:")
        lines += [f"  {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def effect(table: RouteTable, service: str | None, keys: list[str]) -> str:
    """What a change of route settings does: the routes of ``service`` (None: of every service the keys
    reach) as they will be, and where each changed key's value comes from then."""
    sources = dict(table.sources)
    rows = [(scheme, host, location) for scheme, host, location in table.routes()
            if (location.service == service if service else any(key in dict(sources.get(location.service, ()))
                                                                 for key in keys))]
    lines = ["takes effect on:" if rows else "takes effect on no route now (no service it reaches is routed)"]
    for scheme, host, location in rows:
        shown = not_proxied(location) or " ".join(location.options) or "proxy"
        lines.append(f"  {scheme:<5} {host.name}{location.path} -> {location.service}: {shown}")
    for name in sorted({location.service for _, _, location in rows}):
        origins = dict(sources.get(name, ()))
        lines.append(f"  {name}: " + ", ".join(f"{key} from {origins.get(key, 'built-in')}" for key in keys))
    return "\n".join(lines) + "\n"


def _host(table: RouteTable, name: str) -> Host | None:
    exact = next((host for host in table.hosts if host.name == name), None)
    if exact is not None:
        return exact
    wildcards = [host for host in table.hosts if host.name.startswith("*.") and name.endswith(host.name[1:])]
    return max(wildcards, key=lambda host: len(host.name), default=None)


def explain(table: RouteTable, url: str) -> str:
    """Which route answers ``url``, and why."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme, name, path = parts.scheme or "http", (parts.hostname or "").lower(), parts.path or "/"
    if scheme == "https":
        through = next((route for route in table.passthrough
                        if route.host == name or (route.host.startswith("*.") and name.endswith(route.host[1:]))),
                       None)
        if through is not None:
            return (f"{url}: passed through by server name to service {through.service} ({_pool(through.pool)}); "
                    "TLS ends in the container, nginx does not see the path\n")
    host = _host(table, name)
    if host is None:
        return (f"{url}: no route for host {name}: " + ("the TLS handshake is refused (unknown server name)\n"
                if scheme == "https" else "nginx's default server answers 404\n"))
    locations = {"https": host.https, "h2c": host.h2c}.get(scheme, host.http)
    if not locations:
        return f"{url}: host {host.name} has no HTTPS route: the TLS handshake is refused\n"
    candidates = [loc for loc in locations
                  if loc.path == "/" or path == loc.path or path.startswith(loc.path + "/")]
    by_header = ""
    if candidates:
        longest = max(len(loc.path) for loc in candidates)
        headers = [loc for loc in candidates if loc.match and len(loc.path) == longest]
        by_header = "".join(f"; with {loc.match[0]}: {loc.match[1]} -> service {loc.service}" for loc in headers)
        candidates = [loc for loc in candidates if not loc.match]
        if not candidates or max(len(loc.path) for loc in candidates) < longest:
            return f"{url}: host {host.name}: only requests with a header have a route for {path}{by_header}; " \
                   "others 404\n"
    if not candidates:
        return (f"{url}: host {host.name} has no route for {path} (its paths: "
                f"{', '.join(loc.path for loc in locations)}): 404\n")
    location = max(candidates, key=lambda loc: len(loc.path))
    why = (f"host {host.name}" + (" (by its wildcard)" if host.name != name else "")
           + f", longest matching prefix {location.path}"
           + (f" among {', '.join(loc.path for loc in candidates)}" if len(candidates) > 1 else ""))
    if location.action == "redirect":
        return f"{url}: {why}: 308 to https://{name}{path} (tls=terminate, https_redirect)\n"
    if location.strip_path and path == location.path:
        return f"{url}: {why}: 308 to {path}/ (strip_path)\n"
    seen = path
    if location.strip_path and location.path != "/":
        seen = path[len(location.path):] or "/"
    detail = f"service {location.service}: {_action(location)}"
    if location.options:
        detail += f" [{' '.join(location.options)}]"
    if seen != path:
        detail += f"; the backend sees {seen}"
    return f"{url}: {why} -> {detail}{by_header}\n"
