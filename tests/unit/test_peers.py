"""The peer table nginx's Lua balancer reads (dynamic peers), from plain route tables."""

from __future__ import annotations

from renderer.catalog.model import Catalog
from renderer.peers.table import PeerTable
from renderer.routes.builder import build
from renderer.routes.model import ip_port, short_id

from tests.unit.test_routes import CERTS, KV_OPTIONS, instance, kv, table


def test_each_ip_pool_becomes_a_pool_of_peers_with_weights_sorted_by_name():
    peers = PeerTable.of(table(instance("web", 8080), instance("web", 8081, meta={"weight": "3"}),
                               instance("api", 9000, address="10.0.0.2")))
    assert peers.pools == (("api", (("10.0.0.2", 9000, 1),)),
                           ("web", (("10.0.0.1", 8080, 1), ("10.0.0.1", 8081, 3))))
    assert peers.body == "pool api\npeer 10.0.0.2 9000 1\npool web\npeer 10.0.0.1 8080 1\npeer 10.0.0.1 8081 3\n"
    assert peers.servers == 3


def test_a_canary_pool_is_a_pool_of_its_own_and_its_split_is_in_the_table():
    peers = PeerTable.of(table(instance("shop", 1), instance("shop", 2, {"canary": "true", "canary_percent": "10"})))
    assert [name for name, _ in peers.pools] == ["_canary_shop", "shop"]
    assert peers.splits == ((short_id("shop"), "shop", "_canary_shop", 10),)
    assert peers.body.endswith(f"split {short_id('shop')} shop _canary_shop 10\n")
    assert peers.text(3).startswith("renderer-peers 2 3 ")
    moved = PeerTable.of(table(instance("shop", 1), instance("shop", 2, {"canary": "true", "canary_percent": "50"})))
    assert moved.pools == peers.pools and moved.digest != peers.digest, "a share change is a push"


def test_a_dark_launch_is_split_at_0_and_maintenance_splits_nothing():
    dark = PeerTable.of(table(instance("shop", 1), instance("shop", 2, {"canary": "true"})))
    assert dark.splits == ((short_id("shop"), "shop", "_canary_shop", 0),)
    catalog = Catalog([], [instance("shop", 1), instance("shop", 2, {"canary": "true"})])
    closed = PeerTable.of(build(catalog, KV_OPTIONS, CERTS, kv(routes__shop__maintenance="true")))
    assert closed.pools == () and closed.splits == ()


def test_a_pool_with_a_host_name_keeps_its_static_servers_and_ipv6_is_an_ip():
    peers = PeerTable.of(table(instance("named", 80, address="backend.internal"),
                               instance("six", 80, address="fe80::1")))
    assert peers.pools == (("six", (("fe80::1", 80, 1),)),)
    assert ip_port("[fe80::1]:80") == ("fe80::1", 80) and ip_port("backend.internal:80") is None


def test_the_digest_covers_the_peers_not_the_version():
    one = PeerTable.of(table(instance("web", 8080)))
    same = PeerTable.of(table(instance("web", 8080)))
    moved = PeerTable.of(table(instance("web", 8081)))
    assert one.digest == same.digest != moved.digest
    assert one.text(1).split("\n", 1)[1] == one.text(2).split("\n", 1)[1] == one.body
    assert one.text(7).startswith(f"renderer-peers 1 7 {one.digest}\n"), "no split: what an earlier module reads"


def test_keeping_adds_only_the_pools_the_new_table_dropped_with_their_running_peers():
    running = PeerTable.of(table(instance("shop", 1, {"canary_percent": "10"}), instance("shop", 2, {"canary": "true"}),
                                 instance("gone", 5)))
    new = PeerTable.of(table(instance("shop", 3)))  # canary over, "gone" deregistered, shop's instance moved
    pushed = new.keeping(running)
    assert dict(pushed.pools) == {"shop": (("10.0.0.1", 3, 1),), "_canary_shop": (("10.0.0.1", 2, 1),),
                                  "gone": (("10.0.0.1", 5, 1),)}
    assert new.keeping(None) is new and new.keeping(new) is new


def test_a_table_built_from_the_last_one_reuses_the_pools_whose_route_pool_is_the_same_object():
    from renderer.routes.builder import RouteBuilder
    builder = RouteBuilder()
    web, api = instance("web", 8080), instance("api", 9000)
    first = PeerTable.of(builder.build(Catalog([], [web, api]), KV_OPTIONS, CERTS))
    moved = builder.build(Catalog([], [instance("web", 8081), api]), KV_OPTIONS, CERTS)
    second = PeerTable.of(moved, first)
    assert second.parts["api"] is first.parts["api"], "api did not change: its entry, text and hash are reused"
    assert second.parts["web"] is not first.parts["web"]
    assert second == PeerTable.of(moved) and second.digest == PeerTable.of(moved).digest
    assert second.body == PeerTable.of(moved).body


def test_a_patch_carries_what_changed_whole_and_names_what_is_gone():
    base = PeerTable.of(table(instance("web", 8080), instance("api", 9000), instance("old", 7000),
                              instance("shop", 1), instance("shop", 2, {"canary": "true", "canary_percent": "10"})))
    new = PeerTable.of(table(instance("web", 8080), instance("web", 8081, meta={"weight": "2"}),
                             instance("api", 9000), instance("shop", 1)))
    patch = new.patch(base, 42)
    assert patch == (f"renderer-peers-patch 42 {new.digest} {base.digest}\n"
                     "pool web\npeer 10.0.0.1 8080 1\npeer 10.0.0.1 8081 2\n"
                     "drop _canary_shop\ndrop old\n"
                     f"unsplit {short_id('shop')}\n")
    assert new.patch(new, 43) == f"renderer-peers-patch 43 {new.digest} {new.digest}\n", "nothing changed"


def test_the_digest_is_the_same_whichever_way_the_table_was_made():
    running = PeerTable.of(table(instance("shop", 1, {"canary_percent": "10"}), instance("shop", 2, {"canary": "true"}),
                                 instance("gone", 5)))
    new = PeerTable.of(table(instance("shop", 3)))
    pushed = new.keeping(running)
    parsed = PeerTable(pushed.pools, pushed.splits)  # from its entries alone, as a test or a file would
    assert parsed.digest == pushed.digest and parsed.body == pushed.body
    assert len({new.digest, running.digest, pushed.digest}) == 3
