"""A service's gateway keys, settled into what its locations do (pure): CORS, methods, headers, retries.

The keys (docs/routes.md) have each passed their parser (:mod:`.values`);
what is decided here is how they combine:

* CORS is answered only with ``cors_origins``; ``cors_methods``,
  ``cors_headers``, ``cors_credentials`` and ``cors_max_age`` alone do
  nothing and say so. ``*`` with credentials is what browsers refuse
  (the Fetch standard never sends credentials to ``*``), so the renderer
  refuses it too and answers no cross-origin request for the service,
  rather than echo every origin with credentials, which would let any site
  act as the user; its routes keep serving.
* ``mirror`` sends a copy of ``mirror_percent`` of the requests (all by
  default) to another service, whose answers nginx throws away; a service
  mirroring to itself would double its own load, and is not mirrored.
* ``retries`` bounds how many other instances a request is tried on
  (nginx's ``proxy_next_upstream_tries`` less the first); ``retry_on`` says
  when. A request whose method is not idempotent (POST, PATCH, LOCK) is
  tried again only when it never reached an instance: nginx's own rule
  without ``non_idempotent``, kept on purpose.
"""

from __future__ import annotations

from .model import (CORS_HEADERS, CORS_MAX_AGE, CORS_METHODS, DEFAULT_RETRIES, DEFAULT_RETRY_ON, Cors, Mirror,
                    RouteRefusal)

CORS_DETAILS = ("cors_methods", "cors_headers", "cors_credentials", "cors_max_age")


def gateway_options(name: str, keys: dict, refused: list[RouteRefusal], notes: list[str]) -> dict:
    """The Location fields the gateway keys in ``keys`` (parsed) ask for."""
    return {"cors": cors(name, keys, refused, notes), "methods": keys.get("methods", ()),
            "request_headers": keys.get("request_headers", ()),
            "response_headers": keys.get("response_headers", ()),
            "retries": keys.get("retries", DEFAULT_RETRIES), "retry_on": keys.get("retry_on", DEFAULT_RETRY_ON),
            "connect_timeout": keys.get("connect_timeout"), "mirror": mirror(name, keys, notes),
            "match": keys.get("match_header")}


def cors(name: str, keys: dict, refused: list[RouteRefusal], notes: list[str]) -> Cors | None:
    origins = keys.get("cors_origins")
    if origins is None:
        stray = [key for key in CORS_DETAILS if key in keys]
        if stray:
            notes.append(f"service {name}: {', '.join(stray)} without cors_origins answers no cross-origin "
                         "request")
        return None
    credentials = keys.get("cors_credentials", False)
    if origins == ("*",) and credentials:
        refused.append(RouteRefusal(name, "browsers never send credentials to any origin ('*'): name the "
                                    "origins; no cross-origin request is answered until then",
                                    key="cors_origins", value="*"))
        return None
    methods = keys.get("cors_methods", CORS_METHODS)
    return Cors(origins, tuple(sorted({*methods, "OPTIONS"})), keys.get("cors_headers", CORS_HEADERS), credentials,
                keys.get("cors_max_age", CORS_MAX_AGE))


def mirror(name: str, keys: dict, notes: list[str]) -> Mirror | None:
    """Its pool is the target's passing instances, found once the whole table is known (routes.hosts)."""
    target = keys.get("mirror")
    if target is None:
        if "mirror_percent" in keys:
            notes.append(f"service {name}: mirror_percent without mirror mirrors nothing")
        return None
    if target == name:
        notes.append(f"service {name}: mirror=service:{name} would copy every request to itself: not mirrored")
        return None
    return Mirror(target, keys.get("mirror_percent", 100), None)
