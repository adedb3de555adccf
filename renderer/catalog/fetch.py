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

from renderer.render.api import CATALOG_KINDS, TemplateData
from . import model as catalog_module
from . import kv as kv_module
from . import node_dump
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
    new_index, dump, filtered = client.get_json(NODE_DUMP, params, timeout, decode=node_dump.decode)
    catalog = catalog_module.from_node_dump(dump, previous)
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
        self.kv_index = 0
        self.kv_prefix: str | None = None


def fill_missing(client: Consul, data, missing: set, kv_paths: set[str], fetched: Fetched,
                 consistency: str = "default"):
    """Return ``data`` completed with what ``missing`` asks for (non-blocking fetches).

    KV is fetched under the common prefix of every path in use plus the new
    ones, so one recursive read (and later one watch) answers them all.
    """
    catalog, kv = data.catalog, data.kv
    if catalog is None and any(d[0] in CATALOG_KINDS for d in missing):
        fetched.catalog_index, catalog = fetch_catalog(client, consistency=consistency)
        fetched.catalog = catalog
    missing_paths = {d[1] for d in missing if d[0] not in CATALOG_KINDS}
    if missing_paths:
        prefix = kv_module.common_prefix(kv_paths | missing_paths)
        fetched.kv_index, kv = fetch_kv(client, prefix, consistency=consistency)
        fetched.kv_prefix = prefix
    return TemplateData(catalog, kv, data.certificates, data.routes)
