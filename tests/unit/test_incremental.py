"""A change costs what changed: each shorter way gives what the whole way gives, over random catalog changes.

The catalog from a node dump built from the previous one (only changed nodes
decoded, only changed services looked at again), the route table built by a
builder that remembers its last build (only changed hosts built again), the
peer table built from the last one, the patch that turns the table nginx
holds into the new one, and the default template's file rendered with the
texts of unchanged parts kept: each is compared with the same thing made from
nothing, after every step of a random walk through catalog changes (moves,
arrivals, departures, failing checks, new hosts and paths, canaries, auth and
mirror services, TLS, case twins, whole nodes).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from hypothesis import given, settings, strategies as st

from renderer.catalog import node_dump
from renderer.catalog.from_dump import from_node_dump
from renderer.peers.table import PeerTable
from renderer.render.api import TemplateData
from renderer.render.loader import TemplateLoader
from renderer.routes.builder import RouteBuilder, build

from tests.unit.test_routes import CERTS, OPTIONS

NAMES = ["web", "api", "Api", "shop", "auth", "blog", "db", "docs", "mail", "img"]
NODES = ["n1", "n2", "n3", "n4"]


class World:
    """A Consul catalog as its node dump, changed at random the way Consul changes it (ModifyIndex moves)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.index = 10
        self.nodes = {node: {"address": f"10.0.{n}.1", "services": {}, "checks": {}} for n, node in enumerate(NODES)}
        for _ in range(rng.randint(5, 25)):
            self.arrive()

    def body(self) -> bytes:
        dump = []
        for name in sorted(self.nodes):
            node = self.nodes[name]
            dump.append({"Node": name, "Address": node["address"], "Meta": {},
                         "Services": [node["services"][sid] for sid in sorted(node["services"])],
                         "Checks": [{"ServiceID": sid, "Status": status} for sid, status in sorted(node["checks"].items())]})
        return json.dumps(dump).encode()

    def _next(self) -> int:
        self.index += 1
        return self.index

    def _meta(self, name: str) -> dict:
        rng = self.rng
        meta = {}
        if rng.random() < 0.3:
            meta["hosts"] = rng.choice(["shared.example.org", "api.example.org", f"{name.lower()}.example.org",
                                        "shared.example.org,other.example.org"])
        if rng.random() < 0.3:
            meta["path"] = rng.choice(["/", "/v1", "/v2", "/static"])
        if rng.random() < 0.15:
            meta["tls"] = "terminate"
        if rng.random() < 0.15:
            meta["canary"] = "true"
            meta["canary_percent"] = str(rng.choice([0, 10, 50]))
        if rng.random() < 0.1:
            meta["auth"] = "service:auth"
        if rng.random() < 0.1:
            meta["mirror"] = "service:blog"
        if rng.random() < 0.1:
            meta["weight"] = str(rng.randint(1, 5))
        if rng.random() < 0.05:
            meta["weight"] = "nonsense"
        return meta

    def _services(self):
        return [(node, sid) for node in self.nodes for sid in self.nodes[node]["services"]]

    def arrive(self) -> None:
        rng = self.rng
        node = rng.choice(NODES)
        name = rng.choice(NAMES)
        sid = f"{name}-{self._next()}"
        tags = ["http"] if rng.random() < 0.85 else rng.choice([["tcp"], [], ["http", "tcp"]])
        if tags == ["tcp"]:
            name = f"{name.lower()}-{rng.choice([9000, 9001])}"
        index = self._next()
        self.nodes[node]["services"][sid] = {
            "ID": sid, "Service": name, "Tags": tags, "Address": rng.choice(["", "10.1.0.5", "10.1.0.6"]),
            "Meta": self._meta(name), "Port": rng.randint(8000, 8010), "CreateIndex": index, "ModifyIndex": index}

    def step(self) -> None:
        rng = self.rng
        services = self._services()
        kind = rng.choice(["move", "move", "move", "check", "check", "arrive", "depart", "meta", "node"])
        if kind == "arrive" or not services:
            self.arrive()
            return
        node, sid = rng.choice(services)
        entry = self.nodes[node]["services"][sid]
        if kind == "move":
            entry["Port"] = rng.randint(8000, 8010)
            entry["ModifyIndex"] = self._next()
        elif kind == "check":
            self.nodes[node]["checks"][sid] = rng.choice(["passing", "passing", "warning", "critical"])
        elif kind == "depart":
            del self.nodes[node]["services"][sid]
            self.nodes[node]["checks"].pop(sid, None)
        elif kind == "meta":
            entry["Meta"] = self._meta(entry["Service"])
            entry["ModifyIndex"] = self._next()
        else:  # a whole node: its address moves, or it fails its node check
            if rng.random() < 0.5:
                self.nodes[node]["address"] = f"10.0.{rng.randint(10, 20)}.1"
            else:
                self.nodes[node]["checks"][""] = rng.choice(["passing", "critical"])


def applied(held: dict, patch: str) -> dict:
    """What nginx's Lua module does with a patch (renderer_peers.lua), over a {pool or split: lines} dict."""
    table = dict(held)
    current = None
    for line in patch.splitlines()[1:]:
        word, _, rest = line.partition(" ")
        if word == "pool":
            current = table[f"pool:{rest}"] = []
        elif word == "peer":
            current.append(rest)
        elif word == "drop":
            del table[f"pool:{rest}"]
        elif word == "split":
            table[f"split:{rest.split()[0]}"] = rest
        elif word == "unsplit":
            del table[f"split:{rest}"]
        else:
            raise AssertionError(line)
    return table


def held_of(peers: PeerTable) -> dict:
    return {**{f"pool:{name}": [f"{ip} {port} {weight}" for ip, port, weight in entries]
               for name, entries in peers.pools},
            **{f"split:{split[0]}": " ".join(map(str, split)) for split in peers.splits}}


HTTP_TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "http" / "services.conf.j2"
VARIABLES = {"domain": "example.org", "http_port": "80", "https_port": "443"}


def walk(seed: int, steps: int = 25):
    """(the catalog from the last one and from nothing, the builder's table and the whole way's, the peer table
    from the last one and from nothing, the last peer table) at each step of a random walk."""
    world = World(random.Random(seed))
    builder = RouteBuilder()
    shorter = builder._changed_hosts_only
    builder.took = []  # whether each build took the shorter way
    builder._changed_hosts_only = lambda *args: builder.took.append(shorter(*args)) or builder.took[-1]
    catalog, peers = None, None
    for _ in range(steps):
        body = world.body()
        catalog = from_node_dump(node_dump.decode(body, catalog._parts if catalog is not None else ()), catalog)
        whole = from_node_dump(node_dump.decode(body))
        table, expected = builder.build(catalog, OPTIONS, CERTS), build(whole, OPTIONS, CERTS)
        new = PeerTable.of(table, peers)
        yield catalog, whole, table, expected, new, PeerTable.of(expected), peers, builder
        peers = new
        world.step()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_every_shorter_way_gives_what_the_whole_way_gives(seed, dynamic):
    variables = {**VARIABLES, **({"dynamic_peers": "true", "peers_dir": "/p", "peers_socket": "/p/s"} if dynamic
                                 else {})}
    kept, whole_way = TemplateLoader(variables), TemplateLoader(variables)  # each() texts kept, and not
    for catalog, whole, table, expected, new, fresh, held, builder in walk(seed):
        assert catalog == whole and catalog.refused == whole.refused
        assert catalog.services() == whole.services() and catalog.routes == whole.routes
        for name, _, _ in whole.services():
            assert catalog.instances_of(name) == whole.instances_of(name)
            assert catalog.instances_of(name, passing=True) == whole.instances_of(name, passing=True)
        assert table == expected
        for view in ("pools", "locations", "services", "canaries", "cross_origin", "mirrored", "rate_limited"):
            assert getattr(table, view) == getattr(expected, view), view
        assert new == fresh and new.digest == fresh.digest and new.body == fresh.body
        if held is not None:
            assert applied(held_of(held), new.patch(held, 1)) == held_of(new)
        # The file: the default template, its each() texts kept from the last render, as the daemon renders.
        data = TemplateData(catalog, certificates=CERTS, routes=builder)
        rendered = kept.render(HTTP_TEMPLATE, data)
        kept.keep_fragments(HTTP_TEMPLATE, rendered, data.evaluated(("routes", kept.route_options)))
        whole_way.forget_fragments(HTTP_TEMPLATE)
        assert rendered.content == whole_way.render(HTTP_TEMPLATE, TemplateData(whole, certificates=CERTS)).content


def test_the_shorter_ways_are_taken():
    """The walks above compare the shorter ways only if they are taken: count them."""
    updated = shorter = 0
    for seed in range(10):
        for catalog, *_, builder in walk(seed):
            updated += catalog.base is not None
        shorter += sum(table is not None for table in builder.took)
    assert updated > 150 and shorter > 50, (updated, shorter)
