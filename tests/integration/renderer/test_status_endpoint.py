"""`renderer run --status-address`: Prometheus metrics, /health, /ready, the status page in a real browser."""

from __future__ import annotations

import json
import socket
import threading

import requests

from tests.support.metrics import scrape, value
from tests.support.ports import free_port
from tests.support.renderer_process import run_once
from tests.support.waiting import wait_until


def start(scene, *extra: str):
    port = free_port()
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates(), "--status-address", f"127.0.0.1:{port}",
                          "--log-level", "debug", *extra)
    daemon.wait_for_log(f"status page on http://127.0.0.1:{port}/")
    return daemon, port


def test_metrics_health_and_ready_follow_what_the_loop_did(scene):
    web = scene.http_backend("web")
    scene.register("web", web.port, service_id=f"{scene.unique}-web-1", tags=["http"])
    scene.register("evil;name", web.port, service_id=f"{scene.unique}-evil", tags=["http"])
    daemon, port = start(scene)
    daemon.wait_for_log("nginx reload confirmed")
    # The pass is recorded once it ends, a moment after the reload line.
    samples = wait_until(lambda: (lambda s: s if value(s, "renderer_reloads_total", outcome="confirmed") else None)(
        scrape(port)), 10, what="the first reload counted")
    assert value(samples, "renderer_reloads_total", outcome="failed") == 0
    assert value(samples, "renderer_passes_total", outcome="complete") >= 1
    assert value(samples, "renderer_consul_reachable") == 1
    assert value(samples, "renderer_catalog_index") > 0
    assert value(samples, "renderer_instances_rejected", reason="name", action="left_out") >= 1
    assert value(samples, "renderer_instances", state="routed") >= 1
    assert value(samples, "renderer_ready") == 1
    assert value(samples, "renderer_last_apply_timestamp_seconds") > 0
    assert (value(samples, "renderer_renders_total", template=str(scene.default_templates()[1].split(":")[0]),
                  outcome="ok") >= 1)

    health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert health.status_code == 200 and health.text.startswith("ok: the loop turned ")
    ready = requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)
    assert ready.status_code == 200 and ready.text.startswith("ready: nginx runs pass ")

    # One change: one more confirmed reload, and its change-to-reload time observed.
    before = value(samples, "renderer_change_to_reload_seconds_count") or 0
    reloads = value(samples, "renderer_reloads_total", outcome="confirmed")
    scene.register("web", web.port + 0, service_id=f"{scene.unique}-web-2", tags=["http"], address="127.0.0.2")
    daemon.wait_for_pass_at(scene.consul.index())
    wait_until(lambda: value(scrape(port), "renderer_reloads_total", outcome="confirmed") == reloads + 1, 10,
               what="the reload counted")
    assert value(scrape(port), "renderer_change_to_reload_seconds_count") == before + 1


def test_ready_says_why_not_while_consul_is_away(scene):
    daemon, port = start(scene)
    daemon.wait_for_log("watching 2 template(s)")
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200, 10,
               what="ready")
    scene.consul.stop()
    try:
        def not_ready():
            answer = requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)
            return (answer,) if answer.status_code == 503 else None  # a 503 Response is falsy itself
        (answer,) = wait_until(not_ready, 20, what="/ready turns 503")
        assert answer.text == "not ready: Consul unreachable; nginx keeps its current configuration\n"
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200, "alive, though"
        assert value(scrape(port), "renderer_consul_reachable") == 0
    finally:
        scene.consul.start()
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200, 20,
               what="ready again")


def test_the_status_page_shows_the_routing_table_and_what_was_left_out(scene, browser):
    web = scene.http_backend("web")
    scene.register("shop", web.port, service_id=f"{scene.unique}-shop-1", tags=["http"], meta={"weight": "3"})
    scene.register("shop", web.port, service_id=f"{scene.unique}-shop-2", tags=["http"], address="127.0.0.2")
    scene.register("shop-api", web.port, service_id=f"{scene.unique}-api-1", tags=["http"],
                   meta={"hosts": f"store.{scene.domain}", "path": "/api", "description": "the <b>API</b>"})
    scene.register("bad;name", web.port, service_id=f"{scene.unique}-bad", tags=["http"])
    daemon, port = start(scene)
    daemon.wait_for_log("nginx reload confirmed")
    page = browser.open(f"http://127.0.0.1:{port}/")
    assert page.title.endswith(": ready")
    routes = browser.rows("#routes tr")
    shop = next(row for row in routes if row.startswith(f"http shop.{scene.domain}/ shop"))
    assert f"127.0.0.1:{web.port} passing, weight 3 ({scene.unique}-shop-1" in shop
    assert f"127.0.0.2:{web.port} passing, weight 1 ({scene.unique}-shop-2" in shop
    assert any(row.startswith(f"http store.{scene.domain}/api shop-api") for row in routes)
    left_out = browser.text_of("#left-out")
    assert f"{scene.unique}-bad" in left_out and "left out" in left_out
    assert "name 'bad;name' is not a valid service name" in left_out
    assert "meta description 'the <b>API</b>'" in left_out, "shown as text: escaped, never markup"
    assert "reload confirmed" in browser.text_of("#passes")
    shot = browser.screenshot("renderer-status-page.png")
    assert shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")


def test_hostile_clients_cost_the_loop_nothing(scene):
    web = scene.http_backend("web")
    scene.register("steady", web.port, service_id=f"{scene.unique}-steady", tags=["http"])
    daemon, port = start(scene)
    daemon.wait_for_log("nginx reload confirmed")
    stop = threading.Event()
    held: list[socket.socket] = []

    def slowloris():  # far more half-sent requests than the server keeps, topped up as they are evicted
        while not stop.is_set():
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                connection.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                held.append(connection)
            except OSError:
                pass
            if len(held) > 300:
                held.pop(0).close()
    attackers = [threading.Thread(target=slowloris, daemon=True) for _ in range(4)]
    for attacker in attackers:
        attacker.start()
    try:
        # A huge request line among them: refused (431; tests/unit/test_status_server.py), or, when the
        # flood evicts it first, cut. Either way it costs the server and the loop nothing.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as huge:
            try:
                huge.sendall(b"GET /" + b"x" * 200_000 + b" HTTP/1.1\r\n\r\n")
                huge.recv(100)
            except ConnectionError:
                pass
        # Under the flood, a change still flows through the loop, and the endpoint still answers.
        scene.register("steady", web.port, service_id=f"{scene.unique}-steady-2", tags=["http"],
                       address="127.0.0.3")
        wait_until(lambda: f"127.0.0.3:{web.port}" in scene.outputs[0].read_text(), 10, what="the change rendered")
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200
    finally:
        stop.set()
        for attacker in attackers:
            attacker.join(5)
        for connection in held:
            connection.close()
    assert daemon.alive()


def test_json_logs_carry_the_decisions_fields(scene):
    web = scene.http_backend("web")
    scene.register("jsonweb", web.port, service_id=f"{scene.unique}-json", tags=["http"])
    result = run_once(*scene.common_args(), *scene.default_templates(), "--log-format", "json")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert all({"time", "level", "logger", "message", "program"} <= set(entry) for entry in entries)
    rendered = [e for e in entries if e["message"].startswith("rendered ")]
    assert rendered and rendered[0]["file"] == str(scene.outputs[0]) and rendered[0]["template"].endswith(".j2")
    reload = next(e for e in entries if e["message"].startswith("nginx reload confirmed"))
    assert isinstance(reload["duration_ms"], int) and reload["level"] == "info"


def test_the_renderer_registers_itself_checked_on_ready_and_leaves_on_a_clean_stop(scene):
    daemon, port = start(scene)
    service_id = f"consul-nginx-sync-renderer:127.0.0.1:{port}"

    def passing():
        checks = scene.consul.get("/v1/health/checks/consul-nginx-sync-renderer")
        return any(c["ServiceID"] == service_id and c["Status"] == "passing" for c in checks)
    wait_until(passing, 15, what="the renderer's registration passing its /ready check")
    registered = scene.consul.services()[service_id]
    assert (registered["Service"], registered["Address"], registered["Port"]) == (
        "consul-nginx-sync-renderer", "127.0.0.1", port)
    assert registered["Meta"]["version"]
    assert daemon.stop() == 0
    assert service_id not in scene.consul.services()
    assert f"deregistered {service_id} from Consul" in daemon.log
