"""Routes declared by meta, through the real nginx with real clients: every key, TLS three ways, conflicts.

Each test registers services with the meta a container would carry
(``SERVICE_<KEY>`` labels become these keys), renders the default templates
with ``renderer once`` and asks nginx as a client would.
"""

from __future__ import annotations

import collections
import json
import socket
import ssl

import pytest
import requests

from tests.support.route_backends import (AuthBackend, ClientCertTlsBackend, EchoBackend, GrpcBackend,
                                          WebsocketBackend, grpc_say)


def backend(routing, name, tls=None) -> EchoBackend:
    server = EchoBackend(name, tls=tls)
    routing.scene.closers.append(server.close)
    return server


def answer(response) -> dict:
    return json.loads(response.text if hasattr(response, "text") else response.data)


def test_three_services_share_a_host_by_path_on_segment_boundaries(routing):
    scene, shop = routing.scene, routing.host("shop")
    for name, path in (("front", "/"), ("cart", "/cart"), ("api", "/api/v1")):
        scene.register(name, backend(routing, name).port, tags=["http"], meta={"hosts": shop, "path": path})
    routing.once()
    asked = {path: answer(scene.nginx.get(shop, path))["name"] for path in
             ("/", "/cart", "/cart/items", "/cartoons", "/api/v1", "/api/v1/users", "/api/v2")}
    assert asked == {"/": "front", "/cart": "cart", "/cart/items": "cart", "/cartoons": "front",
                     "/api/v1": "api", "/api/v1/users": "api", "/api/v2": "front"}


def test_strip_path_and_its_prefix_header_and_redirect(routing):
    scene, host = routing.scene, routing.host("api")
    scene.register("api", backend(routing, "api").port, tags=["http"],
                   meta={"hosts": host, "path": "/v1", "strip_path": "true"})
    routing.once()
    seen = answer(scene.nginx.get(host, "/v1/users?id=3"))
    assert seen["path"] == "/users?id=3" and seen["headers"]["x-forwarded-prefix"] == "/v1"
    bare = requests.post(f"http://127.0.0.1:{scene.nginx.http_port}/v1?x=1", headers={"Host": host}, data=b"{}",
                         allow_redirects=False, timeout=2)
    assert bare.status_code == 308 and bare.headers["Location"].endswith("/v1/?x=1"), "308: a POST stays a POST"


def test_svc7_svc8_and_svc9_side_by_side_on_one_https_port(routing):
    """Terminated (plain backend), re-encrypted (HTTPS backend), passed through (backend checks clients)."""
    scene, ca = routing.scene, routing.ca
    svc7, svc8, svc9 = routing.host("svc7"), routing.host("svc8"), routing.host("svc9")
    for name in (svc7, svc8):
        ca.issue(name)
    scene.register("svc7", backend(routing, "svc7").port, tags=["http"], meta={"hosts": svc7, "tls": "terminate"})
    backend_cert = ca.issue(svc8, directory=ca.directory)
    scene.register("svc8", backend(routing, "svc8", tls=backend_cert).port, tags=["http"],
                   meta={"hosts": svc8, "tls": "terminate", "backend": "https"})
    passthrough = ClientCertTlsBackend("svc9", ca.issue(svc9, directory=ca.directory), ca.ca)
    scene.closers.append(passthrough.close)
    scene.register("svc9", passthrough.port, tags=["http"], meta={"hosts": svc9, "tls": "passthrough"})
    routing.once("--var", f"backend_ca={ca.ca}")

    assert served_certificate(routing, svc7) == svc7 and served_certificate(routing, svc8) == svc8
    seven = answer(routing.https(svc7))
    assert seven["name"] == "svc7" and seven["headers"]["x-forwarded-proto"] == "https"
    assert seven["headers"]["x-real-ip"] == "127.0.0.1", "the client address survives the SNI switch (PROXY)"
    assert answer(routing.https(svc8))["name"] == "svc8"
    client = ca.issue("client-one", directory=ca.directory, client=True)
    assert tls_hello(routing, svc9, client) == "svc9 for client-one", "TLS untouched, client cert checked"
    redirect = requests.post(f"http://127.0.0.1:{scene.nginx.http_port}/", headers={"Host": svc7}, data=b"{}",
                             allow_redirects=False, timeout=2)
    assert redirect.status_code == 308 and redirect.headers["Location"] == f"https://{svc7}:{routing.https_port}/"
    with pytest.raises(ssl.SSLError):
        served_certificate(routing, routing.host("unknown"))


def served_certificate(routing, server_name: str) -> str:
    context = ssl.create_default_context(cafile=str(routing.ca.ca))
    with socket.create_connection(("127.0.0.1", routing.https_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return dict(item[0] for item in tls.getpeercert()["subject"])["commonName"]


def tls_hello(routing, server_name: str, client_certificate) -> str:
    context = ssl.create_default_context(cafile=str(routing.ca.ca))
    context.load_cert_chain(*map(str, client_certificate))
    with socket.create_connection(("127.0.0.1", routing.https_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.recv(256).decode().strip()


def test_https_alone_listens_on_the_port_itself(routing):
    scene, host = routing.scene, routing.host("alone")
    routing.ca.issue(host)
    scene.register("alone", backend(routing, "alone").port, tags=["http"],
                   meta={"hosts": host, "tls": "terminate", "https_redirect": "false"})
    routing.once()
    assert f"listen 127.0.0.1:{routing.https_port} ssl http2;" in scene.outputs[0].read_text()
    assert answer(routing.https(host))["name"] == "alone"
    assert answer(scene.nginx.get(host))["name"] == "alone", "https_redirect=false serves plain HTTP too"


def test_grpc_over_http2(routing):
    scene, host = routing.scene, routing.host("rpc")
    routing.ca.issue(host)
    server = GrpcBackend("rpc")
    scene.closers.append(server.close)
    scene.register("rpc", server.port, tags=["http"], meta={"hosts": host, "tls": "terminate", "backend": "grpc"})
    routing.once()
    assert grpc_say(routing.https_port, host, routing.ca.ca.read_bytes(), b"hello") == b"rpc:hello"


def test_websockets_pass_on_every_route(routing):
    from websockets.sync.client import connect
    scene, host = routing.scene, routing.host("ws")
    echo = WebsocketBackend()
    scene.closers.append(echo.close)
    scene.register("ws", echo.port, tags=["http"], meta={"hosts": host, "timeout": "300s"})
    routing.once()
    raw = socket.create_connection(("127.0.0.1", scene.nginx.http_port), timeout=5)
    with connect(f"ws://{host}/chat", sock=raw) as socket_:
        for n in range(5):
            socket_.send(f"ping {n}")
            assert socket_.recv(timeout=5) == f"ping {n}"
    assert echo.messages == 5


def test_auth_service_in_front_of_an_api(routing):
    scene, host = routing.scene, routing.host("secure")
    auth = AuthBackend()
    scene.closers.append(auth.close)
    scene.register(f"{scene.unique}-jwt", auth.port)
    scene.register("secure", backend(routing, "secure").port, tags=["http"],
                   meta={"hosts": host, "auth": f"service:{scene.unique}-jwt/verify", "auth_headers": "X-User,X-Role"})
    routing.once()
    assert scene.nginx.get(host).status_code == 401
    granted = requests.get(f"http://127.0.0.1:{scene.nginx.http_port}/x", timeout=2,
                           headers={"Host": host, "Authorization": "Bearer good"})
    assert granted.status_code == 200
    assert (answer(granted)["headers"]["x-user"], answer(granted)["headers"]["x-role"]) == ("alice", "admin")
    scene.consul.deregister(f"{scene.unique}-jwt-{auth.port}")
    routing.once()
    closed = requests.get(f"http://127.0.0.1:{scene.nginx.http_port}/x", timeout=2,
                          headers={"Host": host, "Authorization": "Bearer good"})
    assert closed.status_code == 503, "no auth instance: closed, never open"


def test_rate_limit_answers_429(routing):
    scene, host = routing.scene, routing.host("limited")
    scene.register("limited", backend(routing, "limited").port, tags=["http"],
                   meta={"hosts": host, "rate_limit": "2r/s", "rate_burst": "1"})
    routing.once()
    codes = collections.Counter(scene.nginx.get(host).status_code for _ in range(10))
    assert codes[429] >= 6 and codes[200] >= 1, codes


def test_a_rate_limit_without_a_burst_lets_five_times_its_rate_through_at_once(routing):
    scene, host = routing.scene, routing.host("burst")
    scene.register("burst", backend(routing, "burst").port, tags=["http"], meta={"hosts": host, "rate_limit": "1r/m"})
    routing.once()
    codes = [scene.nginx.get(host).status_code for _ in range(10)]
    assert codes == [200] * 6 + [429] * 4, "the first request and a burst of 5 (1r/m refills none meanwhile)"


def test_allow_list(routing):
    scene = routing.scene
    scene.register("outside", backend(routing, "outside").port, tags=["http"], meta={"allow": "10.0.0.0/8"})
    scene.register("inside", backend(routing, "inside").port, tags=["http"], meta={"allow": "10.0.0.0/8,127.0.0.1"})
    routing.once()
    assert scene.get("outside").status_code == 403 and scene.get("inside").status_code == 200


def test_max_body_and_timeout(routing):
    scene, host = routing.scene, routing.host("small")
    scene.register("small", backend(routing, "small").port, tags=["http"],
                   meta={"hosts": host, "max_body": "1k", "timeout": "1s"})
    routing.once()
    url = f"http://127.0.0.1:{scene.nginx.http_port}/"
    assert requests.post(url, data=b"x" * 512, headers={"Host": host}, timeout=5).status_code == 200
    assert requests.post(url, data=b"x" * 4096, headers={"Host": host}, timeout=5).status_code == 413
    assert requests.get(f"{url}slow?s=3", headers={"Host": host}, timeout=10).status_code == 504


def test_weights_share_a_pool(routing):
    scene = routing.scene
    scene.register("weighed", backend(routing, "light").port, tags=["http"], meta={"weight": "1"})
    scene.register("weighed", backend(routing, "heavy").port, tags=["http"], meta={"weight": "4"})
    routing.once()
    counts = collections.Counter(answer(scene.get("weighed"))["name"] for _ in range(50))
    assert counts == {"light": 10, "heavy": 40}, counts  # nginx's smooth weighted round robin is exact


def test_canary_takes_its_percentage_of_clients_and_keeps_each_client(routing):
    scene = routing.scene
    for n in range(3):
        scene.register("shop", backend(routing, "stable").port, tags=["http"], meta={"canary_percent": "10"},
                       service_id=f"{scene.unique}-stable-{n}")
    scene.register("shop", backend(routing, "canary").port, tags=["http"],
                   meta={"canary_percent": "10", "canary": "true"}, service_id=f"{scene.unique}-canary")
    routing.once()
    host, url = routing.host("shop"), f"http://127.0.0.1:{scene.nginx.http_port}/"
    session = requests.Session()
    pools = [answer(session.get(url, headers={"Host": host, "User-Agent": f"client-{n}"}, timeout=2))["name"]
             for n in range(1000)]
    share = pools.count("canary") / len(pools)
    assert 0.06 <= share <= 0.14, share  # 10 % of clients, whatever the instance counts (3 stable, 1 canary)
    sticky = {answer(session.get(url, headers={"Host": host, "User-Agent": "client-7"}, timeout=2))["name"]
              for _ in range(10)}
    assert sticky == {pools[7]}
    by_cookie = {answer(session.get(url, headers={"Host": host, "Cookie": "canary_id=user-42",
                                                  "User-Agent": f"agent-{n}"}, timeout=2))["name"] for n in range(10)}
    assert len(by_cookie) == 1, "one user, one pool, whatever their browser"
    for choice, pool in (("always", "canary"), ("never", "stable")):
        forced = {answer(session.get(url, headers={"Host": host, "X-Canary": choice, "User-Agent": f"t-{n}"},
                                     timeout=2))["name"] for n in range(10)}
        assert forced == {pool}, (choice, forced)


def test_conflicting_claims_are_settled_and_named(routing):
    scene, host = routing.scene, routing.host("contested")
    scene.register(f"{scene.unique}-b", backend(routing, "b").port, tags=["http"], meta={"hosts": host})
    scene.register(f"{scene.unique}-a", backend(routing, "a").port, tags=["http"], meta={"hosts": host})
    scene.register("owner", backend(routing, "owner").port, tags=["http"])
    scene.register(f"{scene.unique}-thief", backend(routing, "thief").port, tags=["http"],
                   meta={"hosts": routing.host("owner")})
    result = routing.once()
    # b registered first: the host stays with it, though a sorts first (a newcomer takes nothing away).
    assert answer(scene.nginx.get(host))["name"] == "b" and answer(scene.get("owner"))["name"] == "owner"
    assert f"service {scene.unique}-a path='/': host {host} path / is routed to service {scene.unique}-b" \
        in result.stderr
    assert f"host {routing.host('owner')} is service owner's default name" in result.stderr
    text = scene.outputs[0].read_text()
    assert text.count(f"server_name {host};") == 1 and text.count(f"server_name {routing.host('owner')};") == 1


def test_a_missing_certificate_leaves_that_host_out_and_the_rest_applies(routing):
    scene, host = routing.scene, routing.host("nocert")
    scene.register("nocert", backend(routing, "nocert").port, tags=["http"], meta={"hosts": host, "tls": "terminate"})
    scene.register("fine", backend(routing, "fine").port, tags=["http"])
    result = routing.once()
    assert f"no certificate ({routing.ca.cert_dir}/{host}.crt not found" in result.stderr
    assert answer(scene.get("fine"))["name"] == "fine" and scene.nginx.get(host).status_code == 404


def test_hostile_values_are_refused_per_route(routing):
    scene = routing.scene
    hostile = {"dots": {"path": "/a/../etc"}, "regex": {"path": "/v1(.*)"}, "badhost": {"hosts": "bad_host"},
               "headers": {"auth": "service:x", "auth_headers": "X-A,Bad_Header"}, "body": {"max_body": "lots"}}
    for name, meta in hostile.items():
        scene.register(f"{scene.unique}-{name}", backend(routing, name).port, tags=["http"], meta=meta)
    scene.register("good", backend(routing, "good").port, tags=["http"])
    result = routing.once()
    for name in hostile:
        assert f"route refused: service {scene.unique}-{name} instance" in result.stderr, name
    assert answer(scene.get("good"))["name"] == "good"
    text = scene.outputs[0].read_text()
    assert ".." not in text and "(.*)" not in text and "bad_host" not in text


def test_unknown_names_get_404_and_unknown_tls_names_no_handshake(routing):
    scene = routing.scene
    scene.register("known", backend(routing, "known").port, tags=["http"])
    routing.ca.issue(routing.host("tls-known"))
    scene.register("tls-known", backend(routing, "tls-known").port, tags=["http"], meta={"tls": "terminate"})
    routing.once()
    assert scene.nginx.get("nobody.example.org").status_code == 404
    with pytest.raises(ssl.SSLError):
        served_certificate(routing, "nobody.example.org")
    assert served_certificate(routing, routing.host("tls-known")) == routing.host("tls-known")


def test_renderer_routes_prints_the_live_table_and_explains_a_url(routing):
    import subprocess
    from tests.support.renderer_process import RENDERER
    scene, shop = routing.scene, routing.host("shop")
    scene.register("front", backend(routing, "front").port, tags=["http"], meta={"hosts": shop})
    api = backend(routing, "api")
    scene.register("api", api.port, tags=["http"], meta={"hosts": shop, "path": "/api", "strip_path": "true"})
    scene.register(f"{scene.unique}-bad", api.port, tags=["http"], meta={"path": "/x/../y"})
    args = ["--consul-addr", scene.consul.address, "--var", f"domain={scene.domain}"]
    printed = subprocess.run([RENDERER, "routes", *args], capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0, printed.stderr
    rows = [line.split() for line in printed.stdout.splitlines()]
    assert ["http", shop, "/api", "api", f"127.0.0.1:{api.port}", "w1", "[strip_path]"] in rows, printed.stdout
    assert f"service {scene.unique}-bad instance" in printed.stdout.split("refused:")[1]
    explained = subprocess.run([RENDERER, "routes", *args, "--url", f"http://{shop}/api/users"],
                               capture_output=True, text=True, timeout=30)
    assert explained.stdout == (f"http://{shop}/api/users: host {shop}, longest matching prefix /api among /, /api "
                                f"-> service api: 127.0.0.1:{api.port} w1 [strip_path]; the backend sees /users\n")


def test_a_tcp_service_tagged_udp_listens_on_udp(routing):
    from tests.support.ports import free_port
    from tests.support.route_backends import UdpEcho
    scene = routing.scene
    echo = UdpEcho()
    scene.closers.append(echo.close)
    port = free_port()
    scene.register(f"{scene.unique}-dns", echo.port, tags=["tcp", "udp"], meta={"listen_port": str(port)})
    routing.once()
    assert f"listen 127.0.0.1:{port} udp;" in scene.outputs[1].read_text()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        client.sendto(b"query", ("127.0.0.1", port))
        assert client.recvfrom(2048)[0] == b"query"
