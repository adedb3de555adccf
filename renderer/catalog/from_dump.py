"""A catalog from Consul's node dump, built in proportion to what changed since the previous one (pure).

Each node of the dump makes a part (its Node, instances and refusals); a node
whose bytes are the previous dump's keeps its part, and the catalog is the
previous one updated for the services with an instance on a node that
changed (:meth:`.model.Catalog.updated`). Every instance is admitted by the
rules of :mod:`.model` (``agentkit.nginx_safe``).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Iterable, Mapping

from . import node_dump
from .model import Catalog, CatalogRefusal, Instance, Node, admitted_instance, admitted_node, aggregate_status
from .node_dump import Dumped, NodeEntry


@dataclasses.dataclass(frozen=True, slots=True)
class _NodePart:
    """What one node of a node dump makes: its Node (None: refused, or imported from a peer), instances,
    refusals, and each service's (version, instance, notes) for the next dump's unchanged services."""

    node: Node | None
    instances: tuple[Instance, ...]
    refused: tuple[CatalogRefusal, ...]
    imported: bool
    memo: dict


# Past this share of the services changed, a catalog is built whole: cheaper than updating.
WHOLE_ABOVE = 0.5


def from_node_dump(dump: Iterable[Dumped], previous: Catalog | None = None) -> Catalog:
    """Build a catalog from ``/v1/internal/ui/nodes``, decoded by ``renderer.node_dump``.

    With ``previous``, a node whose bytes are the previous dump's is not
    looked at again: what it made is reused. On a node that changed, an
    instance whose Consul ``ModifyIndex`` (and node address) did not move is
    not checked again: the previous object is reused, with a new status only
    if its checks changed. The catalog is then ``previous`` updated for the
    services with an instance on a changed node (:meth:`Catalog.updated`).
    That keeps a wake-up in a large catalog cheap, and makes the comparisons
    after it mostly identity checks.
    """
    known = previous._parts if previous is not None else {}
    by_node = {part.node.name: part for part in known.values() if part.node is not None}
    parts: dict[bytes, _NodePart] = {}
    for raw, entry in dump:
        part = known.get(raw)
        if part is None:
            part = _node_part(entry if entry is not None else node_dump.decode_node(raw), by_node)
        parts[raw] = part
    nodes = tuple(sorted((part.node for part in parts.values() if part.node is not None),
                         key=operator.attrgetter("name")))
    refused = tuple(itertools.chain.from_iterable(part.refused for part in parts.values()))
    kept = {id(part) for part in parts.values()}
    departed = [part for part in known.values() if id(part) not in kept]
    reused = {id(part) for part in known.values()}
    arrived = [part for part in parts.values() if id(part) not in reused]
    names = _names_changed(departed, arrived) if previous is not None and previous._of_parts else None
    if names is not None and len(names) <= WHOLE_ABOVE * len(previous.services()):
        changed_nodes = {part.node.name for part in (*departed, *arrived) if part.node is not None}
        catalog = previous.updated(nodes, refused, changed_nodes, names,
                                   itertools.chain.from_iterable(part.instances for part in arrived))
    else:
        catalog = Catalog(nodes, itertools.chain.from_iterable(part.instances for part in parts.values()), refused)
    catalog._parts, catalog._of_parts = parts, True
    catalog.imported = sum(part.imported for part in parts.values())
    return catalog


def _names_changed(departed: list[_NodePart], arrived: list[_NodePart]) -> set[str]:
    """The services with an instance that is not the same object on a node that changed (a node's services
    mostly are: the instances of unchanged services are reused)."""
    before = {part.node.name: part for part in departed if part.node is not None}
    names = set()
    for part in arrived:
        old = before.pop(part.node.name, None) if part.node is not None else None
        if old is None:
            names.update(i.name for i in part.instances)
            continue
        kept = {id(i) for i in old.instances}
        names.update(i.name for i in part.instances if id(i) not in kept)
        now = {id(i) for i in part.instances}
        names.update(i.name for i in old.instances if id(i) not in now)
    for old in before.values():
        names.update(i.name for i in old.instances)
    return names


def _node_part(entry: NodeEntry, by_node: Mapping[str, _NodePart]) -> _NodePart:
    if entry.PeerName:  # imported from a peered cluster (Consul 1.13+): not ours to route
        return _NodePart(None, (), (), True, {})
    node_name, node_address = entry.Node, entry.Address
    node = admitted_node(node_name, node_address, entry.Meta)
    if isinstance(node, CatalogRefusal):
        return _NodePart(None, (), (node,), False, {})
    before = by_node.get(node_name)
    memo = before.memo if before is not None else {}
    new_memo: dict = {}
    instances, refused = [], []
    node_checks, service_checks = [], {}
    for check in entry.Checks or ():
        if check.ServiceID:
            service_checks.setdefault(check.ServiceID, []).append(check.Status)
        else:
            node_checks.append(check.Status)
    node_status = aggregate_status(node_checks)
    for service in entry.Services or ():
        service_id = service.ID
        version = (service.ModifyIndex, node_address)
        seen = memo.get(service_id)
        if seen is not None and seen[0] == version and version[0] is not None:
            built, notes = seen[1], seen[2]
        else:
            built, notes = admitted_instance(node_name, node_address, service)
        new_memo[service_id] = (version, built, notes)
        refused += notes
        if built is None:
            continue
        own = service_checks.get(service_id)
        status = aggregate_status([node_status, *own]) if own else node_status
        instances.append(built if built.status == status else dataclasses.replace(built, status=status))
    return _NodePart(node, tuple(instances), tuple(refused), False, new_memo)
