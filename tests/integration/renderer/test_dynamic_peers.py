"""`renderer run --dynamic-peers`: instance changes reach nginx's Lua balancer without a reload (real nginx + Lua)."""

from __future__ import annotations

import collections
import socket

import pytest

from renderer.apply.nginx_master import children
from tests.support import require
from tests.support.route_backends import EchoBackend, WebsocketBackend
from tests.support.waiting import wait_until


class Dynamic:
    """A scene whose renderer runs with --dynamic-peers; counts the peer tables nginx took and its workers."""

    def __init__(self, scene, tmp_path):
        self.scene, self.nginx = scene, scene.nginx
        self.daemon = scene.daemon(*scene.common_args(), *scene.default_templates(), "--dynamic-peers",
                                   "--peers-dir", str(tmp_path / "peers"), "--var", f"socket_dir={self.nginx.prefix}",
                                   "--log-level", "debug")
        self.daemon.wait_for_log("nginx took peer table")

    def workers(self) -> set[int]:
        """The worker processes of nginx's master: a reload replaces them, a peer push does not."""
        return set(children(self.nginx.pid()))

    def pushes(self) -> int:
        return self.daemon.log.count("nginx took peer table")

    def reloads(self) -> int:
        return self.daemon.log.count("nginx reload confirmed")

    def changed(self, what) -> None:
        """Make a change with ``what()``, then wait for the peer table that carries it."""
        before = self.pushes()
        what()
        wait_until(lambda: self.pushes() > before, 10, what="a peer table push")

    def bodies(self, name: str, count: int = 12, **headers) -> collections.Counter:
        return collections.Counter(self.nginx.get(f"{name}.{self.scene.domain}").text.strip() if not headers else
                                   self._get(name, headers) for _ in range(count))

    def clients(self, name: str, count: int) -> collections.Counter:
        """What ``count`` distinct clients (user agents) are answered: the split is per client."""
        return collections.Counter(self._get(name, {"User-Agent": f"client-{n}"}) for n in range(count))

    def _get(self, name, headers):
        import requests
        return requests.get(f"http://127.0.0.1:{self.nginx.http_port}/",
                            headers={"Host": f"{name}.{self.scene.domain}", **headers}, timeout=2).text.strip()


@pytest.fixture
def dynamic(scene, tmp_path):
    if not scene.nginx.lua:
        require.unavailable("nginx's Lua module (libnginx-mod-http-lua)")
    return lambda: Dynamic(scene, tmp_path)


def test_instance_changes_are_served_without_a_reload(scene, dynamic):
    a, b, c = (scene.http_backend(name) for name in ("a", "b", "c"))
    scene.register("web", a.port, service_id=f"{scene.unique}-a", tags=["http"])
    d = dynamic()
    scene.settle("web")
    workers, reloads = d.workers(), d.reloads()

    d.changed(lambda: scene.register("web", b.port, service_id=f"{scene.unique}-b", tags=["http"]))
    assert set(d.bodies("web")) == {"a", "b"}, "added"
    d.changed(lambda: scene.register("web", b.port, service_id=f"{scene.unique}-b", tags=["http"],
                                     meta={"weight": "3"}))
    assert d.bodies("web", 40) == {"a": 10, "b": 30}, "weighted 1:3 (smooth round robin)"
    d.changed(lambda: scene.register("web", c.port, service_id=f"{scene.unique}-c", tags=["http"],
                                     check={"TTL": "30s", "Status": "passing"}))
    assert set(d.bodies("web", 24)) == {"a", "b", "c"}
    d.changed(lambda: scene.consul.put(f"/v1/agent/check/fail/service:{scene.unique}-c"))
    assert set(d.bodies("web", 24)) == {"a", "b"}, "an instance turned critical is not routed"
    d.changed(lambda: scene.consul.deregister(f"{scene.unique}-a"))
    assert set(d.bodies("web")) == {"b"}, "removed"

    assert d.workers() == workers and d.reloads() == reloads, "no reload: the same workers served all of it"


def test_a_canary_moved_is_served_without_a_reload_and_a_route_change_still_reloads(scene, dynamic):
    stable, canary1, canary2, other = (scene.http_backend(n) for n in ("stable", "canary-1", "canary-2", "other"))
    scene.register("shop", stable.port, service_id=f"{scene.unique}-stable", tags=["http"],
                   meta={"canary_percent": "50"})
    scene.register("shop", canary1.port, service_id=f"{scene.unique}-c1", tags=["http"],
                   meta={"canary": "true", "canary_percent": "50"})
    d = dynamic()
    scene.settle("shop")
    workers, reloads = d.workers(), d.reloads()
    assert d.bodies("shop", 4, **{"X-Canary": "always"}) == {"canary-1": 4}

    def replace_canary():
        scene.register("shop", canary2.port, service_id=f"{scene.unique}-c2", tags=["http"],
                       meta={"canary": "true", "canary_percent": "50"})
        scene.consul.deregister(f"{scene.unique}-c1")
    d.changed(replace_canary)
    wait_until(lambda: d.bodies("shop", 4, **{"X-Canary": "always"}) == {"canary-2": 4}, 10, what="canary moved")
    assert d.workers() == workers and d.reloads() == reloads

    # A new service is a new host: that renders, validates and reloads; the table survives the reload.
    scene.register("other", other.port, service_id=f"{scene.unique}-other", tags=["http"])
    wait_until(lambda: d.reloads() > reloads, 10, what="a reload for the new route")
    scene.settle("other")
    assert d.bodies("other", 4) == {"other": 4}
    assert d.bodies("shop", 4, **{"X-Canary": "always"}) == {"canary-2": 4}
    assert d.bodies("shop", 4, **{"X-Canary": "never"}) == {"stable": 4}


def test_a_canary_share_changed_in_kv_is_a_push_not_a_reload(scene, dynamic):
    stable, canary = scene.http_backend("stable"), scene.http_backend("canary")
    scene.register("split", stable.port, service_id=f"{scene.unique}-stable", tags=["http"])
    scene.register("split", canary.port, service_id=f"{scene.unique}-canary", tags=["http"],
                   meta={"canary": "true", "canary_percent": "10"})
    d = dynamic()
    scene.settle("split")
    workers, reloads = d.workers(), d.reloads()

    def shares(count: int = 200) -> float:
        return d.clients("split", count)["canary"] / count
    assert 0.04 <= shares() <= 0.16, "the Lua split: 10 % of clients"
    d.changed(lambda: scene.route_setting("split", "canary_percent", "50"))
    assert 0.38 <= shares() <= 0.62
    d.changed(lambda: scene.route_setting("split", "canary_percent", "0"))
    assert shares(50) == 0 and d.bodies("split", 4, **{"X-Canary": "always"}) == {"canary": 4}, "a dark launch"
    d.changed(lambda: scene.route_setting("split", "canary_percent", "100"))
    assert shares(50) == 1 and d.bodies("split", 4, **{"X-Canary": "never"}) == {"stable": 4}
    assert d.workers() == workers and d.reloads() == reloads, "every share served by the same workers"


def test_a_restarted_nginx_serves_the_right_peers_from_its_first_request(scene, dynamic):
    a, b = scene.http_backend("a"), scene.http_backend("b")
    scene.register("web", a.port, service_id=f"{scene.unique}-a", tags=["http"])
    d = dynamic()
    scene.settle("web")
    # Two catalog changes: the first push may carry the arrival alone, so wait for what both make.
    scene.register("web", b.port, service_id=f"{scene.unique}-b", tags=["http"])
    scene.consul.deregister(f"{scene.unique}-a")
    wait_until(lambda: d.bodies("web", 4) == {"b": 4}, 10, what="nginx serving b alone")
    scene.nginx.stop()  # its shared dict is gone with it
    scene.nginx.start()
    assert scene.nginx.get(f"web.{scene.domain}").text.strip() == "b", "the very first request"
    assert d.bodies("web", 4) == {"b": 4}


def test_a_change_is_pushed_as_a_patch_and_onto_another_table_the_whole_table_follows(scene, dynamic, tmp_path):
    from renderer.peers.sync import PeerSync
    from renderer.peers.table import PeerTable
    a, b, c = scene.http_backend("a"), scene.http_backend("b"), scene.http_backend("c")
    scene.register("web", a.port, service_id=f"{scene.unique}-a", tags=["http"])
    scene.register("api", a.port, service_id=f"{scene.unique}-api", tags=["http"])
    d = dynamic()
    scene.settle("web")
    d.changed(lambda: scene.register("web", b.port, service_id=f"{scene.unique}-b", tags=["http"]))
    assert "(a patch of 1 pool(s)" in d.daemon.log
    assert d.bodies("web", 8) == {"a": 4, "b": 4}
    # Someone else's table in nginx (another renderer's, a file of an older one): a patch made from the
    # table this renderer confirmed is refused, and the whole table follows.
    sync = PeerSync(tmp_path / "other", scene.nginx.prefix / "nginx-renderer-peers.sock")
    stranger = PeerTable((("web", (("127.0.0.1", c.port, 1),)),))
    sync.push(stranger, sync.new_version())
    assert d.bodies("web", 4) == {"c": 4} and d.bodies("api", 2) != {"a": 2}, "api's pool is gone from nginx"
    workers = d.workers()
    d.changed(lambda: scene.consul.deregister(f"{scene.unique}-a"))
    assert "nginx did not take a patch of the peer table (409: refused: a patch onto table" in d.daemon.log
    assert d.bodies("web", 4) == {"b": 4} and d.bodies("api", 2) == {"a": 2}, "the whole table, api's pool too"
    assert d.workers() == workers and d.reloads() == 1


def test_a_websocket_stays_open_through_100_instance_changes(scene, dynamic):
    from websockets.sync.client import connect
    echo = WebsocketBackend()
    scene.closers.append(echo.close)
    scene.register("ws", echo.port, service_id=f"{scene.unique}-ws", tags=["http"], meta={"timeout": "300s"})
    spare_id = f"{scene.unique}-spare"
    scene.service_ids.append(spare_id)
    d = dynamic()
    # A plain GET reaches the websocket backend, which refuses it (400 or 426): the route is in.
    wait_until(lambda: scene.get("ws").status_code in (400, 426), 10, what="the route to the websocket backend")
    workers = d.workers()
    raw = socket.create_connection(("127.0.0.1", scene.nginx.http_port), timeout=5)
    with connect(f"ws://ws.{scene.domain}/chat", sock=raw) as ws:
        for n in range(100):  # another instance of the service comes and goes, 100 times
            if n % 2 == 0:
                d.changed(lambda: scene.register("ws", echo.port, service_id=spare_id, tags=["http"],
                                                 meta={"timeout": "300s"}))
            else:
                d.changed(lambda: scene.consul.deregister(spare_id))
            ws.send(f"ping {n}")
            assert ws.recv(timeout=5) == f"ping {n}"
    assert echo.messages == 100 and d.workers() == workers


def test_a_failing_peer_is_skipped_and_its_requests_retried(scene, dynamic):
    good = scene.http_backend("good")
    scene.register("flaky", good.port, service_id=f"{scene.unique}-good", tags=["http"])
    d = dynamic()
    scene.settle("flaky")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connections are refused
    d.changed(lambda: scene.register("flaky", dead_port, service_id=f"{scene.unique}-dead", tags=["http"]))
    assert d.bodies("flaky", 30) == {"good": 30}, "every request answered: the dead peer's tries go to the good one"


def test_retries_through_the_lua_balancer_take_a_502_on_and_never_replay_a_post(scene, dynamic):
    import requests
    failing, working = EchoBackend("failing", status=502), EchoBackend("working")
    meta = {"retry_on": "error,timeout,502", "retries": "1"}
    for server in (failing, working):
        scene.closers.append(server.close)
        scene.register("retried", server.port, service_id=f"{scene.unique}-{server.name}", tags=["http"], meta=meta)
    dynamic()
    scene.nginx.settled()  # no request yet: three failures take a peer out (MAX_FAILS), and these are counted

    def ask(method: str) -> int:
        return requests.request(method, f"http://127.0.0.1:{scene.nginx.http_port}/", data=b"{}", timeout=5,
                                headers={"Host": f"retried.{scene.domain}"}).status_code
    posted = [ask("POST") for _ in range(4)]  # round robin: two reach the failing instance
    assert failing.methods["POST"] >= 1 and posted.count(502) == failing.methods["POST"], "reached it: not replayed"
    assert failing.methods["POST"] + working.methods["POST"] == 4
    assert [ask("GET") for _ in range(4)] == [200] * 4 and failing.methods["GET"] >= 1, "a GET is taken on"


def test_once_pushes_the_peer_table_and_a_second_once_moves_instances_without_a_reload(scene, tmp_path):
    if not scene.nginx.lua:
        require.unavailable("nginx's Lua module (libnginx-mod-http-lua)")
    from tests.support.renderer_process import run_once
    a, b = scene.http_backend("a"), scene.http_backend("b")
    scene.register("solo", a.port, service_id=f"{scene.unique}-a", tags=["http"])
    args = [*scene.common_args(), *scene.default_templates(), "--dynamic-peers", "--peers-dir",
            str(tmp_path / "peers"), "--var", f"socket_dir={scene.nginx.prefix}"]
    first = run_once(*args)
    assert first.returncode == 0, first.stderr
    assert "nginx reload confirmed" in first.stderr and "nginx took peer table" in first.stderr
    scene.settle("solo")
    assert scene.get("solo").text.strip() == "a"
    workers = set(children(scene.nginx.pid()))

    scene.register("solo", b.port, service_id=f"{scene.unique}-b", tags=["http"])
    scene.consul.deregister(f"{scene.unique}-a")
    second = run_once(*args)
    assert second.returncode == 0, second.stderr
    assert "nginx reload" not in second.stderr and "nginx took peer table" in second.stderr
    assert {scene.get("solo").text.strip() for _ in range(6)} == {"b"}
    assert set(children(scene.nginx.pid())) == workers, "no reload: the same workers"


def test_once_fails_with_one_line_when_nginx_does_not_take_the_table(scene, tmp_path):
    if not scene.nginx.lua:
        require.unavailable("nginx's Lua module (libnginx-mod-http-lua)")
    from tests.support.renderer_process import run_once
    a = scene.http_backend("a")
    scene.register("lone", a.port, service_id=f"{scene.unique}-a", tags=["http"])
    args = [*scene.common_args(), *scene.default_templates(), "--dynamic-peers", "--peers-dir",
            str(tmp_path / "peers"), "--var", f"socket_dir={scene.nginx.prefix}"]
    assert run_once(*args).returncode == 0
    scene.register("lone", a.port, service_id=f"{scene.unique}-a", tags=["http"], meta={"weight": "2"})
    scene.nginx.stop()  # nobody answers on the peer socket now
    try:
        failed = run_once(*args)
    finally:
        scene.nginx.start()
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert "peer endpoint" in last and str(scene.nginx.prefix) in last, last
