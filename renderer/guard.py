"""Holding back a catalog that looks like Consul lost its state, not like a deploy.

A dev agent that restarts comes back empty; a server restored from an old
snapshot comes back with an index that went backwards. Rendering that at
once would empty nginx's upstreams seconds before the registrars put the
services back (consul-template users know it as "empty files after Consul
lost its state"). So a new catalog is *suspicious* when

* the index went backwards and some instance we route to is gone, or
* more than half of the instances we route to vanish at once (and there were
  at least ``min_instances``);

and then the last good catalog stays in force while the new one is held, for
at most ``grace`` seconds. A held catalog is accepted as soon as it no longer
loses anything (the services came back), or when the grace period ends (the
loss was real). Pure: time is passed in.
"""

from __future__ import annotations

import logging

from .catalog import Catalog

log = logging.getLogger("renderer")


class CatalogGuard:
    def __init__(self, grace: float = 30.0, min_instances: int = 10, drop_ratio: float = 0.5):
        self.grace, self.min_instances, self.drop_ratio = grace, min_instances, drop_ratio
        self.held: Catalog | None = None
        self.since: float | None = None

    @property
    def holding(self) -> bool:
        return self.held is not None

    def offer(self, current: Catalog | None, new: Catalog, reset: bool, now: float) -> Catalog | None:
        """The catalog to render now, or None to keep ``current`` in force."""
        if current is None or self.grace <= 0:
            return self._accept(new)
        before = current.routes
        lost = before - new.routes
        if self.holding:
            if not lost:
                log.info("catalog recovered after %.1fs: rendering it", now - self.since)
                return self._accept(new)
            self.held = new
            return None
        if reset and lost:
            reason = "the catalog index went backwards (Consul restarted or restored)"
        elif len(before) >= self.min_instances and len(lost) > self.drop_ratio * len(before):
            reason = f"{len(lost)} of {len(before)} instances vanished at once"
        else:
            return self._accept(new)
        log.warning("%s: keeping the last good config for up to %gs unless the services come back",
                    reason, self.grace)
        self.held, self.since = new, now
        return None

    def due_in(self, now: float) -> float | None:
        if not self.holding:
            return None
        return max(0.0, self.since + self.grace - now)

    def release(self, now: float) -> Catalog | None:
        """The held catalog once its grace period is over, else None."""
        if not self.holding or now < self.since + self.grace:
            return None
        log.warning("the catalog stayed without %s for %gs: accepting it", "the missing instances", self.grace)
        return self._accept(self.held)

    def _accept(self, catalog: Catalog) -> Catalog:
        self.held = self.since = None
        return catalog
