"""Fetching catalog and KV data from Consul, blocking or not.

The whole catalog comes from one endpoint, ``/v1/internal/ui/nodes``: every
node with its service instances and checks, in one response, with one
``X-Consul-Index`` that moves on any catalog or health change. One blocking
query on it replaces the one-query-per-service pattern (consul-template's
``service`` makes one per call), which breaks past Consul 1.8's 200
connections per client. The endpoint is internal (Consul's UI uses it) but
stable in the 1.x line; the renderer holds at most three connections (catalog
watch, KV watch, one for on-demand fetches) whatever the catalog size.

KV is fetched recursively under one prefix: the longest common prefix of
every key and tree the templates read, so one watch covers them all.

``consistency = "stale"`` adds ``?stale`` to every read: any server answers
from its own state, so many renderers spread their reads over the followers
instead of all asking the leader (data may lag the leader by a few hundred
ms). Only the default namespace (and partition) is read: Consul Enterprise
namespaces are not supported.
"""

from __future__ import annotations

from agentkit.consul import Consul

from . import kv as kv_module
from . import node_dump
from .from_dump import from_node_dump
from .kv import KvSnapshot
from .model import Catalog

NODE_DUMP = "/v1/internal/ui/nodes"
DEFAULT_WAIT = 50.0  # seconds; under the HTTP timeout, and Consul adds up to wait/16 jitter


def _params(index: int, wait: float | None, consistency: str) -> tuple[dict, float | None]:
    params = {"stale": ""} if consistency == "stale" else {}
    if not index or wait is None:
        return params, None
    return {**params, "index": index, "wait": f"{int(wait)}s"}, wait + wait / 16 + 10


def fetch_catalog(client: Consul, index: int = 0, wait: float | None = None,
                  previous: Catalog | None = None, consistency: str = "default") -> tuple[int, Catalog]:
    params, timeout = _params(index, wait, consistency)
    known = previous._parts if previous is not None else ()  # nodes whose bytes did not change: not decoded
    new_index, dump, filtered = client.get_json(NODE_DUMP, params, timeout,
                                                decode=lambda body: node_dump.decode(body, known))
    catalog = from_node_dump(dump, previous)
    catalog.filtered_by_acls = filtered
    return new_index, catalog


def fetch_kv(client: Consul, prefix: str, index: int = 0, wait: float | None = None,
             consistency: str = "default") -> tuple[int, KvSnapshot]:
    params, timeout = _params(index, wait, consistency)
    params["recurse"] = "true"
    new_index, entries, _ = client.get_json(f"/v1/kv/{prefix}", params, timeout, absent_ok=True)
    return new_index, kv_module.from_consul_entries(prefix, entries)


class Fetched:
    """Data fetched on demand, with the indexes a watch can start from."""

    def __init__(self):
        self.catalog = None  # the last catalog fetched here, as Consul answered it
        self.catalog_index = 0
        self.kv_indexes: dict[str, int] = {}  # prefix read -> its index
