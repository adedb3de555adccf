"""`make demo` / `make demo-stop`: the whole loop on one machine, shown with real requests.

    container --(registrar)--> Consul --(renderer)--> nginx --> you

`up` starts a private Consul dev agent, dockerd (only if none answers), a
private nginx (own prefix, own loopback ports), the registrar and the
renderer as background processes with logs and pid files under run/demo/,
then replays the seed deployment with plain `docker run` lines and proves
the result with requests through nginx. `down` removes everything `up`
started. `up` calls `down` first, so it can run twice in a row.

The parts are started by the same helpers the test suite uses
(tests/support): the demo is a walk through what the tests prove.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import urllib3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.certs import CertificateAuthority  # noqa: E402
from tests.support.consul_agent import ConsulAgent  # noqa: E402
from tests.support.docker_engine import DockerEngine  # noqa: E402
from tests.support.nginx_server import Nginx  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

RUN = ROOT / "run" / "demo"
STATE = RUN / "state.json"
BIN = Path(sys.executable).parent
DOMAIN = "demo.test"
LABEL = "consul-nginx-sync-demo"
FRONTS = ("httpfront-1", "httpfront-2", "httpfront-3")

# The seed deployment, as an operator types it (see examples/seed-docker-run.sh).
HTTP_SERVER = "trap 'exit 0' TERM; echo {name} > /www/index.html; httpd -f -p 80 -h /www & wait"
TCP_ECHO = "trap 'exit 0' TERM; nc -ll -p 9999 -e cat & wait"


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n==> {text}")


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def background(name: str, argv: list[str]) -> int:
    log = open(RUN / f"{name}.log", "ab")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    (RUN / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            pass
        time.sleep(0.02)
    raise SystemExit(f"demo: {what} did not happen within {timeout:g}s; see the logs in {RUN}")


def up() -> None:
    down(quiet=True)
    RUN.mkdir(parents=True, exist_ok=True)
    state: dict = {}

    step("Starting the parts (own ports, own prefix; nothing already running is touched)")
    engine = DockerEngine().start()
    state["dockerd_pid"] = engine.process.pid if engine.started_here else None
    say(f"    dockerd      {'started by the demo' if engine.started_here else 'already running, used as is'}")
    image = engine.busybox_image()
    say(f"    image        {image} (busybox-static via docker import; no registry needed)")
    _remove_containers()  # left by an earlier run while no engine answered (down() could not reach them)

    consul = ConsulAgent(shutil.which("consul") or "/usr/local/bin/consul", directory=RUN / "consul").start()
    state["consul_pid"], state["consul_addr"] = consul.process.pid, consul.address
    (RUN / "consul.pid").write_text(f"{consul.process.pid}\n")
    say(f"    consul       http://{consul.address} (dev agent)")

    nginx = Nginx(shutil.which("nginx") or "/usr/sbin/nginx", prefix=RUN / "nginx").start()
    state["nginx_prefix"], state["http_port"] = str(nginx.prefix), nginx.http_port
    say(f"    nginx        http://127.0.0.1:{nginx.http_port} (prefix {nginx.prefix})")

    tcp_port = 9999 if _port_is_free(9999) else free_port()
    https_port = free_port()
    renderer_status = 9465 if _port_is_free(9465) else free_port()
    registrar_status = 9466 if _port_is_free(9466) else free_port()
    state["tcp_port"], state["https_port"] = tcp_port, https_port
    STATE.write_text(json.dumps(state))
    authority = CertificateAuthority(RUN / "tls")  # the demo's own CA, as an operator's PKI would issue
    authority.issue(f"shop.{DOMAIN}")
    say(f"    TLS          a demo CA ({authority.ca}) and a certificate for shop.{DOMAIN} in {authority.cert_dir}")

    background("registrar", [str(BIN / "registrar"), "run", "--consul-addr", consul.address, "--hostname", "demo",
                             "--ip", "127.0.0.1", "--cleanup", "--resync", "30",
                             "--status-address", f"127.0.0.1:{registrar_status}"])
    background("renderer", [
        str(BIN / "renderer"), "run", "--consul-addr", consul.address,
        "--template-dir", f"{ROOT / 'templates' / 'http'}:{nginx.conf_d}",
        "--template-dir", f"{ROOT / 'templates' / 'stream'}:{nginx.stream_d}",
        "--var", f"domain={DOMAIN}", "--var", f"http_port={nginx.http_port}", "--var", "listen_address=127.0.0.1",
        "--var", f"https_port={https_port}", "--var", f"cert_dir={authority.cert_dir}", *nginx.renderer_args,
        "--status-address", f"127.0.0.1:{renderer_status}", "--traffic-log", str(RUN / "traffic.log")])
    say(f"    registrar    pid {(RUN / 'registrar.pid').read_text().strip()}, log {RUN / 'registrar.log'}")
    say(f"    renderer     pid {(RUN / 'renderer.pid').read_text().strip()}, log {RUN / 'renderer.log'}")

    step("Replaying the seed deployment")
    run_lines = [
        ["--name", "demo-httpbackend", "-l", "SERVICE_NAME=httpbackend", "--expose", "80", "-P",
         image, "sh", "-c", HTTP_SERVER.format(name="httpbackend")],
        *[["--name", f"demo-{name}", "-l", "SERVICE_NAME=httpfront", "-l", "SERVICE_TAGS=http",
           "--expose", "80", "-P", image, "sh", "-c", HTTP_SERVER.format(name=name)] for name in FRONTS],
        ["--name", "demo-tcpfront", "-l", f"SERVICE_NAME=tcpfront-{tcp_port}", "-l", "SERVICE_TAGS=tcp",
         "--expose", "9999", "-P", image, "sh", "-c", TCP_ECHO],
    ]
    for line in run_lines:
        docker("run", "-d", "-l", LABEL, *line)
        say("    docker run -d " + " ".join(a if " " not in a else repr(a) for a in line[:line.index(image) + 1]))

    step(f"Balancing: GET http://httpfront.{DOMAIN}/ through nginx")
    get = lambda host: requests.get(f"http://127.0.0.1:{nginx.http_port}/", headers={"Host": host}, timeout=2)
    wait_for(lambda: {get(f"httpfront.{DOMAIN}").text.strip() for _ in range(9)} == set(FRONTS), 30,
             "all three httpfront containers answering through nginx")
    answers = collections.Counter(get(f"httpfront.{DOMAIN}").text.strip() for _ in range(30))
    for name in FRONTS:
        say(f"    {name}: {answers[name]:2d} of 30 requests")
    internal = get(f"httpbackend.{DOMAIN}")
    say(f"    httpbackend (no tag): HTTP {internal.status_code} from nginx, not exposed; "
        f"in Consul as {_consul_names(consul)}")

    step(f"TCP echo through nginx's stream block on 127.0.0.1:{tcp_port}")
    reply = wait_for(lambda: _echo(tcp_port, b"hello through nginx\n"), 15, "the tcp echo through nginx")
    say(f"    sent 'hello through nginx', got back {reply.decode().strip()!r}")

    step("Day-two routes from labels: an HTTPS host, an API under a path of it, a canary")
    routes_lines = [
        ["--name", "demo-shop", "-l", "SERVICE_NAME=shop", "-l", "SERVICE_TAGS=http", "-l", f"SERVICE_HOSTS=shop.{DOMAIN}",
         "-l", "SERVICE_TLS=terminate", "--expose", "80", "-P", image, "sh", "-c", HTTP_SERVER.format(name="shop")],
        ["--name", "demo-api", "-l", "SERVICE_NAME=api", "-l", "SERVICE_TAGS=http", "-l", f"SERVICE_HOSTS=shop.{DOMAIN}",
         "-l", "SERVICE_PATH=/api", "-l", "SERVICE_STRIP_PATH=true", "-l", "SERVICE_TLS=terminate",
         "--expose", "80", "-P", image, "sh", "-c", HTTP_SERVER.format(name="api")],
        ["--name", "demo-cart-1", "-l", "SERVICE_NAME=cart", "-l", "SERVICE_TAGS=http", "-l", "SERVICE_CANARY_PERCENT=20",
         "--expose", "80", "-P", image, "sh", "-c", HTTP_SERVER.format(name="cart-v1")],
        ["--name", "demo-cart-2", "-l", "SERVICE_NAME=cart", "-l", "SERVICE_TAGS=http", "-l", "SERVICE_CANARY_PERCENT=20",
         "-l", "SERVICE_CANARY=true", "--expose", "80", "-P", image, "sh", "-c", HTTP_SERVER.format(name="cart-v2")],
    ]
    for line in routes_lines:
        docker("run", "-d", "-l", LABEL, *line)
        say("    docker run -d " + " ".join(a if " " not in a else repr(a) for a in line[:line.index(image) + 1]))
    shop = f"shop.{DOMAIN}"
    https = lambda path: _https(https_port, shop, path, authority.ca)
    wait_for(lambda: https("/") == "shop" and https("/api/") == "api", 30, "the HTTPS routes")
    say(f"    https://{shop}/      -> {https('/')!r} (TLS at nginx, certificate for {shop})")
    say(f"    https://{shop}/api/  -> {https('/api/')!r} (another service, its prefix stripped)")
    plain = requests.get(f"http://127.0.0.1:{nginx.http_port}/", headers={"Host": shop}, allow_redirects=False,
                         timeout=2)
    say(f"    http://{shop}/       -> {plain.status_code} to {plain.headers.get('Location')}")
    cart = lambda agent: requests.get(f"http://127.0.0.1:{nginx.http_port}/", timeout=2,
                                      headers={"Host": f"cart.{DOMAIN}", "User-Agent": agent}).text.strip()
    wait_for(lambda: cart("probe") in ("cart-v1", "cart-v2"), 30, "the canary route")
    clients = collections.Counter(cart(f"client-{n}") for n in range(200))
    say(f"    cart.{DOMAIN}: 200 clients -> cart-v1 x{clients['cart-v1']}, cart-v2 (canary, 20 %) "
        f"x{clients['cart-v2']}; each client keeps its side")
    state["routes"] = True

    step("Stopping httpfront-2: out of rotation")
    port = docker("port", "demo-httpfront-2", "80/tcp").splitlines()[0].rsplit(":", 1)[1]
    upstream_line = f"server 127.0.0.1:{port} "
    http_conf = nginx.conf_d / "services.conf"
    reloads = (RUN / "renderer.log").read_text().count("nginx reload confirmed")
    started = time.monotonic()
    docker("stop", "-t", "5", "demo-httpfront-2")
    stopped = time.monotonic()
    wait_for(lambda: not _catalog_ports(consul, port), 5, "deregistration")
    in_consul = time.monotonic()
    wait_for(lambda: upstream_line not in http_conf.read_text()
             and (RUN / "renderer.log").read_text().count("nginx reload confirmed") > reloads, 5, "the reload")
    in_nginx = time.monotonic()
    answers = collections.Counter(get(f"httpfront.{DOMAIN}").text.strip() for _ in range(20))
    say(f"    docker stop took {1000 * (stopped - started):.0f} ms")
    say(f"    gone from Consul {1000 * (in_consul - stopped):.0f} ms later, "
        f"from nginx's config and reloaded {1000 * (in_nginx - stopped):.0f} ms after the stop returned")
    say("    next 20 requests: " + ", ".join(f"{name} x{count}" for name, count in sorted(answers.items())))
    if "httpfront-2" in answers or in_nginx - stopped > 1.0:
        raise SystemExit("demo: httpfront-2 was not out of rotation within a second")

    step("Done")
    say(f"    generated nginx files: {nginx.conf_d / 'services.conf'}")
    say(f"                           {nginx.stream_d / 'services.conf'}")
    say(f"    try:  curl -H 'Host: httpfront.{DOMAIN}' http://127.0.0.1:{nginx.http_port}/")
    say(f"          docker run -d -l {LABEL} -l SERVICE_NAME=hello -l SERVICE_TAGS=http --expose 80 -P {image} "
        f"sh -c \"{HTTP_SERVER.format(name='hello')}\"")
    say(f"          curl -H 'Host: hello.{DOMAIN}' http://127.0.0.1:{nginx.http_port}/")
    say(f"          curl --cacert {authority.ca} --resolve shop.{DOMAIN}:{https_port}:127.0.0.1 "
        f"https://shop.{DOMAIN}:{https_port}/api/")
    say(f"          curl -H 'Host: cart.{DOMAIN}' -A client-7 http://127.0.0.1:{nginx.http_port}/       "
        "# the same side every time")
    say(f"          curl -H 'Host: cart.{DOMAIN}' -H 'X-Canary: always' http://127.0.0.1:{nginx.http_port}/")
    say(f"          {BIN / 'renderer'} routes --consul-addr {consul.address} --var domain={DOMAIN} "
        f"--var cert_dir={authority.cert_dir} --url https://shop.{DOMAIN}/api/x")
    say(f"    status pages: http://127.0.0.1:{renderer_status}/ (renderer: the routes nginx has, and what was left "
        f"out), http://127.0.0.1:{registrar_status}/ (registrar); /metrics, /health, /ready on both")
    say(f"    logs: {RUN}/*.log      stop everything: make demo-stop")


def _remove_containers() -> list[str]:
    containers = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}"],
                                capture_output=True, text=True).stdout.split()
    if containers:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)
    return containers


def down(quiet: bool = False) -> None:
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    containers = _remove_containers()
    for name in ("renderer", "registrar", "consul"):
        _terminate(RUN / f"{name}.pid")
    if state.get("nginx_prefix"):
        prefix = Path(state["nginx_prefix"])
        subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(prefix), "-c",
                        str(prefix / "nginx.conf"), "-s", "quit"], capture_output=True)
        _wait_gone(prefix / "nginx.pid")
    if state.get("dockerd_pid"):
        _terminate_pid(state["dockerd_pid"], grace=20)
    shutil.rmtree(RUN, ignore_errors=True)
    if not quiet:
        say(f"demo stopped: {len(containers)} container(s) removed, processes stopped, {RUN} removed")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _https(port: int, host: str, path: str, ca: Path) -> str:
    """GET over TLS with SNI ``host``, verifying nginx's certificate against the demo CA."""
    pool = urllib3.HTTPSConnectionPool("127.0.0.1", port, server_hostname=host, assert_hostname=host,
                                       ca_certs=str(ca), retries=False, timeout=2)
    try:
        return pool.request("GET", path, headers={"Host": host}).data.decode().strip()
    finally:
        pool.close()


def _echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def _consul_names(consul: ConsulAgent) -> str:
    services = consul.get("/v1/catalog/service/httpbackend")
    return ", ".join(f"{s['ServiceName']} ({s['ServiceID']})" for s in services) or "nothing"


def _catalog_ports(consul: ConsulAgent, port: str) -> list:
    return [s for s in consul.get("/v1/catalog/service/httpfront") if str(s["ServicePort"]) == port]


def _terminate(pid_file: Path) -> None:
    try:
        _terminate_pid(int(pid_file.read_text()))
    except (OSError, ValueError):
        pass


def _terminate_pid(pid: int, grace: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our child (it is not, when started by an earlier `up`)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def _wait_gone(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command not in ("up", "down"):
        raise SystemExit("usage: python -m examples.demo up|down")
    up() if command == "up" else down()
