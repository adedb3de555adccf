"""Rules for data from Consul before it may reach an nginx config.

Anything in the catalog can be written by anyone with service:write, so a name,
tag, address or meta value is untrusted. nginx syntax is made of whitespace,
``;``, ``{``, ``}``, ``#``, quotes, ``$`` (variables) and, in some contexts,
backslashes; a value carrying any of them could add directives. We do not
escape (nginx has no uniform quoting across directives): an instance carrying
such a value is dropped whole, with a warning that names it, and the good
instances keep serving.
"""

from __future__ import annotations

import functools
import ipaddress
import re

# Service names end up as upstream names and in server_name: DNS-ish labels.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
# Any printable character except nginx's syntax characters.
_FORBIDDEN = re.compile(r"[\s;{}#'\"$\\`\x00-\x1f\x7f]")
MAX_VALUE_LENGTH = 512


def name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return f"name {_show(name)} is not a valid service name"
    return None


def node_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name or len(name) > 253 or _FORBIDDEN.search(name):
        return f"node name {_show(name)} is unsafe"
    return None


def address_problem(address: object) -> str | None:
    if not isinstance(address, str):
        return f"address {_show(address)} is empty"
    return _address_problem(address)


@functools.lru_cache(maxsize=4096)  # a fleet has few addresses and many instances on each
def _address_problem(address: str) -> str | None:
    if not address:
        return f"address {_show(address)} is empty"
    try:
        ipaddress.ip_address(address)
        return None
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(address):
        return f"address {_show(address)} is neither an IP address nor a host name"
    return None


def port_problem(port: object) -> str | None:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return f"port {_show(port)} is out of range 1-65535"
    return None


def value_problem(what: str, value: object) -> str | None:
    """A tag, meta key or meta value: printable, no nginx syntax, bounded."""
    if not isinstance(value, str):
        return f"{what} {_show(value)} is not a string"
    if len(value) > MAX_VALUE_LENGTH:
        return f"{what} is {len(value)} characters long (limit {MAX_VALUE_LENGTH})"
    if _FORBIDDEN.search(value) or not value.isprintable():
        return f"{what} {_show(value)} contains whitespace, control or nginx syntax characters"
    return None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
