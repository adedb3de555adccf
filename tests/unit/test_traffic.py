"""Counting nginx's traffic log per route and instance (pure), and following the file (a real file)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, generate_latest

from renderer.observe.traffic import Counts, Index, Series, Traffic, count_lines, keep, summary
from renderer.observe.traffic_log import TrafficLog
from renderer.observe.traffic_metrics import TrafficCollector
from renderer.routes.model import short_id

from tests.unit.test_routes import instance, table

SHOP = short_id("shop.example.org /").encode()


def shop_table():
    return table(instance("shop", 1), instance("shop", 2), instance("shop", 3, {"canary": "true"}),
                 instance("db", 5432, {"listen_port": "5432"}, tags=("tcp",)))


def http(route: bytes, status: str, seconds: str, addresses: str = "-", statuses: str = "-", connects: str = "-",
         times: str = "-") -> bytes:
    return b"\t".join([b"H", route, status.encode(), seconds.encode(), addresses.encode(), statuses.encode(),
                       connects.encode(), times.encode()])


def test_requests_are_counted_per_route_pool_and_class_and_tries_per_instance():
    index, counts = Index.of(shop_table()), Counts()
    lines = [http(SHOP, "200", "0.004", "10.0.0.1:1", "200", "0.001", "0.003"),
             http(SHOP, "404", "0.020", "10.0.0.1:2", "404", "0.001", "0.019"),
             # The first try could not connect; the second answered.
             http(SHOP, "200", "0.300", "10.0.0.1:1, 10.0.0.1:2", "502, 200", "-, 0.001", "0.000, 0.290"),
             http(SHOP, "200", "0.002", "10.0.0.1:3", "200", "0.000", "0.002"),  # the canary
             http(b"", "404", "0.000"),                                         # the default server
             http(b"0123456789", "200", "0.001", "10.0.0.9:9", "200", "0.0", "0.001"),  # not a route of ours
             b"S\t5432\tTCP\t200\t10\t20\t10.0.0.1:5432\t-", b"garbage"]
    assert count_lines(counts, lines, index) == 5
    assert counts.routes == {(SHOP, "stable", "2xx"): 2, (SHOP, "stable", "4xx"): 1, (SHOP, "canary", "2xx"): 1}
    assert counts.upstreams == {("shop", "10.0.0.1:1", "stable", "2xx"): 1, ("shop", "10.0.0.1:2", "stable", "4xx"): 1,
                                ("shop", "10.0.0.1:1", "stable", "failed"): 1, ("shop", "10.0.0.1:2", "stable", "2xx"): 1,
                                ("shop", "10.0.0.1:3", "canary", "2xx"): 1}
    assert counts.streams == {(b"5432", b"TCP", b"", "2xx"): [1, 10, 20]}

    text = exposition(index, counts)
    route = 'host="shop.example.org",path="/",pool="stable",service="shop"'
    assert f'renderer_route_requests_total{{{route},status="2xx"}} 2.0' in text
    assert f'renderer_route_requests_total{{{route},status="4xx"}} 1.0' in text
    assert 'pool="canary",service="shop",status="2xx"} 1.0' in text
    assert ('renderer_route_request_duration_seconds_bucket{host="shop.example.org",le="0.005",path="/",'
            'pool="stable",service="shop"} 1.0') in text
    assert f'renderer_route_request_duration_seconds_count{{{route}}} 3.0' in text
    assert ('renderer_upstream_responses_total{instance="10.0.0.1:1",pool="stable",service="shop",'
            'status="failed"} 1.0') in text
    assert 'renderer_stream_connections_total{service="db",status="2xx"} 1.0' in text
    assert 'renderer_stream_bytes_total{direction="sent",service="db"} 20.0' in text
    assert "10.0.0.9" not in text and "0123456789" not in text, "nothing outside the table becomes a label"


def exposition(index, counts) -> str:
    traffic = Traffic()
    traffic.index, traffic.counts = index, counts
    registry = CollectorRegistry()
    registry.register(TrafficCollector(traffic))
    return generate_latest(registry).decode()


def test_what_leaves_the_table_leaves_the_counts():
    counts = Counts()
    count_lines(counts, [http(SHOP, "200", "0.001", "10.0.0.1:1", "200", "0.0", "0.001"),
                         http(SHOP, "200", "0.001", "10.0.0.1:3", "200", "0.0", "0.001")], Index.of(shop_table()))
    without_canary = Index.of(table(instance("shop", 1), instance("shop", 2)))
    keep(counts, without_canary)
    assert list(counts.upstreams) == [("shop", "10.0.0.1:1", "stable", "2xx")]
    assert len(counts.routes) == 2, "the route stays, with what its canary pool took (pools are few)"
    keep(counts, Index.of(table(instance("other", 1))))  # another service on the same address
    assert counts == Counts(), "the service gone: nothing of it left, nothing inherited"


def test_the_last_window_gives_rates_error_shares_and_quantiles():
    traffic = Traffic(window=60)
    traffic.follow(shop_table())
    traffic.add([], now=100.0)
    lines = [http(SHOP, "200", "0.004", "10.0.0.1:1", "200", "0.001", "0.003")] * 98
    lines += [http(SHOP, "502", "0.300", "10.0.0.1:2", "502", "-", "0.000")] * 2
    traffic.add(lines, now=110.0)
    shown = summary(*traffic.view())
    assert shown["window"] == 10.0
    (route,) = shown["routes"]
    assert route["key"] == ["shop", "shop.example.org", "/", "stable"] and route["requests"] == 100
    assert route["rate"] == 10.0 and route["errors"] == 0.02
    assert route["p50"] < 0.005 and 0.25 < route["p99"] <= 0.5
    instances = {tuple(row["key"]): row for row in shown["instances"]}
    assert instances[("shop", "10.0.0.1:2", "stable")]["errors"] == 1.0, "a failed connection is an error"


def test_a_quantile_is_interpolated_within_its_bucket():
    series = Series()
    for seconds in (0.001,) * 50 + (0.2,) * 50:
        series.add(seconds)
    assert series.quantile(0.5) == 0.001 and 0.1 < series.quantile(0.75) < 0.25
    assert Series().quantile(0.5) is None


def test_the_log_is_read_from_where_counting_started_and_its_disk_given_back(tmp_path):
    path = tmp_path / "traffic.log"
    path.write_bytes(b"old line, before the renderer started\n" * 10)
    log = TrafficLog(path)
    assert log.read() == [], "counting starts now"
    with open(path, "ab") as nginx:
        nginx.write(b"one\ntwo\nthr")
        nginx.flush()
        assert log.read() == [b"one", b"two"]
        nginx.write(b"ee\n" + b"x" * 200_000 + b"\n")
        nginx.flush()
        assert log.read() == [b"three", b"x" * 200_000]
    blocks = os.stat(path).st_blocks * 512
    assert os.stat(path).st_size > 200_000 and blocks < 100_000, "what was read takes no disk"

    path.rename(tmp_path / "rotated.log")  # logrotate moves it; nginx makes a new one at its reload
    path.write_bytes(b"after\n")
    assert log.read() == [] and log.read() == [b"after"]
    log.close()


def test_an_address_two_services_share_is_counted_for_the_service_each_request_was_for():
    index, counts = Index.of(table(instance("mix", 80), instance("marker", 80))), Counts()
    marker = short_id("marker.example.org /").encode()
    count_lines(counts, [http(marker, "200", "0.001", "10.0.0.1:80", "200", "0.0", "0.001")], index)
    assert list(counts.upstreams) == [("marker", "10.0.0.1:80", "stable", "2xx")]
