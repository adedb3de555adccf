"""nginx's traffic per route and instance (docs/observability.md): a known mix of requests through real nginx,
counted exactly on /metrics and shown on the status page in a real browser."""

from __future__ import annotations

import socket

import requests

from tests.support.metrics import scrape, value
from tests.support.ports import free_port
from tests.support.route_backends import EchoBackend
from tests.support.waiting import wait_until


def test_a_known_mix_of_requests_is_counted_exactly_per_route_class_and_instance(scene, browser):
    mix = EchoBackend("mix")
    scene.closers.append(mix.close)
    files = scene.http_backend("files")  # busybox httpd: 404 for what it does not hold
    dead = free_port()                   # nothing listens: every try fails to connect
    scene.register("mix", mix.port, service_id=f"{scene.unique}-mix", tags=["http"])
    scene.register("files", files.port, service_id=f"{scene.unique}-files", tags=["http"])
    scene.register("gone", dead, service_id=f"{scene.unique}-gone", tags=["http"])
    echo = scene.tcp_echo()
    tcp_port = free_port()
    scene.register("echo", echo.port, service_id=f"{scene.unique}-echo", tags=["tcp"],
                   meta={"listen_port": str(tcp_port)})
    scene.register("marker", mix.port, service_id=f"{scene.unique}-marker", tags=["http"])
    status = free_port()
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates(), "--status-address",
                          f"127.0.0.1:{status}")
    # Settled on a route of its own: the counted routes take no request but the test's.
    wait_until(lambda: all(f"server_name {name}.{scene.domain};" in scene.outputs[0].read_text()
                           for name in ("mix", "files", "gone", "marker")), 15, what="every route rendered")
    scene.settle("marker")

    def get(name: str, path: str = "/", host: str | None = None) -> int:
        return requests.get(f"http://127.0.0.1:{scene.nginx.http_port}{path}", timeout=5,
                            headers={"Host": host or f"{name}.{scene.domain}"}).status_code
    assert [get("mix") for _ in range(20)] == [200] * 20
    assert [get("mix", "/slow?s=0.3") for _ in range(3)] == [200] * 3
    assert [get("files") for _ in range(10)] == [200] * 10
    assert [get("files", "/nothing-here") for _ in range(5)] == [404] * 5
    assert [get("gone") for _ in range(4)] == [502] * 4
    assert get("x", host=f"nobody-{scene.unique}.example") == 404  # not routed: no label may name it
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as connection:
        connection.sendall(b"twelve bytes")
        assert connection.recv(64) == b"twelve bytes"

    def counted(name: str, **labels) -> float:
        return value(scrape(status), name, **labels) or 0

    route = {"path": "/", "pool": "stable"}
    wait_until(lambda: counted("renderer_stream_connections_total", service="echo", status="2xx") == 1, 15,
               what="the last line counted (nginx writes its log at least every second)")
    assert counted("renderer_route_requests_total", service="mix", host=f"mix.{scene.domain}", status="2xx",
                   **route) == 23
    assert counted("renderer_route_requests_total", service="files", host=f"files.{scene.domain}", status="2xx",
                   **route) == 10
    assert counted("renderer_route_requests_total", service="files", host=f"files.{scene.domain}", status="4xx",
                   **route) == 5
    assert counted("renderer_route_requests_total", service="gone", host=f"gone.{scene.domain}", status="5xx",
                   **route) == 4
    mix_times = {"service": "mix", "host": f"mix.{scene.domain}", **route}
    assert counted("renderer_route_request_duration_seconds_bucket", le="0.25", **mix_times) == 20
    assert counted("renderer_route_request_duration_seconds_bucket", le="0.5", **mix_times) == 23, "3 slow ones"
    instance = {"pool": "stable"}
    assert counted("renderer_upstream_responses_total", service="files", instance=f"127.0.0.1:{files.port}",
                   status="4xx", **instance) == 5
    assert counted("renderer_upstream_responses_total", service="gone", instance=f"127.0.0.1:{dead}",
                   status="failed", **instance) == 4, "a failed connection is its own outcome"
    assert counted("renderer_stream_bytes_total", service="echo", direction="received") == 12
    text = requests.get(f"http://127.0.0.1:{status}/metrics", timeout=5).text
    assert f"nobody-{scene.unique}" not in text and "nothing-here" not in text and "/slow" not in text

    # The status page, as a person sees it: the routes' rates over the last minute.
    page = browser.open(f"http://127.0.0.1:{status}/")
    rows = browser.rows("#traffic-routes tr")
    mix_row = next(row for row in rows if row.startswith(f"mix.{scene.domain}/ mix stable"))
    assert float(mix_row.split()[3]) > 0, mix_row
    gone_row = next(row for row in rows if row.startswith(f"gone.{scene.domain}/ gone stable"))
    assert "100.0 %" in gone_row, gone_row
    assert any(row.startswith(f"127.0.0.1:{dead} gone stable") for row in browser.rows("#traffic-instances tr"))
    assert page.title.endswith(": ready")
    browser.screenshot("renderer-traffic.png")

    # A service that leaves the table leaves the metrics.
    scene.consul.deregister(f"{scene.unique}-files")
    wait_until(lambda: 'service="files"' not in requests.get(f"http://127.0.0.1:{status}/metrics", timeout=5).text,
               15, what="files gone from the metrics")
    assert "nginx reload confirmed" in daemon.log
