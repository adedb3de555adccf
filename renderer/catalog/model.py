"""The catalog as plain, immutable data: nodes, service instances, health.

Built from one of two sources, both pure functions of decoded JSON:

* Consul's node dump (``/v1/internal/ui/nodes``: every node with its services
  and checks, in one response; see :mod:`.fetch` for why), as decoded by
  :mod:`.node_dump`, by :mod:`.from_dump`, and
* a snapshot file (``renderer snapshot`` writes it, ``--catalog`` reads it), so
  a template can be tested with no cluster.

Every instance passes ``agentkit.nginx_safe`` before it is admitted; refused
ones are listed in ``Catalog.refused`` with the reason, for one warning each.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
import weakref
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from agentkit import nginx_safe
from .node_dump import ServiceEntry

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
_SEVERITY = {PASSING: 0, WARNING: 1, CRITICAL: 2}
SNAPSHOT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    address: str
    meta: Mapping[str, str]

    def as_json(self) -> dict:
        return {"name": self.name, "address": self.address, "meta": dict(self.meta)}


@dataclasses.dataclass(frozen=True)
class Instance:
    """One registered service instance, as templates see it."""

    id: str
    name: str
    address: str  # the service address, else the node's
    port: int
    tags: tuple[str, ...]
    meta: Mapping[str, str]
    node: str
    status: str
    kind: str = ""  # Consul's service kind: "" for a typical service, else connect-proxy, mesh-gateway ...
    withheld: tuple[str, ...] = ()  # meta keys whose values were unsafe for nginx: left out of ``meta``
    created: int = 0  # Consul's CreateIndex: which of two registrations came first (route ownership)

    @property
    def host_port(self) -> str:
        """``ADDRESS:PORT`` as nginx takes it, IPv6 in brackets."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @property
    def route(self) -> tuple[str, str, int]:
        """(name, address, port): what nginx routes to for this instance."""
        return self.name, self.address, self.port

    def as_json(self) -> dict:
        data = {"id": self.id, "name": self.name, "address": self.address, "port": self.port,
                "tags": list(self.tags), "meta": dict(self.meta), "node": self.node, "status": self.status}
        if self.kind:
            data["kind"] = self.kind
        if self.withheld:
            data["withheld"] = list(self.withheld)
        if self.created:
            data["created"] = self.created
        return data


@dataclasses.dataclass(frozen=True)
class CatalogRefusal:
    """An instance (or node) left out, or a value of one withheld, and why."""

    node: str
    service_id: str
    reason: str
    kept: bool = False  # only a tag or meta pair was withheld; the instance is in the catalog

    def __str__(self) -> str:
        if self.service_id:
            return f"service instance {self.service_id!r} on node {self.node!r}: {self.reason}"
        return f"node {self.node!r}: {self.reason}"

    @property
    def category(self) -> str:
        """What was unsafe, in a word (a metric label): name, address, port, id, tag, meta, node, ..."""
        first = self.reason.split(" ", 1)[0]
        if not self.service_id:
            return "node"
        return first if first in ("name", "address", "port", "id", "tag", "tags", "meta", "kind", "status") \
            else "other"

    @property
    def line(self) -> str:
        """The operator's warning."""
        return f"{self} (withheld from templates; the instance is kept)" if self.kept else f"skipped {self}"


def _tags_and_kind(group: tuple["Instance", ...]) -> tuple[tuple[str, ...], str]:
    """The union of a service's tags, sorted, and its kind; instances of one service usually agree."""
    first = group[0]
    if all(i.tags == first.tags and i.kind == first.kind for i in group):
        return _sorted_tags(first.tags), first.kind
    return tuple(sorted({tag for i in group for tag in i.tags})), min(i.kind for i in group)


@functools.lru_cache(maxsize=4096)
def _sorted_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(tags)))


class Catalog:
    """Immutable view of the catalog with the lookups templates need, precomputed.

    ``filtered_by_acls`` says Consul hid part of the catalog from the token;
    ``imported`` counts the nodes imported from peered clusters that were left
    out. Neither takes part in comparisons.

    ``base`` and ``changed`` say how this catalog differs from another, when
    it was made from it (the previous node dump's, or the one it leaves
    services out of): only the services named in ``changed`` may differ, and
    every other service's instances are the same tuple object in both. That
    lets the route table be rebuilt for those services alone. ``base`` is a
    weak reference: a catalog does not keep its ancestors alive.
    """

    filtered_by_acls: bool = False
    imported: int = 0
    _of_parts: bool = False  # its instances are exactly its node parts' (from_node_dump): a base to update

    def __init__(self, nodes: Iterable[Node], instances: Iterable[Instance], refused: Iterable[CatalogRefusal] = ()):
        ordered = sorted(instances, key=operator.attrgetter("name", "node", "id"))
        by_name: dict[str, list[Instance]] = {}
        for instance in ordered:
            by_name.setdefault(instance.name, []).append(instance)
        self._set(tuple(sorted(nodes, key=operator.attrgetter("name"))),
                  {name: tuple(group) for name, group in by_name.items()}, tuple(refused))
        self.__dict__["instances"] = tuple(ordered)

    def _set(self, nodes: tuple[Node, ...], by_name: dict[str, tuple[Instance, ...]],
             refused: tuple[CatalogRefusal, ...], passing: dict | None = None, services: tuple | None = None,
             base: "Catalog | None" = None, changed: frozenset[str] = frozenset()) -> None:
        """``by_name`` in name order, each group by node and id."""
        self.nodes = nodes
        self.refused = refused
        self._parts: dict = {}  # see from_node_dump
        self._by_name = by_name
        # What templates ask most (service(name), passing instances only), computed once per catalog.
        self._passing = passing if passing is not None else {
            name: tuple(i for i in group if i.status == PASSING) for name, group in by_name.items()}
        # A service's kind is its instances' (one name is one kind in practice; a typical one wins a mix).
        self._services = services if services is not None else tuple(
            (name, *_tags_and_kind(group)) for name, group in by_name.items())
        self.base = weakref.ref(base) if base is not None else None
        self.changed = changed

    @functools.cached_property
    def instances(self) -> tuple[Instance, ...]:
        """Every instance, by name, node and id."""
        return tuple(itertools.chain.from_iterable(self._by_name.values()))

    @functools.cached_property
    def routes(self) -> frozenset[tuple[str, str, int]]:
        """(name, address, port) of every instance: what nginx could route to."""
        base = self.base() if self.base is not None else None
        if base is not None and "routes" in base.__dict__:  # what changed, on what the base computed
            routes = {i.route for name in self.changed for i in base.instances_of(name)}
            return (base.routes - routes) | {i.route for name in self.changed for i in self.instances_of(name)}
        return frozenset(i.route for i in self.instances)

    def services(self) -> tuple[tuple[str, tuple[str, ...], str], ...]:
        """(name, union of tags, kind) for every service, sorted by name."""
        return self._services

    def instances_of(self, name: str, passing: bool = False) -> tuple[Instance, ...]:
        return (self._passing if passing else self._by_name).get(name, ())

    def without(self, names: frozenset[str]) -> "Catalog":
        """This catalog less every instance of the services ``names`` (what nginx refused, left out)."""
        kept = Catalog.__new__(Catalog)
        gone = [name for name in names if name in self._by_name]
        kept._set(self.nodes, {n: g for n, g in self._by_name.items() if n not in names}, self.refused,
                  {n: g for n, g in self._passing.items() if n not in names},
                  tuple(entry for entry in self._services if entry[0] not in names) if gone else self._services,
                  self, frozenset(gone))
        kept._parts, kept.filtered_by_acls, kept.imported = self._parts, self.filtered_by_acls, self.imported
        return kept

    def updated(self, nodes: tuple[Node, ...], refused: tuple[CatalogRefusal, ...], changed_nodes: set[str],
                names: set[str], arrived: Iterable[Instance]) -> "Catalog":
        """This catalog with the instances on ``changed_nodes`` replaced by ``arrived`` (those nodes' instances
        now), where only the services ``names`` may differ: those are looked at again, and each keeps its
        tuple when its instances are the same objects as before."""
        fresh: dict[str, list[Instance]] = {}
        for instance in arrived:
            if instance.name in names:
                fresh.setdefault(instance.name, []).append(instance)
        by_name, passing = dict(self._by_name), dict(self._passing)
        changed = set()
        for name in names:
            old = self._by_name.get(name, ())
            group = [i for i in old if i.node not in changed_nodes] + fresh.get(name, [])
            group.sort(key=_NODE_AND_ID)
            if len(group) == len(old) and all(a is b for a, b in zip(group, old)):
                continue
            changed.add(name)
            if group:
                by_name[name] = tuple(group)
                passing[name] = tuple(i for i in group if i.status == PASSING)
            else:
                del by_name[name], passing[name]
        services = self._services
        if changed:
            if any(name not in self._by_name or name not in by_name for name in changed):  # a service came or went
                by_name = dict(sorted(by_name.items()))
                passing = {name: passing[name] for name in by_name}
                services = None
            elif any(_tags_and_kind(by_name[name]) != _tags_and_kind(self._by_name[name]) for name in changed):
                services = None
        catalog = Catalog.__new__(Catalog)
        catalog._set(nodes, by_name, refused, passing, services, self, frozenset(changed))
        return catalog

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Catalog) and self.nodes == other.nodes
                and self.instances == other.instances)

    __hash__ = None  # compared by value, never hashed

    def as_json(self) -> dict:
        return {"version": SNAPSHOT_VERSION, "nodes": [n.as_json() for n in self.nodes],
                "instances": [i.as_json() for i in self.instances]}


_NODE_AND_ID = operator.attrgetter("node", "id")


def aggregate_status(statuses: Iterable[str]) -> str:
    """The worst status wins, as in Consul's health endpoints; no check is passing."""
    worst = PASSING
    for status in statuses:
        if _SEVERITY.get(status, 2) > _SEVERITY[worst]:
            worst = status if status in _SEVERITY else CRITICAL
    return worst


def _frozen_meta(meta) -> Mapping[str, str]:
    return MappingProxyType(dict(meta or {}))


def _admit(service_id, name, address, port, tags, meta) -> str | None:
    """Why an instance must be left out whole, or None."""
    problem = (nginx_safe.name_problem(name) or nginx_safe.routable_address_problem(address)
               or nginx_safe.port_problem(port))
    if problem:
        return problem
    if not isinstance(tags, (list, tuple)):
        return "tags are not a list"
    if not isinstance(meta, Mapping):
        return "meta is not an object"
    if nginx_safe.value_problem("id", service_id):
        return f"id {nginx_safe.show(service_id)} is unsafe"
    return None


def _withhold(tags, meta) -> tuple[tuple[str, ...], dict, tuple[str, ...], list[str]]:
    """(safe tags, safe meta, withheld meta keys, one reason per withheld value)."""
    reasons = []
    safe_tags = []
    for tag in tags:
        problem = nginx_safe.value_problem("tag", tag)
        if problem:
            reasons.append(problem)
        else:
            safe_tags.append(tag)
    safe_meta, withheld = {}, []
    for key, value in meta.items():
        problem = nginx_safe.value_problem("meta key", key) or nginx_safe.value_problem(f"meta {key}", value)
        if problem:
            reasons.append(problem)
            if not nginx_safe.value_problem("meta key", key):
                withheld.append(key)
        else:
            safe_meta[key] = value
    return tuple(safe_tags), safe_meta, tuple(sorted(withheld)), reasons


def admitted_node(name, address, meta) -> Node | CatalogRefusal:
    """A node is left out whole when its name or address is unsafe; unsafe meta pairs are dropped."""
    problem = nginx_safe.node_name_problem(name) or nginx_safe.address_problem(address)
    if problem:
        return CatalogRefusal(str(name), "", problem)
    return Node(name, address, _frozen_meta(_safe_meta(meta)))


def admitted_instance(node_name: str, node_address: str, service: ServiceEntry) -> tuple[Instance | None, tuple]:
    """The instance (None: left out) and what was withheld or why it was left out."""
    service_id = service.ID
    address = service.Address or node_address
    tags, meta = service.Tags or (), service.Meta or {}
    problem = (_admit(service_id, service.Service, address, service.Port, tags, meta)
               or (nginx_safe.value_problem("kind", service.Kind) if service.Kind else None))
    if problem:
        return None, (CatalogRefusal(node_name, service_id, problem),)
    tags, meta, withheld, reasons = _withhold(tags, meta)
    return (Instance(service_id, service.Service, address, service.Port, tags, _frozen_meta(meta), node_name,
                     PASSING, service.Kind, withheld, service.CreateIndex or 0),
            tuple(CatalogRefusal(node_name, service_id, reason, kept=True) for reason in reasons))


def _safe_meta(meta) -> dict:
    if not isinstance(meta, Mapping):
        return {}
    return {k: v for k, v in meta.items()
            if not nginx_safe.value_problem("meta key", k) and not nginx_safe.value_problem("meta", v)}


def from_snapshot(data: Mapping) -> Catalog:
    """Build a catalog from a snapshot (the ``--catalog`` format).

    Hand-written snapshots may leave out ``status`` (passing), ``address``
    (the node's), ``tags``, ``meta`` and ``id`` (``name-port``). Untrusted-value
    rules apply here too, so a snapshot reproduces what a live render does.
    """
    if not isinstance(data, Mapping):
        raise ValueError("a snapshot is a JSON object with 'nodes' and 'instances'")
    nodes, refused = [], []
    addresses = {}
    for raw in data.get("nodes") or ():
        node = admitted_node(raw.get("name"), raw.get("address"), raw.get("meta"))
        if isinstance(node, CatalogRefusal):
            refused.append(node)
            continue
        nodes.append(node)
        addresses[node.name] = node.address
    instances = []
    for raw in data.get("instances") or ():
        node = raw.get("node", "")
        name, port = raw.get("name"), raw.get("port")
        service_id = raw.get("id") or f"{name}-{port}"
        address = raw.get("address") or addresses.get(node, "")
        tags, meta = raw.get("tags") or [], raw.get("meta") or {}
        status, kind = raw.get("status", PASSING), raw.get("kind", "")
        problem = _admit(service_id, name, address, port, tags, meta)
        if not problem and status not in _SEVERITY:
            problem = f"status {status!r} is not passing, warning or critical"
        if not problem and not isinstance(kind, str):
            problem = f"kind {kind!r} is not a string"
        created = raw.get("created", 0)
        if not problem and (not isinstance(created, int) or isinstance(created, bool) or created < 0):
            problem = f"created {created!r} is not a Consul index"
        if problem:
            refused.append(CatalogRefusal(node, str(service_id), problem))
            continue
        tags, meta, withheld, reasons = _withhold(tags, meta)
        refused += [CatalogRefusal(node, str(service_id), reason, kept=True) for reason in reasons]
        # A snapshot of a live catalog names what was withheld there, so its routes refuse alike.
        withheld = tuple(sorted({*withheld, *(str(key) for key in raw.get("withheld") or ())}))
        instances.append(Instance(service_id, name, address, port, tags, _frozen_meta(meta), node, status, kind,
                                  withheld, created))
    return Catalog(nodes, instances, refused)
