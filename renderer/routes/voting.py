"""Instances that disagree on a route key (a rolling deploy): one value for the service, by vote (pure).

Route keys belong to the service, but every instance carries its own copy
of them in its meta, and during a rolling deploy the copies differ. Every
nginx node must settle it the same way, and a route must keep routing
while it lasts:

* the value carried by most voters wins; an unset key is a value too;
* on a tie a set value beats unset, then the smaller value;
* a value that does not parse is left out of the vote with a refusal
  naming service, instance, key and value; a key with no valid value left
  (every voter holds a bad one) refuses the service's routes;
* a value the catalog withheld as unsafe for nginx counts as a bad one:
  dropping it silently could open a route it restricted (``allow``).

The voters are the service's passing instances (all of them when none
passes), chosen by the caller.
"""

from __future__ import annotations

import collections

from renderer.catalog.model import Instance

from . import values
from .model import RouteRefusal

ROUTE_KEYS = {
    "hosts": values.hosts, "path": values.paths, "strip_path": values.boolean, "tls": values.tls,
    "backend": values.backend, "https_redirect": values.boolean, "canary_percent": values.percent,
    "auth": values.auth, "auth_headers": values.header_names, "rate_limit": values.rate,
    "rate_burst": values.burst, "rate_limit_scope": values.rate_scope, "allow": values.networks,
    "max_body": values.size, "timeout": values.duration, "maintenance": values.boolean,
    # the gateway keys (routes.gateway)
    "cors_origins": values.origins, "cors_methods": values.methods, "cors_headers": values.header_names,
    "cors_credentials": values.boolean, "cors_max_age": values.max_age, "methods": values.methods,
    "request_headers": values.request_headers, "response_headers": values.header_pairs,
    "retries": values.retries, "retry_on": values.retry_on, "connect_timeout": values.duration,
    "mirror": values.mirror, "mirror_percent": values.percent, "match_header": values.match_header,
    "tls_acme": values.boolean,  # its hosts' certificates from the fleet's ACME issuer (renderer.certs)
}
ROUTE_KEY_SET = frozenset(ROUTE_KEYS)


def vote(name: str, voters: tuple[Instance, ...], refused: list[RouteRefusal], notes: list[str],
         keys=ROUTE_KEYS) -> dict | None:
    """The values (parsed) of ``keys`` by the rule above; None when a key has no valid value."""
    chosen: dict[str, object] = {}
    for key, parse in keys.items():
        valid, value = vote_key(name, key, parse, voters, refused, notes)
        if not valid:
            return None
        if value is not None:
            chosen[key] = value
    return chosen


def vote_key(name: str, key: str, parse, voters: tuple[Instance, ...], refused: list[RouteRefusal],
             notes: list[str]) -> tuple[bool, object]:
    """(False, None) when no voter has a valid value (refused, said); else (True, the parsed value or None)."""
    counts: collections.Counter = collections.Counter()
    parsed: dict[str, object] = {}
    for instance in voters:
        raw = instance.meta.get(key)
        if raw is None:
            if key in instance.withheld:  # set, but unsafe for nginx: a vote for nothing valid
                refused.append(RouteRefusal(name, "its value is unsafe for nginx and was withheld", instance.id,
                                            key, "(withheld)"))
                continue
            counts[None] += 1
            continue
        try:
            parsed[raw] = parse(raw)
        except ValueError as error:
            refused.append(RouteRefusal(name, str(error), instance.id, key, raw))
            continue
        counts[raw] += 1
    if not counts:
        refused.append(RouteRefusal(name, f"no instance has a valid {key}: its routes are not served"))
        return False, None
    winner = min(counts.items(), key=lambda item: (-item[1], item[0] is None, item[0] or ""))[0]
    if len(counts) > 1:
        seen = ", ".join(f"{'unset' if v is None else repr(v)} on {n}" for v, n in sorted(
            counts.items(), key=lambda item: (item[0] is None, item[0] or "")))
        notes.append(f"service {name}: instances disagree on {key} ({seen}); routing with "
                     f"{'it unset' if winner is None else repr(winner)}")
    return True, None if winner is None else parsed[winner]
