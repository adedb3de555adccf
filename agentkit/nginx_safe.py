"""What may reach an nginx config: one rule, used by both daemons.

Anything in the catalog can be written by anyone with ``service:write``, so a
name, tag, address or meta value is untrusted. nginx syntax is made of
whitespace, ``;``, ``{``, ``}``, ``#``, quotes, ``$`` (variables) and, in some
contexts, backslashes; a value carrying any of them could add directives. We
do not escape (nginx has no uniform quoting across directives):

* the renderer guards with these rules (``renderer.catalog``): an instance
  whose name, address or port fails is left out whole (its address must be
  an IP address nginx takes: :func:`routable_address_problem`); a tag or meta value
  that fails is withheld from templates and the instance kept (a withheld
  route key refuses the route rather than dropping the restriction it set);
* the registrar warns with them on the Docker host (``registrar.labels``), so
  the operator learns early what the renderer will withhold. It still
  registers what Consul accepts, as registrator does: other consumers of the
  catalog may want a description with spaces.

Names: letters, digits, ``-``, ``_`` and ``.``, starting and ending with a
letter or digit; they are upstream names and part of host names, which is
all nginx and Consul can both carry. Consul's DNS interface resolves only
letters, digits and ``-`` (:func:`dns_problem`).
"""

from __future__ import annotations

import functools
import ipaddress
import re

# Service names end up as upstream names and in server_name: DNS-ish labels.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
# Any printable character except nginx's syntax characters.
_FORBIDDEN = re.compile(r"[\s;{}#'\"$\\`\x00-\x1f\x7f]")
MAX_VALUE_LENGTH = 512


def name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return (f"name {show(name)} is not a valid service name (letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit, at most 128)")
    return None


def dns_problem(name: str) -> str | None:
    """Why Consul's DNS interface will not resolve ``NAME.service.consul``, or None."""
    if not _DNS_LABEL.fullmatch(name):
        return (f"Consul's DNS interface will not resolve {name}.service.consul (it takes letters, digits "
                "and '-' only, at most 63)")
    return None


def node_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name or len(name) > 253 or _FORBIDDEN.search(name):
        return f"node name {show(name)} is unsafe"
    return None


def address_problem(address: object) -> str | None:
    if not isinstance(address, str):
        return f"address {show(address)} is empty"
    return _address_problem(address)


@functools.lru_cache(maxsize=4096)  # a fleet has few addresses and many instances on each
def _address_problem(address: str) -> str | None:
    if not address:
        return f"address {show(address)} is empty"
    try:
        ipaddress.ip_address(address)
        return None
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(address):
        return f"address {show(address)} is neither an IP address nor a host name"
    return None


def routable_address_problem(address: object) -> str | None:
    """An instance's address, as nginx routes to it: an IP address literal, nothing nginx must resolve.

    nginx resolves a host name in ``server`` once, when it loads the
    configuration, and refuses the whole configuration when it cannot
    (``host not found in upstream``), so one registration could freeze every
    route; answers may also differ from one nginx node to the next. Strings
    Python's ``ipaddress`` takes but nginx does not are refused too: an IPv6
    zone (``fe80::1%eth0``).
    """
    problem = address_problem(address)
    if problem:
        return problem
    return _routable_problem(address)


@functools.lru_cache(maxsize=4096)
def _routable_problem(address: str) -> str | None:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return (f"address {show(address)} is not an IP address (nginx would resolve it when loading its "
                "configuration, and refuse all of it when it cannot)")
    if getattr(parsed, "scope_id", None):
        return f"address {show(address)} has an IPv6 zone, which nginx does not take"
    return None


def port_problem(port: object) -> str | None:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return f"port {show(port)} is out of range 1-65535"
    return None


def value_problem(what: str, value: object) -> str | None:
    """A tag, meta key or meta value: printable, no nginx syntax, bounded."""
    if not isinstance(value, str):
        return f"{what} {show(value)} is not a string"
    if len(value) > MAX_VALUE_LENGTH:
        return f"{what} is {len(value)} characters long (limit {MAX_VALUE_LENGTH})"
    if _FORBIDDEN.search(value) or not value.isprintable():
        return f"{what} {show(value)} contains whitespace, a control character or nginx syntax (; {{ }} # $ quotes \\)"
    return None


def show(value: object, limit: int = 60) -> str:
    """A value quoted for a log line: control characters escaped, length capped."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
