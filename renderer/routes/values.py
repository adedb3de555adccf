"""What each route meta key may hold (pure): one parser per key, a ValueError naming what is wrong.

Values have already passed ``agentkit.nginx_safe`` (no whitespace, ``;``,
``{``, ``}``, ``#``, quotes, ``$`` or backslashes reach here), but a route
key is inserted into nginx syntax in a specific place, so each is held to
the exact shape that place accepts: a host name is a host name, a path is a
plain path (no ``..``, no regex characters: nginx prefix locations only),
sizes and durations are nginx's own units.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from agentkit.nginx_safe import name_problem

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# One label is a host name too (``intranet``, reached through a search domain or /etc/hosts); a wildcard
# stands for one label in front of at least one.
_HOST = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")
# Path characters nginx takes literally in a prefix location; no regex character but '.', which is escaped
# where a regex is built (strip_path's rewrite).
_PATH = re.compile(r"^/(?:[A-Za-z0-9._~@:,=%-]+/?)*$")
_RATE = re.compile(r"^([1-9][0-9]{0,5})r/([sm])$")
_SIZE = re.compile(r"^([0-9]{1,6})([kKmMgG]?)$")
_DURATION = re.compile(r"^([0-9]{1,6})(ms|s|m|h)?$")
_HEADER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
TLS_MODES = ("terminate", "passthrough")
BACKENDS = ("http", "https", "grpc", "grpcs")


@functools.lru_cache(maxsize=4096)  # the same values recur across thousands of instances
def hosts(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip().lower().rstrip(".") for part in value.split(",") if part.strip()))
    if not names:
        raise ValueError("names no host")
    for name in names:
        if len(name) > 253 or not _HOST.match(name):
            raise ValueError(f"{name!r} is not a host name (a leading '*.' wildcard is allowed)")
    return names


@functools.lru_cache(maxsize=4096)
def paths(value: str) -> tuple[str, ...]:
    found = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.startswith("/"):
            raise ValueError(f"{part!r} does not start with /")
        if "//" in part or any(segment in (".", "..") for segment in part.split("/")):
            raise ValueError(f"{part!r} has an empty, '.' or '..' segment")
        if not _PATH.match(part):
            raise ValueError(f"{part!r} has characters a path prefix may not (letters, digits and -._~@:,=% only)")
        found.append(part.rstrip("/") or "/")
    if not found:
        raise ValueError("names no path")
    return tuple(dict.fromkeys(found))


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError("is not true or false")


def choice(options: tuple[str, ...]):
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in options:
            raise ValueError(f"is not one of {', '.join(options)}")
        return lowered
    return parse


tls = choice(TLS_MODES)
backend = choice(BACKENDS)
rate_scope = choice(("fleet", "node"))


_DIGITS = re.compile(r"^[0-9]{1,9}$")  # ASCII only: str.isdigit() takes '²', which int() refuses


def integer(low: int, high: int):
    def parse(value: str) -> int:
        text = value.strip()
        if not _DIGITS.match(text) or not low <= int(text) <= high:
            raise ValueError(f"is not a whole number from {low} to {high}")
        return int(text)
    return parse


weight = integer(1, 100)
retries = integer(0, 10)
max_age = integer(0, 86400)
percent = integer(0, 100)
burst = integer(0, 100000)
port = integer(1, 65535)


def auth(value: str) -> tuple[str, str]:
    """``service:NAME[/path]`` -> (NAME, /path)."""
    kind, _, target = value.partition(":")
    if kind != "service" or not target:
        raise ValueError("is not service:NAME or service:NAME/path")
    name, slash, path = target.partition("/")
    if name_problem(name):
        raise ValueError(f"{name!r} is not a service name")
    path = "/" + path if slash else "/"
    if path != "/" and not _PATH.match(path):
        raise ValueError(f"path {path!r} has characters a path may not")
    return name, path


def mirror(value: str) -> str:
    """``service:NAME`` -> NAME: the service a copy of each request goes to."""
    kind, _, name = value.partition(":")
    if kind != "service" or not name:
        raise ValueError("is not service:NAME")
    if name_problem(name):
        raise ValueError(f"{name!r} is not a service name")
    return name


@functools.lru_cache(maxsize=1024)
def header_names(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    for name in names:
        if not _HEADER.match(name):
            raise ValueError(f"{name!r} is not a header name (letters, digits and -)")
    return names


# A header value that may travel in meta: visible ASCII, and none of what agentkit.nginx_safe already keeps out
# (quotes, $, ;, braces, #, backslash) nor ',' (it separates the pairs).
_HEADER_VALUE = re.compile(r"^[A-Za-z0-9!%&'()*+./:<=>?@\[\]^_`|~-]{0,256}$")
# Headers the renderer sets itself on the way to the instance (docs/routes.md): a second value would be sent
# beside its own.
RENDERER_HEADERS = frozenset({"host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-prefix",
                              "upgrade", "connection"})
_METHOD = re.compile(r"^[A-Z]{1,20}$")
_ORIGIN = re.compile(r"^https?://(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?)(?::[0-9]{1,5})?$")


@functools.lru_cache(maxsize=1024)
def header_pairs(value: str) -> tuple[tuple[str, str], ...]:
    """``Name:value,Name2:value2`` -> ((Name, value), ...); an empty value (``Name:``) removes the header."""
    pairs: dict[str, tuple[str, str]] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        name, colon, text = part.strip().partition(":")
        if not colon:
            raise ValueError(f"{part.strip()!r} is not Name:value (Name: removes the header)")
        if not _HEADER.match(name):
            raise ValueError(f"{name!r} is not a header name (letters, digits and -)")
        if not _HEADER_VALUE.match(text):
            raise ValueError(f"the value of {name} has characters a header value may not here")
        pairs[name.lower()] = (name, text)
    if not pairs:
        raise ValueError("names no header")
    return tuple(pairs[key] for key in sorted(pairs))


def match_header(value: str) -> tuple[str, str]:
    """``X-Version:2`` -> (X-Version, 2): the route takes only requests whose header has exactly that value."""
    pairs = header_pairs(value)
    if len(pairs) != 1 or not pairs[0][1]:
        raise ValueError("is not one Name:value with a value")
    return pairs[0]


def request_headers(value: str) -> tuple[tuple[str, str], ...]:
    pairs = header_pairs(value)
    for name, _ in pairs:
        if name.lower() in RENDERER_HEADERS:
            raise ValueError(f"{name} is set by the renderer itself (docs/routes.md)")
    return pairs


@functools.lru_cache(maxsize=1024)
def methods(value: str) -> tuple[str, ...]:
    """``GET,POST`` -> the methods, upper case; GET brings HEAD (a GET without the body, as nginx's
    ``limit_except`` has it)."""
    found = []
    for part in value.split(","):
        method = part.strip().upper()
        if not method:
            continue
        if not _METHOD.match(method):
            raise ValueError(f"{part.strip()!r} is not an HTTP method")
        found.append(method)
        if method == "GET":
            found.append("HEAD")
    if not found:
        raise ValueError("names no method")
    return tuple(sorted(set(found)))


@functools.lru_cache(maxsize=1024)
def origins(value: str) -> tuple[str, ...]:
    """``https://app.example.org,http://localhost:3000`` or ``*``: the origins a browser may call from."""
    found = tuple(dict.fromkeys(part.strip().lower().rstrip("/") for part in value.split(",") if part.strip()))
    if found == ("*",):
        return found
    for origin in found:
        if origin == "*":
            raise ValueError("'*' stands alone: every origin, or a list of them")
        if not _ORIGIN.match(origin):
            raise ValueError(f"{origin!r} is not an origin (scheme://host or scheme://host:port)")
    if not found:
        raise ValueError("names no origin")
    return found


def rate(value: str) -> str:
    """``10r/s`` or ``600r/m``: nginx's own notation."""
    text = value.strip()
    if not _RATE.match(text):
        raise ValueError("is not a rate like 10r/s or 600r/m")
    return text


@functools.lru_cache(maxsize=1024)
def networks(value: str) -> tuple[str, ...]:
    found = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "%" in part:  # an IPv6 zone: Python takes it, nginx does not
                raise ValueError(part)
            found.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR range") from None
    if not found:
        raise ValueError("names no address")
    return tuple(dict.fromkeys(found))


def size(value: str) -> str:
    """An nginx size: ``512k``, ``10m``, ``1g`` or bytes."""
    text = value.strip()
    if not _SIZE.match(text):
        raise ValueError("is not a size like 512k, 10m or 1g")
    return text.lower()


RETRY_CONDITIONS = ("error", "timeout", "502", "503", "504", "429")


@functools.lru_cache(maxsize=256)
def retry_on(value: str) -> tuple[str, ...]:
    """When the next instance is tried: ``error`` (no connection, or none answered), ``timeout``, or the
    instance's answer ``502``, ``503``, ``504``, ``429``."""
    found = tuple(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))
    for condition in found:
        if condition not in RETRY_CONDITIONS:
            raise ValueError(f"{condition!r} is not one of {', '.join(RETRY_CONDITIONS)}")
    if not found:
        raise ValueError("names no condition")
    return tuple(c for c in RETRY_CONDITIONS if c in found)


def duration(value: str) -> str:
    """An nginx time: ``60s``, ``5m``, ``500ms``; a bare number is seconds."""
    text = value.strip()
    match = _DURATION.match(text)
    if not match or int(match[1]) == 0:
        raise ValueError("is not a duration like 500ms, 60s or 5m")
    return text if match[2] else f"{text}s"
