"""Decoding Consul's node dump (``/v1/internal/ui/nodes``) into the few fields the catalog reads.

The dump is megabytes at a few thousand services (about 250 bytes per
instance, 650 from a dev agent, which pretty-prints) and it is decoded on
every catalog change. Most of it is fields we never read: weights, proxy and
Connect settings, tagged addresses, check outputs. A typed msgspec decoder
skips those without building Python objects for them, and its structs are
not tracked by the cyclic garbage collector (they cannot form cycles: they
hold strings, numbers, tuples of strings and string maps). Measured on the
5,000 x 3 dump, against decoding it whole with orjson: 8 ms instead of 32.

Consul 1.13+ appends the nodes imported from peered clusters, marked with
``PeerName`` (their names may collide with local ones); services carry
``Kind`` (``connect-proxy``, ``mesh-gateway`` ... ; empty for a typical
service). Both are read; the catalog leaves imported nodes out.

A wake-up mostly changes one node of many. The dump is first split into each
node's bytes (msgspec skips JSON without building objects: 4 ms of the 17 a
whole decode takes at 5,000 x 3), and only a node whose bytes are not those
of the previous dump is decoded; the catalog reuses what it built from the
others.

The types are the ones Consul's Go structs guarantee (a port is always an
integer, tags a list of strings, meta a string map, and each may be null).
A dump that does not fit them is refused whole (``msgspec.DecodeError``
naming the path of the first misfit, which ``Consul.get_json`` turns into
the operator's line) and the watch keeps the last good config: that would
be a Consul whose API changed or an address that is not Consul, not a
hostile registration (hostile *values* fit the types and are judged by
``agentkit.nginx_safe`` one instance at a time).
"""

from __future__ import annotations

from collections.abc import Container
from typing import NamedTuple

import msgspec


class ServiceEntry(msgspec.Struct, frozen=True, gc=False):
    ID: str = ""
    Service: str = ""
    Tags: tuple[str, ...] | None = None
    Address: str = ""
    Meta: dict[str, str] | None = None
    Port: int = 0
    Kind: str = ""
    CreateIndex: int | None = None
    ModifyIndex: int | None = None


class CheckEntry(msgspec.Struct, frozen=True, gc=False):
    ServiceID: str = ""
    Status: str = ""


class NodeEntry(msgspec.Struct, frozen=True, gc=False):
    Node: str = ""
    Address: str = ""
    PeerName: str = ""
    Meta: dict[str, str] | None = None
    Services: tuple[ServiceEntry, ...] | None = None
    Checks: tuple[CheckEntry, ...] | None = None


class Dumped(NamedTuple):
    """One node of the dump: its bytes, and its entry (None: its bytes are in the previous dump, unchanged)."""

    raw: bytes
    entry: NodeEntry | None


_NODES = msgspec.json.Decoder(list[msgspec.Raw] | None)
_NODE = msgspec.json.Decoder(NodeEntry)


def decode(body: bytes, known: Container[bytes] = ()) -> list[Dumped]:
    """The node dump's nodes, those whose bytes are in ``known`` left undecoded (msgspec.DecodeError if it
    does not fit Consul's own types)."""
    dumped = []
    for position, raw in enumerate(_NODES.decode(body) or ()):
        raw = bytes(raw)
        dumped.append(Dumped(raw, None if raw in known else decode_node(raw, position)))
    return dumped


def decode_node(raw: bytes, position: int = 0) -> NodeEntry:
    try:
        return _NODE.decode(raw)
    except msgspec.ValidationError as error:  # name the node's place in the whole dump, as one decode would
        raise msgspec.ValidationError(str(error).replace("at `$", f"at `$[{position}]", 1)) from None
