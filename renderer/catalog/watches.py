"""The loop's watches: one blocking query on the catalog while a template reads it, one on KV per top-level
folder templates read keys and trees in (the route settings among them); each follows what the templates read
in their last renders, never more.

They only deliver :class:`.watch.Update` values (``deliver`` is the loop's
queue put); the loop owns every decision. :class:`CatalogRemarks` says what
a catalog as Consul answered it says beside its data (ACL filtering, peered
nodes left out), once per change of mind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentkit.consul import Consul

from .fetch import Fetched, fetch_catalog, fetch_kv
from .kv import prefixes
from .model import Catalog
from .watch import BlockingWatch, Update

log = logging.getLogger("renderer")


class CatalogFetcher:
    """Keeps the previous catalog so unchanged instances are reused (cheap comparisons)."""

    def __init__(self, client: Consul, consistency: str, previous: Catalog | None = None):
        self.client = client
        self.consistency = consistency
        self.previous = previous

    def __call__(self, index: int, wait: float):
        index, catalog = fetch_catalog(self.client, index, wait, self.previous, self.consistency)
        self.previous = catalog
        return index, catalog


def blocking_watch(source: str, fetch, deliver, wait: float, start_index: int) -> BlockingWatch:
    return BlockingWatch(source, fetch, deliver, wait, start_index=start_index).start()


class Watches:
    def __init__(self, connect: Callable[[], Consul], consistency: str, deliver: Callable[[Update], None],
                 wait: float, factory=blocking_watch):
        """``connect()`` makes a client of its own for each watch (a blocking query holds its connection)."""
        self.connect, self.consistency, self.deliver, self.wait, self.factory = (
            connect, consistency, deliver, wait, factory)
        self.catalog_watch = None
        self.kv_watches: dict[str, object] = {}  # prefix -> its watch

    def follow(self, uses_catalog: bool, kv_paths: set[str], catalog: Catalog | None, fetched: Fetched) -> bool:
        """Watch what templates read now; False when the catalog is no longer read (the loop drops it)."""
        if uses_catalog:
            if self.catalog_watch is None:
                fetcher = CatalogFetcher(self.connect(), self.consistency, catalog)
                self.catalog_watch = self.factory("catalog", fetcher, self.deliver, self.wait, fetched.catalog_index)
        elif self.catalog_watch is not None:
            self.catalog_watch.stop()
            self.catalog_watch = None
        wanted = prefixes(kv_paths)
        for prefix in [p for p in self.kv_watches if p not in wanted]:
            self.kv_watches.pop(prefix).stop()
        for prefix in sorted(wanted - set(self.kv_watches)):
            client, consistency = self.connect(), self.consistency
            self.kv_watches[prefix] = self.factory(
                "kv", lambda index, wait, prefix=prefix: fetch_kv(client, prefix, index, wait, consistency),
                self.deliver, self.wait, fetched.kv_indexes.get(prefix, 0))
        return uses_catalog

    def stop(self) -> None:
        for watch in (self.catalog_watch, *self.kv_watches.values()):
            if watch is not None:
                watch.stop()
        self.catalog_watch = None
        self.kv_watches = {}


class CatalogRemarks:
    """What a catalog as Consul answered it says beside its data, said once per change of mind."""

    def __init__(self):
        self.last: Catalog | None = None
        self.filtered_warned = False
        self.imported_said = 0

    def observe(self, catalog: Catalog) -> None:
        if catalog is self.last:
            return
        self.last = catalog
        if catalog.filtered_by_acls and not self.filtered_warned:
            log.warning("Consul filtered the catalog by ACLs (X-Consul-Results-Filtered-By-ACLs): the renderer's "
                        "token cannot read every node or service, so nginx gets only the part it sees; grant "
                        "node_prefix \"\" and service_prefix \"\" read (README, ACL tokens)")
        self.filtered_warned = catalog.filtered_by_acls
        if catalog.imported and not self.imported_said:
            log.info("left out %d node(s) imported from peered clusters (PeerName): only this cluster's "
                     "services are routed", catalog.imported)
        self.imported_said = catalog.imported
