"""One bad registration costs one service, never the file: real Consul, real nginx, the daemon.

Every registration an attacker with ``service:write`` found to freeze a file,
take another service's place or stop the render pass, registered beside
working services: the working ones keep serving, a service registered
afterwards is routed as fast as ever, and each culprit is named. Then the
mechanism behind the validation: a file nginx refuses for one service's
sake applies without that service.
"""

from __future__ import annotations

import json
import socket
import ssl

import requests

from tests.support.ports import free_port
from tests.support.route_backends import EchoBackend
from tests.support.waiting import wait_until


def echo_backend(scene, name, tls=None) -> EchoBackend:
    server = EchoBackend(name, tls=tls)
    scene.closers.append(server.close)
    return server


def name_of(response) -> str:
    """The backend that answered, or the HTTP status nginx answered itself with."""
    status = getattr(response, "status_code", None) or response.status
    if status != 200:
        return f"HTTP {status}"
    return json.loads(response.text if hasattr(response, "text") else response.data)["name"]


def served_certificate(routing, server_name: str) -> str:
    context = ssl.create_default_context(cafile=str(routing.ca.ca))
    with socket.create_connection(("127.0.0.1", routing.https_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return dict(item[0] for item in tls.getpeercert()["subject"])["commonName"]


def echoes(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
        connection.sendall(b"ping\n")
        return connection.recv(16) == b"ping\n"


def test_no_registration_freezes_a_file_or_takes_another_services_place(routing):
    scene, ca, domain = routing.scene, routing.ca, routing.scene.domain
    web = echo_backend(scene, "anchorhttp")
    scene.register("anchorhttp", web.port, tags=["http"])
    tls_host = routing.host("anchortls")
    ca.issue(tls_host)
    scene.register("anchortls", echo_backend(scene, "anchortls").port, tags=["http"], meta={"tls": "terminate"})
    passed_host = routing.host("anchorpass")
    scene.register("anchorpass", echo_backend(scene, "anchorpass", tls=ca.issue(passed_host, ca.directory)).port,
                   tags=["http"], meta={"tls": "passthrough"})
    tcp_port, twin_port = free_port(), free_port()
    echo = scene.tcp_echo()
    scene.register("anchortcp", echo.port, tags=["tcp"], meta={"listen_port": str(tcp_port)})

    # Registered after the anchors: what must cost only itself.
    long_host = ".".join(["a" * 60, "b" * 60, "c" * 60]) + "." + domain  # valid, and over nginx's bucket
    hostile = [
        ("badaddr", {"address": "nonexistent.invalid"}), ("badexp", {"address": "1e3"}),
        ("badoctet", {"address": "300.1.1.1"}), ("scoped", {"address": "fe80::1%eth0"}),
        ("scopedallow", {"meta": {"allow": "fe80::1%eth0"}}), ("ANCHORHTTP", {}),
        ("longhost", {"meta": {"hosts": long_host}}), ("renderer_closed", {"tags": ["tcp"],
                                                                         "meta": {"listen_port": str(free_port())}}),
        ("0a767", {"tags": ["tcp"], "meta": {"listen_port": str(tcp_port)}}),
        ("wild", {"meta": {"hosts": f"*.{domain}", "tls": "passthrough"}}),
        ("CASE1", {}), ("claimer", {"meta": {"hosts": f"case1.{domain}"}}),
    ]
    for name, fields in hostile:
        scene.register(name, web.port, service_id=f"{scene.unique}-{name}", address=fields.get("address", "127.0.0.1"),
                       tags=fields.get("tags", ["http"]), meta=fields.get("meta"))
    for index, bad in enumerate(("22", "99999", "abc", "²")):  # one bad listen_port per instance, among good ones
        scene.register("voted", echo.port, service_id=f"{scene.unique}-voted-bad{index}", tags=["tcp"],
                       meta={"listen_port": bad})
    for index in range(5):
        scene.register("voted", echo.port, service_id=f"{scene.unique}-voted-{index}", tags=["tcp"],
                       meta={"listen_port": str(twin_port)})

    daemon = scene.daemon(*routing.args("--wait", "0"))
    wait_until(lambda: name_of(scene.nginx.get(f"anchorhttp.{domain}")) == "anchorhttp", 20,
               what="the plain anchor served")
    assert name_of(routing.https(tls_host)) == "anchortls"
    assert served_certificate(routing, tls_host) == tls_host, "the passthrough wildcard did not take it"
    assert served_certificate(routing, passed_host) == passed_host, "passed through to its instance"
    assert echoes(tcp_port) and echoes(twin_port)
    # The agent hands registrations to the catalog on its own time: the last ones may come a pass later.
    wait_until(lambda: name_of(scene.nginx.get(f"case1.{domain}")) == "anchorhttp", 10,  # every hostile one
               what="CASE1's default name routed to CASE1")                               # answers so

    # Nothing is frozen: a service registered now is routed as fast as ever.
    scene.register("newcomer", echo_backend(scene, "newcomer").port, tags=["http"])
    wait_until(lambda: name_of(scene.nginx.get(f"newcomer.{domain}")) == "newcomer", 10,
               what="a service registered after the hostile ones routed")
    log = daemon.log
    for culprit in (f"'{scene.unique}-badaddr'", f"'{scene.unique}-badexp'", f"'{scene.unique}-badoctet'",
                    f"'{scene.unique}-scoped'", "service scopedallow", "service ANCHORHTTP: its name differs",
                    f"service longhost hosts='{long_host}'", "service 0a767 listen_port",
                    "service claimer hosts=", f"instance {scene.unique}-voted-bad1 listen_port='99999'",
                    f"instance {scene.unique}-voted-bad3 listen_port='²'"):
        assert culprit in log, culprit
    assert "render pass failed" not in log and "nginx -t refused" not in log
    assert requests.get(f"http://127.0.0.1:{scene.nginx.http_port}/", timeout=2,
                        headers={"Host": f"anchorhttp.{domain}"}).status_code == 200


# An operator's template (they may drop their own in): weight 7 renders a zone nginx finds too small. No
# validation knows that; nginx says it, with the file and line.
ZONES = """{% macro upstream(pool) %}
upstream {{ pool.name }}_weighted {
{% if pool.servers[0].weight == 7 %}
    zone {{ pool.name }}_weighted 1k;
{% endif %}
{% for server in pool.servers %}
    server {{ server.address }} weight={{ server.weight }};
{% endfor %}
}
{% endmacro %}
{{ each(routes().pools, upstream) }}
"""


def test_a_file_nginx_refuses_for_one_service_applies_without_it(scene, tmp_path):
    template = tmp_path / "zones.conf.j2"
    template.write_text(ZONES)
    output = scene.output("http", "-zones")
    backend = scene.http_backend("good")
    for name in ("good1", "good2", "heavy"):
        scene.register(name, backend.port, service_id=f"{scene.unique}-{name}", tags=["http"],
                       meta={"weight": "7"} if name == "heavy" else {})
    status = free_port()
    daemon = scene.daemon(*scene.common_args(), "--template", f"{template}:{output}",
                          "--status-address", f"127.0.0.1:{status}", "--log-level", "debug")
    daemon.wait_for_log("left out service heavy: nginx refused it")
    # nginx -t reads the candidate where nginx would, so the refused file stands there until it is
    # rendered again without heavy: wait for that one.
    wait_until(lambda: output.exists() and "upstream good2_weighted" in output.read_text()
               and "heavy" not in output.read_text(), 10, what="the file applied without heavy")
    daemon.wait_for_log(" done at catalog index ")
    line = next(line for line in daemon.log.splitlines() if "left out service heavy" in line)
    assert f'zone "heavy_weighted" is too small in {output}:' in line
    wait_until(lambda: "renderer_services_refused_by_nginx 1.0" in requests.get(
        f"http://127.0.0.1:{status}/metrics", timeout=5).text, 10, what="the metric counting heavy")
    # Its retry comes (1 s, then longer): nginx is asked again, refuses again, heavy stays out.
    daemon.wait_for_log("trying service heavy again (its retry is due)")
    wait_until(lambda: daemon.log.count("left out service heavy") >= 2, 10, what="heavy refused again")
    passes = daemon.log.count(" done at catalog index ")
    wait_until(lambda: daemon.log.count(" done at catalog index ") > passes, 10, what="that pass done")
    assert "heavy" not in output.read_text() and "upstream good1_weighted" in output.read_text()
    assert requests.get(f"http://127.0.0.1:{status}/ready", timeout=5).status_code == 200
    assert "heavy" in requests.get(f"http://127.0.0.1:{status}/", timeout=5).text

    # Its registration fixed: it is tried again at once, and routed.
    scene.register("heavy", backend.port, service_id=f"{scene.unique}-heavy", tags=["http"], meta={"weight": "3"})
    wait_until(lambda: "upstream heavy_weighted" in output.read_text(), 10, what="heavy routed once fixed")
    wait_until(lambda: "renderer_services_refused_by_nginx 0.0" in requests.get(
        f"http://127.0.0.1:{status}/metrics", timeout=5).text, 10, what="the metric back to 0")
