"""`make fleet` / `make fleet-stop`: the reference layout on one machine, walked through with real failures.

    node1: Consul server, Docker (registrar image), nginx + renderer
    node2: Consul server, Docker (registrar image), nginx + renderer
    node3: Consul server, Docker (registrar image)

Each node is a network namespace with an address of its own on a private
bridge (tests/support/fleet.py, the layout tests/fleet runs on). `up`
starts it, replays the seed deployment with `docker run` on the nodes,
shows both nginx serving it, then kills the Consul leader and then a whole
node and says, with measured times, what each nginx did. The fleet keeps
running for you to try; `down` removes everything `up` started. The
machine's own dockerd, Consul and nginx are left alone.
"""

from __future__ import annotations

import collections
import hashlib
import random
import socket
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fleet import DOMAIN, REGISTRAR_STATUS, RENDERER_STATUS, Fleet, teardown  # noqa: E402
from tests.support.probe import Probe  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

RUN = ROOT / "run" / "fleet"
HTTPFRONT, HTTPBACKEND, TCPFRONT = 8001, 8002, 9998


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n==> {text}")


def up() -> None:
    down(quiet=True)
    step("The reference layout: three nodes, each its own network namespace and address")
    started = time.monotonic()
    fleet = Fleet(RUN, log=lambda text: say(f"    {text}"))
    try:
        fleet.start()
    except BaseException:
        say("fleet: start failed; cleaning up (logs were in run/fleet/node*/)")
        fleet.stop()
        raise
    for node in fleet.nodes:
        role = "nginx + renderer, " if node.nginx else ""
        say(f"    {node.name}  {node.address:<13} Consul server (:8500, DNS :8600), Docker engine running the "
            f"registrar image, {role}its own workloads")
    leader = fleet.wait_for_leader()
    say(f"    up in {time.monotonic() - started:.0f} s; Consul leader: {leader.name}")
    node1, node2, node3 = fleet.nodes

    step("The seed deployment, as operators type it on each Docker host")
    for index, node in enumerate(fleet.nodes, 1):
        fleet.web(node, f"httpfront-{index}", "httpfront", HTTPFRONT, body=f"httpfront on {node.name}")
        say(f"    {node.name}$ docker run -d --net=host --restart=always -l SERVICE_NAME=httpfront "
            f"-l SERVICE_TAGS=http --expose {HTTPFRONT} busybox httpd -p {HTTPFRONT}")
    fleet.echo(node3, "tcpfront", f"tcpfront-{TCPFRONT}", TCPFRONT)
    say(f"    node3$ docker run -d --net=host -l SERVICE_NAME=tcpfront-{TCPFRONT} -l SERVICE_TAGS=tcp "
        f"--expose {TCPFRONT} busybox nc -ll -p {TCPFRONT} -e cat")
    for node in (node2, node3):
        fleet.web(node, "httpbackend", "httpbackend", HTTPBACKEND, body=f"httpbackend on {node.name}", tags=None)
        say(f"    {node.name}$ docker run -d --net=host -l SERVICE_NAME=httpbackend --expose {HTTPBACKEND} "
            f"busybox httpd -p {HTTPBACKEND}")

    step("Both nginx nodes serve it")
    host = f"httpfront.{DOMAIN}"
    fronts = {f"httpfront on {node.name}" for node in fleet.nodes}
    fleet.serving(host, *fronts)
    for node in fleet.nginx_nodes:
        answers = collections.Counter(node.get(host).text.strip() for _ in range(30))
        say(f"    http://{host}/ on {node.name}'s nginx ({node.address}:80): "
            + ", ".join(f"{body.split()[-1]} x{count}" for body, count in sorted(answers.items())))
        say(f"    tcp {node.address}:{TCPFRONT} on {node.name}'s nginx: sent 'hello', got back "
            f"{_echo(node.address, TCPFRONT)!r}")
    say(f"    httpbackend (no tag): HTTP {node1.get(f'httpbackend.{DOMAIN}').status_code} from nginx, not exposed; "
        f"Consul DNS on node1 answers httpbackend.service.dc1.consul with "
        f"{', '.join(_dns(node1.address, 'httpbackend.service.dc1.consul'))}")
    files = [fleet.rendered(node) for node in fleet.nginx_nodes]
    same = "the same bytes" if files[0] == files[1] else "DIFFERENT FILES"
    say(f"    rendered files on node1 and node2: {same} "
        f"(sha256 {hashlib.sha256(b''.join(files[0].values())).hexdigest()[:12]})")

    step(f"The Consul leader dies ({leader.name}'s server is killed)")
    with _probes(fleet, host) as probes:
        killed = time.monotonic()
        fleet.kill_consul(leader)
        successor = fleet.wait_for_leader(among=[n for n in fleet.nodes if n is not leader], not_on=leader)
        gap = time.monotonic() - killed
        for probe in probes:
            probe.cover(20)
    say(f"    {successor.name} leads {gap:.1f} s later; requests through both nginx every 100 ms meanwhile: "
        + ", ".join(f"{len(p.failures)} of {p.sent} failed" for p in probes))
    if leader.nginx:
        say(f"    {leader.name}'s renderer lost its agent: nginx kept its last configuration")
    fleet.restart_consul(leader)
    say(f"    {leader.name}'s Consul server started again, as systemd would, and is back in the cluster")
    on = node3 if leader is not node3 else node2
    started = time.monotonic()
    fleet.web(on, "httpfront-late", "httpfront", HTTPFRONT + 100, body=f"httpfront-late on {on.name}")
    fleet.serving(host, *fronts, f"httpfront-late on {on.name}")
    say(f"    a container started on {on.name} afterwards: routed by both nginx "
        f"{time.monotonic() - started:.1f} s after `docker run`")
    fleet.remove(on, "httpfront-late")
    fleet.serving(host, *fronts)

    step("A whole node dies (node3: its Consul server, Docker engine, registrar and containers)")
    gone = f"server {node3.address}:{HTTPFRONT} ".encode()
    with _probes(fleet, host) as probes:
        lost = time.monotonic()
        fleet.kill_node(node3)
        wait_until(lambda: {c["CheckID"]: c["Status"] for c in node1.consul("/v1/health/node/node3")}.get(
            "serfHealth") == "critical", 60, what="node3 declared failed")
        declared = time.monotonic() - lost
        wait_until(lambda: all(gone not in fleet.rendered(node)["conf.d/services.conf"]
                               for node in fleet.nginx_nodes), 30, what="node3's instances out of both nginx")
        unrouted = time.monotonic() - lost
        for probe in probes:
            probe.cover(10)
    say(f"    Consul declared node3 failed {declared:.1f} s after it died; its instances left both nginx "
        f"{1000 * (unrouted - declared):.0f} ms later")
    say("    requests through both nginx meanwhile (nginx retried node3's dead instance on the others): "
        + ", ".join(f"{len(p.failures)} of {p.sent} failed" for p in probes))

    step("node3 boots again")
    started = time.monotonic()
    fleet.restore_node(node3)
    fleet.serving(host, *fronts, timeout=90)
    say(f"    its Consul server, Docker engine, registrar and containers (restart=always) are back; its "
        f"instances are routed by both nginx {time.monotonic() - started:.1f} s after it booted")

    step("Done: the fleet keeps running")
    for node in fleet.nginx_nodes:
        say(f"    curl -H 'Host: {host}' http://{node.address}/     # {node.name}'s nginx")
    say(f"    renderer status pages: {', '.join(f'http://{n.address}:{RENDERER_STATUS}/' for n in fleet.nginx_nodes)}")
    say(f"    registrar status pages: {', '.join(f'http://{n.address}:{REGISTRAR_STATUS}/' for n in fleet.nodes)}")
    say(f"    docker -H {node3.docker_url} ps             # node3's engine")
    say(f"    curl http://{node1.address}:8500/v1/catalog/service/consul-nginx-sync-renderer   # the renderers")
    say(f"    logs: {RUN}/node*/*.log      stop everything: make fleet-stop")


class _probes:
    """A probe through each nginx node, every 100 ms, for the duration of a block."""

    def __init__(self, fleet, host: str):
        self.probes = [Probe(80, host, address=node.address) for node in fleet.nginx_nodes]

    def __enter__(self):
        for probe in self.probes:
            probe.__enter__()
        return self.probes

    def __exit__(self, *_):
        for probe in self.probes:
            probe.stop()


def _echo(address: str, port: int) -> str:
    with socket.create_connection((address, port), timeout=5) as connection:
        connection.sendall(b"hello\n")
        return connection.recv(100).decode().strip()


def _dns(server: str, name: str, port: int = 8600) -> list[str]:
    """A records for ``name`` from Consul's DNS interface: one UDP query, written out (no resolver library)."""
    query_id = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(3)
        udp.sendto(packet, (server, port))
        answer = udp.recv(4096)
    count = struct.unpack(">H", answer[6:8])[0]
    offset, found = 12 + len(question) + 4, []
    for _ in range(count):
        offset += 2 if answer[offset] & 0xC0 == 0xC0 else len(question)  # the name: a pointer to the question
        kind, _, _, length = struct.unpack(">HHIH", answer[offset:offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            found.append(socket.inet_ntoa(answer[offset:offset + 4]))
        offset += length
    return sorted(found)


def down(quiet: bool = False) -> None:
    fleet = Fleet.from_state(RUN)
    if fleet is None:
        if not quiet:
            say("fleet: nothing to stop")
        return
    if not quiet:
        say("stopping the fleet's renderers, nginx, registrars, Docker engines and Consul servers")
    try:
        fleet.stop()
    except Exception:  # noqa: BLE001 - whatever is left still goes
        teardown(fleet.tag, fleet.directory, fleet.bridge, [node.netns for node in fleet.nodes])
    if not quiet:
        say("fleet: stopped and removed")


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command == "up":
        up()
    elif command == "down":
        down()
    else:
        print("usage: python -m examples.fleet up|down", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
