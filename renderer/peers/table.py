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
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

from renderer.routes.model import RouteTable, ip_port

# 2: with split lines. A table without splits is still written as 1: an nginx whose workers run the Lua
# module of an earlier version (upgraded renderer, no reload yet) takes it; a split comes with a template
# change, whose reload loads the module that reads 2.
FORMAT, FORMAT_WITH_SPLITS = "renderer-peers 1", "renderer-peers 2"


@dataclasses.dataclass(frozen=True)
class PeerTable:
    pools: tuple[tuple[str, tuple[tuple[str, int, int], ...]], ...]  # (name, ((ip, port, weight), ...)), by name
    splits: tuple[tuple[str, str, str, int], ...] = ()  # (service id, stable pool, canary pool, percent), by id

    @classmethod
    def of_data(cls, data, route_options) -> "PeerTable | None":
        """The table of a pass's template data; None when no template reads the route table."""
        table = data.evaluated(("routes", route_options))
        return cls.of(table) if isinstance(table, RouteTable) else None

    @classmethod
    def of(cls, table: RouteTable) -> "PeerTable":
        pools = []
        for pool in table.pools:
            if not pool.servers or not pool.ip_only:
                continue
            peers = tuple((*ip_port(server.address), server.weight) for server in pool.servers)
            pools.append((pool.name, peers))
        splits = [(location.service_id, location.pool.name, location.canary.name, location.canary_percent)
                  for location in table.canaries if location.peer_split]
        return cls(tuple(sorted(pools)), tuple(sorted(splits)))

    def keeping(self, running: "PeerTable | None") -> "PeerTable":
        """This table plus the pools only ``running`` has, with their peers there.

        Pushed while nginx may still run a configuration whose upstreams read
        them (the reload that drops them not yet confirmed, or refused): a
        pool taken away early would answer 502 where nginx had peers.
        """
        if running is None:
            return self
        names = {name for name, _ in self.pools}
        extra = tuple(pool for pool in running.pools if pool[0] not in names)
        ids = {split[0] for split in self.splits}
        extra_splits = tuple(split for split in running.splits if split[0] not in ids)
        if not extra and not extra_splits:
            return self
        return PeerTable(tuple(sorted(self.pools + extra)), tuple(sorted(self.splits + extra_splits)))

    @functools.cached_property
    def body(self) -> str:
        lines = []
        for name, peers in self.pools:
            lines.append(f"pool {name}")
            lines += [f"peer {ip} {port} {weight}" for ip, port, weight in peers]
        lines += [f"split {service_id} {stable} {canary} {percent}" for service_id, stable, canary, percent in self.splits]
        return "\n".join(lines) + "\n"

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.body.encode()).hexdigest()[:16]

    def text(self, version: int) -> str:
        return f"{FORMAT_WITH_SPLITS if self.splits else FORMAT} {version} {self.digest}\n{self.body}"

    @property
    def servers(self) -> int:
        return sum(len(peers) for _, peers in self.pools)
