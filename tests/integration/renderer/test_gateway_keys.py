"""The gateway keys through the real nginx with real clients: CORS, methods, headers, retries, redirects.

As in test_routes_live: each test registers the meta a container's
``SERVICE_<KEY>`` labels become, renders the default templates with
``renderer once`` and asks nginx as a client (or a browser's preflight) would.
"""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
import requests

from tests.support.ports import free_port
from tests.support.route_backends import EchoBackend, GrpcBackend, grpc_health
from tests.support.waiting import wait_until

APP, OTHER = "https://app.example.test", "https://evil.example.test"


def backend(routing, name, **options) -> EchoBackend:
    server = EchoBackend(name, **options)
    routing.scene.closers.append(server.close)
    return server


def ask(routing, host, method="GET", path="/", body: bytes | None = None, **headers) -> requests.Response:
    return requests.request(method, f"http://127.0.0.1:{routing.scene.nginx.http_port}{path}", data=body,
                            headers={"Host": host, **headers}, allow_redirects=False, timeout=5)


def preflight(routing, host, origin) -> requests.Response:
    """What a browser sends before a cross-origin PUT with a JSON body."""
    return ask(routing, host, "OPTIONS", "/items", Origin=origin, **{
        "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type"})


def cors_headers(response) -> dict:
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_cors_preflight_and_answers_only_for_the_allowed_origins(routing):
    scene, host = routing.scene, routing.host("corsapi")
    # The instance's own CORS header is the edge's to decide: it never reaches the client.
    server = backend(routing, "corsapi", headers={"Access-Control-Allow-Origin": "*"})
    scene.register("corsapi", server.port, tags=["http"],
                   meta={"hosts": host, "cors_origins": f"{APP},http://localhost:3000", "cors_credentials": "true",
                         "cors_methods": "GET,PUT", "cors_max_age": "600"})
    routing.once()

    allowed = preflight(routing, host, APP)
    assert allowed.status_code == 204 and server.methods["OPTIONS"] == 0, "answered by nginx"
    assert cors_headers(allowed) == {
        "access-control-allow-origin": APP, "access-control-allow-methods": "GET, HEAD, OPTIONS, PUT",
        "access-control-allow-credentials": "true", "access-control-max-age": "600",
        "access-control-allow-headers": "Authorization, Cache-Control, Content-Type, DNT, If-Modified-Since, "
                                        "Keep-Alive, Range, User-Agent, X-Requested-With"}
    assert allowed.headers["Vary"] == "Origin"
    refused = preflight(routing, host, OTHER)
    assert cors_headers(refused) == {}, "another origin's preflight gets no CORS header"

    real = ask(routing, host, "PUT", "/items", Origin=APP)
    assert real.status_code == 200 and cors_headers(real) == {
        "access-control-allow-origin": APP, "access-control-allow-credentials": "true"}
    assert "Origin" in real.headers["Vary"]
    assert cors_headers(ask(routing, host, Origin=OTHER)) == {}
    assert cors_headers(ask(routing, host)) == {}, "no Origin, no CORS header (a same-origin request)"


def test_cors_for_any_origin_and_star_with_credentials_refused(routing):
    scene, anyone, both = routing.scene, routing.host("corsany"), routing.host("corsboth")
    scene.register("corsany", backend(routing, "corsany").port, tags=["http"],
                   meta={"hosts": anyone, "cors_origins": "*"})
    scene.register("corsboth", backend(routing, "corsboth").port, tags=["http"],
                   meta={"hosts": both, "cors_origins": "*", "cors_credentials": "true"})
    result = routing.once()
    assert ask(routing, anyone, Origin=OTHER).headers["Access-Control-Allow-Origin"] == "*"
    assert preflight(routing, anyone, OTHER).status_code == 204
    assert "service corsboth cors_origins='*': browsers never send credentials to any origin" in result.stderr
    served = ask(routing, both, Origin=APP)
    assert served.status_code == 200 and cors_headers(served) == {}, "still served, no cross-origin answer"


def test_methods_outside_the_list_get_405_with_allow(routing):
    scene, host = routing.scene, routing.host("readonly")
    server = backend(routing, "readonly")
    scene.register("readonly", server.port, tags=["http"], meta={"hosts": host, "methods": "GET"})
    routing.once()
    assert ask(routing, host).status_code == 200 and ask(routing, host, "HEAD").status_code == 200
    posted = ask(routing, host, "POST")
    assert posted.status_code == 405 and posted.headers["Allow"] == "GET, HEAD"
    assert server.methods["POST"] == 0


def test_request_and_response_headers_set_and_removed(routing):
    scene, host = routing.scene, routing.host("headers")
    server = backend(routing, "headers", headers={"X-Powered-By": "php/5", "X-Kept": "yes"})
    scene.register("headers", server.port, tags=["http"],
                   meta={"hosts": host, "request_headers": "X-Env:prod,Cookie:",
                         "response_headers": "X-Frame-Options:DENY,X-Powered-By:"})
    routing.once()
    response = ask(routing, host, Cookie="session=1", **{"X-Env": "dev"})
    seen = response.json()["headers"]
    assert seen["x-env"] == "prod" and "cookie" not in seen, "set over the client's, and removed"
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["host"] == host, "the renderer's own still sent"
    assert response.headers["X-Frame-Options"] == "DENY" and "X-Powered-By" not in response.headers
    assert response.headers["X-Kept"] == "yes"


def test_retries_take_a_502_to_the_next_instance_but_never_replay_a_post(routing):
    scene, host = routing.scene, routing.host("retried")
    failing, working = backend(routing, "failing", status=502), backend(routing, "working")
    for server in (failing, working):
        scene.register("retried", server.port, tags=["http"],
                       meta={"hosts": host, "retry_on": "error,timeout,502", "retries": "1"})
    routing.once()

    # Round robin puts two of four POSTs on the failing instance: they reached it, so nginx does not send
    # them again (a POST is not idempotent) and the client gets the 502.
    posted = [ask(routing, host, "POST").status_code for _ in range(4)]
    assert failing.methods["POST"] >= 1 and posted.count(502) == failing.methods["POST"]
    assert posted.count(200) == working.methods["POST"] and failing.methods["POST"] + working.methods["POST"] == 4
    # A GET is taken on to the working instance.
    assert [ask(routing, host).status_code for _ in range(4)] == [200] * 4 and failing.methods["GET"] >= 1


def test_behind_a_trusted_proxy_the_allow_list_sees_the_client_and_behind_another_the_proxy(routing):
    scene, host = routing.scene, routing.host("guarded")
    scene.register("guarded", backend(routing, "guarded").port, tags=["http"],
                   meta={"hosts": host, "allow": "203.0.113.7"})
    client = {"X-Forwarded-For": "203.0.113.7"}
    routing.once("--var", "trusted_proxies=127.0.0.0/8")  # this test's requests come from 127.0.0.1
    allowed = ask(routing, host, **client)
    assert allowed.status_code == 200 and allowed.json()["headers"]["x-real-ip"] == "203.0.113.7"
    assert ask(routing, host, **{"X-Forwarded-For": "198.51.100.1"}).status_code == 403
    assert ask(routing, host, **{"X-Forwarded-For": "203.0.113.7, 198.51.100.1"}).status_code == 403, \
        "the last address not trusted is the client's: one a client writes first cannot get it in"

    routing.once("--var", "trusted_proxies=192.0.2.1")  # the peer is not that proxy: its header is ignored
    assert ask(routing, host, **client).status_code == 403


def test_a_mirrored_service_gets_a_copy_and_the_client_does_not_wait_for_it(routing):
    scene, host = routing.scene, routing.host("primary")
    held = threading.Event()
    routing.scene.closers.append(held.set)
    shadow = backend(routing, "shadow", hold=held)
    scene.register("shadow", shadow.port)  # not routed itself: a copy is all it gets
    scene.register("primary", backend(routing, "primary").port, tags=["http"],
                   meta={"hosts": host, "mirror": "service:shadow"})
    routing.once()
    answered = ask(routing, host, "POST", "/orders?id=7", b'{"n": 1}')
    assert answered.status_code == 200 and answered.json()["name"] == "primary"
    wait_until(lambda: shadow.methods["POST"] == 1, 10, what="the copy reaching the shadow")
    assert not held.is_set(), "the client had its answer while the copy was still held"
    held.set()
    (copy,) = shadow.seen
    assert (copy["path"], copy["body_bytes"], copy["headers"]["host"]) == ("/orders?id=7", 8, host)


def test_plaintext_grpc_answers_its_health_check_on_the_h2c_listener(routing):
    import grpc
    scene, host = routing.scene, routing.host("plainrpc")
    server = GrpcBackend("plainrpc")
    scene.closers.append(server.close)
    scene.register("plainrpc", server.port, tags=["http"], meta={"hosts": host, "backend": "grpc"})
    h2c = free_port()
    routing.once("--var", f"h2c_port={h2c}")
    assert grpc_health(h2c, host) == 1 and grpc_health(h2c, host, "plainrpc") == 1, "SERVING, through nginx"
    with pytest.raises(grpc.RpcError) as unknown:
        grpc_health(h2c, routing.host("nobody"))
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED, "an unknown name: nginx's 404, no service"
    assert ask(routing, host).status_code == 404, "never on the HTTP/1 port"


def test_two_versions_on_one_host_and_path_are_split_by_a_header(routing):
    scene, host = routing.scene, routing.host("versioned")
    for name, meta in (("apiv1", {}), ("apiv2", {"match_header": "X-Version:2"}),
                       ("apibeta", {"path": "/beta", "match_header": "X-Beta:yes"})):
        scene.register(name, backend(routing, name).port, tags=["http"], meta={"hosts": host, **meta})
    routing.once()
    assert ask(routing, host, path="/items").json()["name"] == "apiv1"
    assert ask(routing, host, path="/items", **{"X-Version": "3"}).json()["name"] == "apiv1"
    second = ask(routing, host, "POST", "/items?x=1", b"{}", **{"X-Version": "2"}).json()
    assert (second["name"], second["method"], second["path"], second["body_bytes"]) == ("apiv2", "POST",
                                                                                        "/items?x=1", 2)
    assert ask(routing, host, path="/beta/x", **{"X-Beta": "yes"}).json()["name"] == "apibeta"
    assert ask(routing, host, path="/beta/x").status_code == 404, "the header route's path has no default"


def test_behind_a_balancer_speaking_the_proxy_protocol_its_header_names_the_client_on_http_and_https(routing):
    scene, ca = routing.scene, routing.ca
    plain, secure = routing.host("ppplain"), routing.host("ppsecure")
    ca.issue(secure)
    guard = {"allow": "203.0.113.7"}
    scene.register("ppplain", backend(routing, "ppplain").port, tags=["http"], meta={"hosts": plain, **guard})
    scene.register("ppsecure", backend(routing, "ppsecure").port, tags=["http"],
                   meta={"hosts": secure, "tls": "terminate", **guard})
    # A passed-through name puts the SNI switch on the HTTPS port: the header must cross it too.
    scene.register("ppsni", free_port(), tags=["http"], meta={"hosts": routing.host("ppsni"), "tls": "passthrough"})
    routing.once("--var", "trusted_proxies=127.0.0.0/8", "--var", "proxy_protocol=true")

    def through_balancer(client: str, port: int, host: str, tls: bool = False) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            if client:
                raw.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 {port}\r\n".encode())
            conn = ssl.create_default_context(cafile=str(ca.ca)).wrap_socket(raw, server_hostname=host) \
                if tls else raw
            conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
            return answer

    http, https = scene.nginx.http_port, routing.https_port
    assert through_balancer("203.0.113.7", http, plain).startswith(b"HTTP/1.1 200")
    assert b'"x-real-ip": "203.0.113.7"' in through_balancer("203.0.113.7", http, plain)
    assert through_balancer("198.51.100.1", http, plain).startswith(b"HTTP/1.1 403")
    assert through_balancer("203.0.113.7", https, secure, tls=True).startswith(b"HTTP/1.1 200")
    assert through_balancer("198.51.100.1", https, secure, tls=True).startswith(b"HTTP/1.1 403")
    assert through_balancer("", http, plain) == b"", "no PROXY header: nginx closes the connection"
