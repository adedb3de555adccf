"""Dynamic peers (pure): the route table's HTTP pools as the peer table nginx's Lua balancer reads.

With ``dynamic_peers`` on, the default http template renders each pool as an
upstream whose servers come from a shared dict (``renderer_peers.lua``), so a
change that only moves instances (one comes or goes, fails its checks,
changes weight, a canary is replaced) changes this table and not the
rendered configuration: it is pushed to nginx and causes no reload. Anything
else (a host, path, listener, certificate or option; a pool appearing or
emptying) changes the configuration and reloads as before.

A pool is dynamic when every server address is an IP address (the Lua
balancer connects to IPs; a host name would need nginx's resolver), which is
how Consul registrations usually are; a pool with a host name keeps its
static ``server`` lines. Stream (tcp/udp) pools always do: Debian ships no
stream Lua module.

A service with canary instances (both pools dynamic) is split in Lua too:
the table carries each split (its stable and canary pool and the canary's
share) and the location proxies to one upstream, ``_split_<service id>``,
whose balancer picks the side for each client, so a change of
``canary_percent`` (a label, or KV) is a push, not a reload.

The text format is the one ``renderer_peers.lua`` parses; the digest covers
the pools and splits only, so the same peers always give the same digest
and a version bump alone is no change.

A change costs what changed: a table is built from the previous one reusing
each pool whose route-table ``Pool`` is the same object (the route builder
hands out the same objects for unchanged services), the digest is a hash of
per-pool hashes, and what is pushed to an nginx holding the previous table
is a *patch*: the pools and splits that changed and the names of those gone,
applied by nginx only onto the table it was computed from (see
``renderer_peers.lua``). At 5,000 services x 3, a whole table is 15,000
lines and about 20 ms of Lua; a patch for one moved instance is four lines.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping

from renderer.routes.model import RouteTable, ip_port

# 2: with split lines. A table without splits is still written as 1: an nginx whose workers run the Lua
# module of an earlier version (upgraded renderer, no reload yet) takes it; a split comes with a template
# change, whose reload loads the module that reads 2.
FORMAT, FORMAT_WITH_SPLITS = "renderer-peers 1", "renderer-peers 2"


Peers = tuple[tuple[str, int, int], ...]  # (ip, port, weight), in the pool's order
Split = tuple[str, str, str, int]          # (service id, stable pool, canary pool, percent)
PATCH = "renderer-peers-patch"


@dataclasses.dataclass(frozen=True)
class PeerTable:
    pools: tuple[tuple[str, Peers], ...]  # (name, peers), by name
    splits: tuple[Split, ...] = ()        # by service id
    # pool name -> (the route table's Pool it was made from, or None, its entry in ``pools``, the entry's
    # text, the text's hash): what the next table reuses, and what the body and digest are made of
    parts: Mapping[str, tuple] = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.parts is None:
            object.__setattr__(self, "parts", {entry[0]: (None, entry, *_block(entry)) for entry in self.pools})

    @classmethod
    def of_data(cls, data, route_options) -> "PeerTable | None":
        """The table of a pass's template data; None when no template reads the route table."""
        table = data.evaluated(("routes", route_options))
        return cls.of(table) if isinstance(table, RouteTable) else None

    @classmethod
    def of(cls, table: RouteTable, previous: "PeerTable | None" = None) -> "PeerTable":
        """The peer table of ``table``; each pool that is the same object as in ``previous``'s route table is
        taken from ``previous`` as it was."""
        known = previous.parts if previous is not None else {}
        parts, pools = {}, []
        for pool in table.pools:
            seen = known.get(pool.name)
            if seen is not None and seen[0] is pool:
                part = seen
            elif not pool.servers or not pool.ip_only:
                continue
            else:
                entry = (pool.name, tuple((*ip_port(server.address), server.weight) for server in pool.servers))
                part = (pool, entry, *_block(entry))
            parts[pool.name] = part
            pools.append(part[1])
        splits = [(location.service_id, location.pool.name, location.canary.name, location.canary_percent)
                  for location in table.canaries if location.peer_split]
        return cls(tuple(pools), tuple(sorted(splits)), parts)  # table.pools is sorted by name

    def keeping(self, running: "PeerTable | None") -> "PeerTable":
        """This table plus the pools only ``running`` has, with their peers there.

        Pushed while nginx may still run a configuration whose upstreams read
        them (the reload that drops them not yet confirmed, or refused): a
        pool taken away early would answer 502 where nginx had peers.
        """
        if running is None:
            return self
        extra = [name for name in running.parts if name not in self.parts]
        ids = {split[0] for split in self.splits}
        extra_splits = tuple(split for split in running.splits if split[0] not in ids)
        if not extra and not extra_splits:
            return self
        parts = {**self.parts, **{name: running.parts[name] for name in extra}}
        return PeerTable(tuple(parts[name][1] for name in sorted(parts)), tuple(sorted(self.splits + extra_splits)),
                         parts)

    @functools.cached_property
    def body(self) -> str:
        text = "".join(part[2] for part in self._ordered_parts)
        return text + "".join(f"split {service_id} {stable} {canary} {percent}\n"
                              for service_id, stable, canary, percent in self.splits)

    @functools.cached_property
    def digest(self) -> str:
        """A hash of the pools' hashes and the splits: what the body holds, without hashing the body itself."""
        combined = hashlib.blake2b(digest_size=8)
        for part in self._ordered_parts:
            combined.update(part[3])
        for split in self.splits:
            combined.update(("split %s %s %s %d\n" % split).encode())
        return combined.hexdigest()

    @property
    def _ordered_parts(self):
        parts = self.parts
        return [parts[name] for name, _ in self.pools]

    def text(self, version: int) -> str:
        return f"{FORMAT_WITH_SPLITS if self.splits else FORMAT} {version} {self.digest}\n{self.body}"

    def patch(self, base: "PeerTable", version: int) -> str:
        """What turns ``base`` (the table nginx holds) into this one: the pools and splits that differ, whole,
        and the names of those gone. nginx applies it only onto ``base`` (``renderer_peers.lua``)."""
        lines = [f"{PATCH} {version} {self.digest} {base.digest}\n"]
        held = base.parts
        for entry in self.pools:
            seen = held.get(entry[0])
            if seen is None or (seen[1] is not entry and seen[1] != entry):
                lines.append(self.parts[entry[0]][2])
        lines += [f"drop {name}\n" for name in held if name not in self.parts]
        held_splits = set(base.splits)
        lines += ["split %s %s %s %d\n" % split for split in self.splits if split not in held_splits]
        ids = {split[0] for split in self.splits}
        lines += [f"unsplit {split[0]}\n" for split in base.splits if split[0] not in ids]
        return "".join(lines)

    @property
    def servers(self) -> int:
        return sum(len(peers) for _, peers in self.pools)


def _block(entry: tuple[str, Peers]) -> tuple[str, bytes]:
    """A pool's lines in the table, and their hash."""
    name, peers = entry
    text = f"pool {name}\n" + "".join(f"peer {ip} {port} {weight}\n" for ip, port, weight in peers)
    return text, hashlib.blake2b(text.encode(), digest_size=8).digest()
