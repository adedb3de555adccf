"""Traffic control without a redeploy (docs/routes.md): the canary declares its share, and the operator's route
settings in Consul KV (overrides, defaults, maintenance) reach nginx from the renderer's KV watch, on real Consul
and nginx. No container, no registration is touched to change any of it."""

from __future__ import annotations

import json
import subprocess

import requests

from tests.support.ports import free_port
from tests.support.renderer_process import RENDERER
from tests.support.route_backends import EchoBackend
from tests.support.waiting import wait_until


def backend(scene, name: str) -> EchoBackend:
    server = EchoBackend(name)
    scene.closers.append(server.close)
    return server


def canary_share(scene, service: str, clients: int = 400) -> float:
    """The share of ``clients`` distinct clients (user agents) nginx sends to the canary instances."""
    session = requests.Session()
    url = f"http://127.0.0.1:{scene.nginx.http_port}/"
    names = [json.loads(session.get(url, headers={"Host": f"{service}.{scene.domain}", "User-Agent": f"client-{n}"},
                                    timeout=2).text)["name"] for n in range(clients)]
    return names.count("canary") / clients


def routes_cli(scene, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RENDERER, "routes", *args, "--consul-addr", scene.consul.address,
                           "--kv-prefix", scene.kv_prefix, "--var", f"domain={scene.domain}"],
                          capture_output=True, text=True, timeout=30)


def test_the_canary_declares_its_share_and_kv_moves_it_on_the_running_containers(scene):
    for n in range(3):  # stable instances with no canary key at all
        scene.register("shop", backend(scene, "stable").port, service_id=f"{scene.unique}-stable{n}", tags=["http"])
    scene.register("shop", backend(scene, "canary").port, service_id=f"{scene.unique}-canary", tags=["http"],
                   meta={"canary": "true", "canary_percent": "10"})
    status = free_port()
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates(), "--status-address",
                          f"127.0.0.1:{status}", "--log-level", "debug")
    scene.settle("shop")
    assert 0.05 <= canary_share(scene, "shop") <= 0.15, "10 % of clients, declared by the canary alone"
    assert "canary_percent" not in daemon.log, "no disagreement to report: the canary decides"

    override = f"{scene.kv_prefix}/routes/shop/canary_percent"
    scene.route_setting("shop", "canary_percent", "50")
    daemon.wait_for_log(f"route setting {override}='50' in force")
    wait_until(lambda: 0.4 <= canary_share(scene, "shop") <= 0.6, 10, what="half the clients on the canary")

    # A bad value: one warning naming the path and the value; the share in force stays.
    scene.route_setting("shop", "canary_percent", "fifty")
    daemon.wait_for_log(f"route setting {override}='fifty' refused: is not a whole number from 0 to 100; "
                        "keeping '50', in force before")
    wait_until(lambda: "renderer_route_settings_refused 1.0" in requests.get(
        f"http://127.0.0.1:{status}/metrics", timeout=5).text, 10, what="the refused value counted")
    assert 0.4 <= canary_share(scene, "shop") <= 0.6
    page = requests.get(f"http://127.0.0.1:{status}/", timeout=5).text
    assert override in page and "fifty" in page

    scene.route_setting("shop", "canary_percent", None)  # back to what the canary declares
    daemon.wait_for_log(f"route setting {override} removed")
    wait_until(lambda: 0.05 <= canary_share(scene, "shop") <= 0.15, 10, what="back to 10 %")
    wait_until(lambda: "renderer_route_settings_refused 0.0" in requests.get(
        f"http://127.0.0.1:{status}/metrics", timeout=5).text, 10, what="nothing refused any more")


def test_a_dark_launch_gets_only_the_clients_that_ask_for_it(scene):
    scene.register("dark", backend(scene, "stable").port, service_id=f"{scene.unique}-stable", tags=["http"])
    scene.register("dark", backend(scene, "canary").port, service_id=f"{scene.unique}-canary", tags=["http"],
                   meta={"canary": "true"})
    scene.daemon(*scene.common_args(), *scene.default_templates())
    scene.settle("dark")
    assert canary_share(scene, "dark", 50) == 0

    def side(choice: str) -> set[str]:
        return {json.loads(requests.get(f"http://127.0.0.1:{scene.nginx.http_port}/", timeout=2, headers={
            "Host": f"dark.{scene.domain}", "X-Canary": choice, "User-Agent": f"t-{n}"}).text)["name"]
            for n in range(10)}
    assert side("always") == {"canary"} and side("never") == {"stable"}


def test_maintenance_answers_503_with_retry_after_until_it_is_removed(scene):
    scene.register("paused", backend(scene, "paused").port, service_id=f"{scene.unique}-paused", tags=["http"])
    scene.register("other", backend(scene, "other").port, service_id=f"{scene.unique}-other", tags=["http"])
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates())
    scene.settle("paused")
    instances = scene.consul.get("/v1/catalog/service/paused")

    scene.route_setting("paused", "maintenance", "true")
    scene.settle("paused", 503)  # the new workers only: an old one answers as before until it has gone
    response = scene.get("paused")
    assert response.headers.get("Retry-After") == "120", (response.text, daemon.log[-3000:])
    assert scene.get("other").status_code == 200, "only that service"
    assert scene.consul.get("/v1/catalog/service/paused") == instances, "its instances untouched"
    table = routes_cli(scene)
    assert any(f"paused.{scene.domain}" in line and "503 with Retry-After: maintenance" in line
               for line in table.stdout.splitlines()), table.stdout

    scene.route_setting("paused", "maintenance", None)
    scene.settle("paused", 200)
    assert json.loads(scene.get("paused").text)["name"] == "paused"
    assert "nginx -t refused" not in daemon.log


def test_a_kv_default_applies_where_the_labels_say_nothing(scene):
    scene.register("plain", backend(scene, "plain").port, service_id=f"{scene.unique}-plain", tags=["http"])
    scene.register("big", backend(scene, "big").port, service_id=f"{scene.unique}-big", tags=["http"],
                   meta={"max_body": "10m"})
    scene.daemon(*scene.common_args(), *scene.default_templates())
    scene.settle("plain")

    def posted(name: str) -> int:
        return requests.post(f"http://127.0.0.1:{scene.nginx.http_port}/", data=b"x" * 4096, timeout=5,
                             headers={"Host": f"{name}.{scene.domain}"}).status_code
    assert posted("plain") == 200 and posted("big") == 200

    scene.route_setting(None, "max_body", "1k")
    wait_until(lambda: posted("plain") == 413, 10, what="the default applied to plain")
    assert posted("big") == 200, "big says max_body itself: the label beats the default"
    table = routes_cli(scene).stdout
    assert f"plain: max_body from KV default {scene.kv_prefix}/defaults/max_body" in table, table
    assert "big: max_body from label" in table


def test_the_cli_checks_shows_and_writes_route_settings(scene):
    scene.register("shop", backend(scene, "shop").port, service_id=f"{scene.unique}-shop", tags=["http"])
    path = f"{scene.kv_prefix}/routes/shop/rate_limit"

    refused = routes_cli(scene, "set", "shop", "rate_limit=lots")
    assert refused.returncode == 2 and "rate_limit='lots'" in refused.stderr and "nothing written" in refused.stderr
    unknown = routes_cli(scene, "set", "shop", "colour=blue")
    assert unknown.returncode == 2 and "colour is not a route key" in unknown.stderr
    dry = routes_cli(scene, "set", "shop", "rate_limit=5r/s", "--dry-run")
    assert dry.returncode == 0 and "nothing written" in dry.stdout
    assert requests.get(f"{scene.consul.url}/v1/kv/{path}", timeout=5).status_code == 404

    written = routes_cli(scene, "set", "shop", "rate_limit=5r/s")
    assert written.returncode == 0, written.stderr
    assert f"{path} = '5r/s'" in written.stdout
    assert f"http  shop.{scene.domain}/ -> shop: rate_limit=5r/s" in written.stdout, written.stdout
    assert f"shop: rate_limit from KV override {path}" in written.stdout
    assert requests.get(f"{scene.consul.url}/v1/kv/{path}?raw", timeout=5).text == "5r/s"
    shown = routes_cli(scene).stdout
    assert f"shop: rate_limit from KV override {path}" in shown

    removed = routes_cli(scene, "unset", "shop", "rate_limit")
    assert removed.returncode == 0 and f"{path}: removed" in removed.stdout
    assert requests.get(f"{scene.consul.url}/v1/kv/{path}", timeout=5).status_code == 404
