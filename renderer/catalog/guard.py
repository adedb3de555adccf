"""Holding back a catalog that looks like Consul lost its state, not like a deploy.

A dev agent that restarts comes back empty; a server restored from an old
snapshot comes back with an index that went backwards. Rendering that at
once would empty nginx's upstreams seconds before the registrars put the
services back (consul-template users know it as "empty files after Consul
lost its state"). So a new catalog is *suspicious* when

* the index went backwards and some instance we route to is gone, or
* more than half of the instances we route to vanish at once (and there were
  at least ``min_instances``);

and then the instances it lost stay in nginx while it is held, for at most
``grace`` seconds; everything else in it (additions, new ports, health) is
rendered at once, so a deploy during an outage still reaches nginx. The hold
ends as soon as the new catalog no longer lacks any of them (the services
came back), or when the grace period ends (the loss was real). Pure: time is
passed in.
"""

from __future__ import annotations

import logging

from .model import Catalog, Instance, Node

log = logging.getLogger("renderer")


class CatalogGuard:
    def __init__(self, grace: float = 30.0, min_instances: int = 10, drop_ratio: float = 0.5):
        self.grace, self.min_instances, self.drop_ratio = grace, min_instances, drop_ratio
        self.held: Catalog | None = None        # the newest catalog as Consul has it, while holding
        self.kept: tuple[Instance, ...] = ()    # what the hold keeps routing to
        self.kept_nodes: dict[str, Node] = {}
        self.since: float | None = None

    @property
    def holding(self) -> bool:
        return self.held is not None

    def offer(self, current: Catalog | None, new: Catalog, reset: bool, now: float) -> Catalog:
        """The catalog to render now: ``new``, or while holding ``new`` plus the instances it lost."""
        if current is None or self.grace <= 0:
            return self._accept(new)
        if self.holding:
            self.held = new
            missing = self._missing(new)
            if not missing:
                log.info("catalog recovered after %.1fs: rendering it", now - self.since)
                return self._accept(new)
            return _with_instances(new, missing, self.kept_nodes)
        before = current.routes
        lost = before - new.routes
        if reset and lost:
            reason = "the catalog index went backwards (Consul restarted or restored)"
        elif len(before) >= self.min_instances and len(lost) > self.drop_ratio * len(before):
            reason = f"{len(lost)} of {len(before)} instances vanished at once"
        else:
            return self._accept(new)
        log.warning("%s: keeping its %d lost instance(s) in nginx for up to %gs unless they come back; "
                    "other changes are rendered meanwhile", reason, len(lost), self.grace)
        self.kept = tuple(i for i in current.instances if i.route in lost)
        self.kept_nodes = {node.name: node for node in current.nodes}
        self.held, self.since = new, now
        return _with_instances(new, self.kept, self.kept_nodes)

    def missing(self) -> tuple[Instance, ...]:
        """The instances the hold keeps in nginx that the newest catalog still lacks (none when not holding)."""
        return self._missing(self.held) if self.holding else ()

    def due_in(self, now: float) -> float | None:
        if not self.holding:
            return None
        return max(0.0, self.since + self.grace - now)

    def release(self, now: float) -> Catalog | None:
        """The newest catalog once the grace period is over (the loss was real), else None."""
        if not self.holding or now < self.since + self.grace:
            return None
        log.warning("the catalog stayed without %d of the kept instance(s) for %gs: accepting it",
                    len(self._missing(self.held)), self.grace)
        return self._accept(self.held)

    def _missing(self, catalog: Catalog) -> tuple[Instance, ...]:
        routes = catalog.routes
        return tuple(i for i in self.kept if i.route not in routes)

    def _accept(self, catalog: Catalog) -> Catalog:
        self.held = self.since = None
        self.kept, self.kept_nodes = (), {}
        return catalog


def _with_instances(catalog: Catalog, extra: tuple[Instance, ...], nodes: dict[str, Node]) -> Catalog:
    """``catalog`` plus ``extra`` instances (and the nodes they live on, if it lost those too)."""
    present = {node.name for node in catalog.nodes}
    extra_nodes = [nodes[name] for name in sorted({i.node for i in extra} - present) if name in nodes]
    merged = Catalog([*catalog.nodes, *extra_nodes], [*catalog.instances, *extra], catalog.refused)
    merged._parts = catalog._parts  # the next dump is compared with what Consul had, not with the kept extras
    return merged
