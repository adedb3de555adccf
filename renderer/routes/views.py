"""The route table's views of its hosts: every pool, every location, one location per service (pure).

A table the builder made from the last one by building a few hosts again
(``RouteTable.with_hosts``) takes its views from the last table's,
replacing what those hosts held, rather than walking every host again: at
5,000 services that is what keeps an instance move's cost independent of
the catalog's size. Both ways give the same views (tests compare them).
"""

from __future__ import annotations

from collections.abc import Iterable


def host_pools(host) -> Iterable:
    """The pools the host's locations proxy to (stable, canary, auth, mirror)."""
    for location in (*host.http, *host.https, *host.h2c):
        if location.action in ("redirect", "maintenance"):
            continue
        for pool in (location.pool, location.canary, location.auth.pool if location.auth else None,
                     location.mirror.pool if location.mirror else None):
            if pool is not None:
                yield pool


def host_locations(host) -> Iterable:
    for location in (*host.https, *host.http, *host.h2c):
        if location.action != "redirect":
            yield location


def pools(hosts) -> tuple:
    """Every pool an HTTP location proxies to, each once, by name."""
    return _first_of_each((pool for host in hosts for pool in host_pools(host)), pool_name)


def locations(hosts) -> tuple:
    """Every distinct location (a route served on both listeners counts once), by id."""
    return _first_of_each((location for host in hosts for location in host_locations(host)), location_id)


def services(all_locations) -> tuple:
    """One location per routed service: its first by id."""
    return _first_of_each(all_locations, service_id)


def _first_of_each(entries, key) -> tuple:
    """The first entry of each key, by key."""
    found: dict = {}
    for entry in entries:
        found.setdefault(key(entry), entry)
    return tuple(found[name] for name in sorted(found))


def index(entries: tuple, key) -> dict:
    """Each entry's place in ``entries``, by its key."""
    return {key(entry): place for place, entry in enumerate(entries)}


def _updated(previous: tuple, places: dict, key, gone: list, came: list) -> tuple | None:
    """``previous`` with the entries ``gone`` replaced by those of the same key in ``came``; None when the
    keys are not the same (then the view is computed whole)."""
    new = {key(entry): entry for entry in came}
    if len(new) != len({key(entry) for entry in gone}) or any(key(entry) not in new for entry in gone):
        return None
    entries = list(previous)
    for name, entry in new.items():
        place = places.get(name)
        if place is None:
            return None
        entries[place] = entry
    return tuple(entries)


def updated_pools(previous: tuple, places: dict, replaced: list[tuple]) -> tuple | None:
    """The pools of a table whose hosts are the previous table's with (old, new) hosts ``replaced``, from the
    previous table's; None unless the same pool names come and go. Every host referring to a pool whose
    service changed is among them (the builder rebuilds them all)."""
    return _updated(previous, places, pool_name, [pool for old, _ in replaced for pool in host_pools(old)],
                    [pool for _, new in replaced for pool in host_pools(new)])


def updated_locations(previous: tuple, places: dict, replaced: list[tuple]) -> tuple | None:
    return _updated(previous, places, location_id,
                    [location for old, _ in replaced for location in host_locations(old)],
                    [location for _, new in replaced for location in host_locations(new)])


def updated_services(previous: tuple, places: dict, came: list) -> tuple | None:
    """One location per service, from the previous table's: a location that came in place of one with its id
    takes that one's place."""
    entries = list(previous)
    for location in came:
        place = places.get(location.service_id)
        if place is None:
            return None
        if entries[place].id == location.id:
            entries[place] = location
    return tuple(entries)


def pool_name(pool) -> str:
    return pool.name


def location_id(location) -> str:
    return location.id


def service_id(location) -> str:
    return location.service_id
