"""The reference fleet on one machine: three nodes, each a Consul server and a Docker host; nginx on two.

Each node is a network namespace of its own, joined to the others by a
bridge, so every node has its own address and the same ports as a real one:
its Consul server answers on ``:8500`` (DNS ``:8600``), its own Docker
engine runs the registrar image with ``--net=host`` and the workloads
beside it, and an nginx node serves on ``:80`` with the renderer reading
``127.0.0.1:8500``, its node's agent. The rendered files are then the same
bytes on both nginx nodes, as in a real fleet. Processes are started with
``nsenter --net`` (``ip netns exec`` would remount ``/sys`` and hide the
cgroups dockerd needs); the machine's own dockerd, Consul and nginx are
never touched.

Losing a node is killing every process of its namespace (its Consul
server, Docker engine, containers, registrar); bringing it back starts its
Consul server and engine on their old data, and the containers with a
restart policy (the registrar among them) come back as on a rebooted host.

``make fleet`` (``examples/fleet.py``) and ``tests/fleet`` both use this;
the state file lets ``make fleet-stop`` tear down what another process
started.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors
import requests

from .daemon_process import BIN
from .docker_engine import BUSYBOX_IMAGE, busybox_rootfs
from .nginx_server import STREAM_MODULE, accepting_workers
from .waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from examples import registrar_image  # noqa: E402

DOMAIN = "fleet.test"
CONSUL_HTTP, CONSUL_DNS = 8500, 8600
RENDERER_STATUS, REGISTRAR_STATUS = 9465, 9466
STATE = "fleet.json"

NGINX_CONFIG = """\
load_module {stream_module};
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    # An operator's own access log, buffered. Not "access_log off": at the http level it would silence
    # every log of that level, the renderer's traffic log too (nginx's rule; docs/observability.md).
    access_log {prefix}/logs/access.log combined buffer=64k flush=5s;
    server_names_hash_max_size 4096;
    server_names_hash_bucket_size 128;
    variables_hash_max_size 4096;
    variables_hash_bucket_size 128;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/conf.d/*.conf;
}}
stream {{
    include {prefix}/stream.d/*.conf;
}}
"""
# A web server answering its own body on PORT of its node's address, stopped at once by SIGTERM.
WEB = "trap 'exit 0' TERM; echo {body} > /www/index.html; httpd -f -p {port} -h /www & wait"
ECHO = "trap 'exit 0' TERM; nc -ll -p {port} -e cat & wait"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


@dataclasses.dataclass
class Node:
    name: str           # node1, node2, node3: also its hostname for the registrar
    address: str
    netns: str
    directory: Path     # its data: Consul's, Docker's, nginx's prefix, logs
    runtime: Path       # short paths under /run: the Docker socket and exec root (sockets max 108 bytes)
    nginx: bool         # an nginx node: nginx + renderer beside the Consul server and Docker engine

    def enter(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]

    def spawn(self, name: str, *argv: str, env: dict | None = None) -> int:
        log = open(self.directory / f"{name}.log", "ab")
        process = subprocess.Popen(self.enter(*argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})})
        return process.pid

    @property
    def docker_url(self) -> str:
        return f"unix://{self.runtime}/docker.sock"

    @property
    def consul_url(self) -> str:
        return f"http://{self.address}:{CONSUL_HTTP}"

    @property
    def prefix(self) -> Path:
        return self.directory / "nginx"

    def docker(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_url, timeout=60)

    def pids(self) -> list[int]:
        result = run("ip", "netns", "pids", self.netns, check=False)
        return [int(p) for p in result.stdout.split()]

    def pid_of(self, command: str) -> int | None:
        for pid in self.pids():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == command:
                    return pid
            except OSError:
                continue
        return None

    def consul(self, path: str, timeout: float = 2.0):
        response = requests.get(f"{self.consul_url}{path}", timeout=timeout)
        response.raise_for_status()
        return response.json()

    def get(self, host: str, path: str = "/", timeout: float = 2.0) -> requests.Response:
        """A request through this node's nginx, on a new connection."""
        return requests.get(f"http://{self.address}{path}", headers={"Host": host, "Connection": "close"},
                            timeout=timeout)

    def settled(self, host: str, status: int = 200, timeout: float = 30) -> None:
        """Wait until this node's nginx answers ``host`` with ``status``, then until its previous generation of
        workers, which may still accept for a moment after a reload, has stopped: what answers next runs the
        configuration that answered. One request answered ``status`` (a rate-limited route counts one)."""
        wait_until(lambda: self.get(host).status_code == status, timeout, what=f"{host} on {self.name}")
        master = int((self.prefix / "nginx.pid").read_text())
        wait_until(lambda: accepting_workers(master) == 1, timeout, what=f"{self.name}'s old nginx workers gone")

    def nginx_command(self, *args: str) -> str:
        return f"{shutil.which('nginx') or '/usr/sbin/nginx'} -p {self.prefix} -c {self.prefix}/nginx.conf" + (
            " " + " ".join(args) if args else "")


class Fleet:
    def __init__(self, directory: Path, subnet: int | None = None, count: int = 3, nginx_nodes: int = 2,
                 log=print):
        self.directory = Path(directory)
        self.subnet = subnet if subnet is not None else _free_subnet()
        self.tag = f"cnsf{self.subnet}"
        self.log = log
        self.bridge = f"{self.tag}br"
        network = ipaddress.ip_network(f"10.199.{self.subnet}.0/24")
        self.gateway = str(network[1])
        self.nodes = [Node(f"node{i}", str(network[i + 1]), f"{self.tag}-node{i}", self.directory / f"node{i}",
                           Path(f"/run/{self.tag}/n{i}"), i <= nginx_nodes) for i in range(1, count + 1)]
        self.image = f"{registrar_image.IMAGE}:latest"
        self._ports = itertools.count(20000)
        self.renderer_extra: dict[str, list[str]] = {}  # node name -> more `renderer run` arguments (a test's)

    def port(self) -> int:
        """A port no workload of this fleet uses yet (the same number is free on every node)."""
        return next(self._ports)

    @property
    def nginx_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.nginx]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    # Up ---------------------------------------------------------------------------------------
    def start_servers(self, wait: bool = True) -> "Fleet":
        """The nodes' network and their Consul servers (with ``wait``, once they have a leader): what the
        consistency bench needs."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / STATE).write_text(json.dumps({"subnet": self.subnet, "count": len(self.nodes),
                                                        "nginx_nodes": len(self.nginx_nodes)}))
        self._network()
        self.log(f"network namespaces {', '.join(n.netns for n in self.nodes)} on bridge {self.bridge} "
                 f"({self.gateway}/24)")
        for node in self.nodes:
            self.start_consul(node)
        if wait:
            self.wait_for_leader()
        return self

    def start(self) -> "Fleet":
        self.start_servers(wait=False)
        for node in self.nodes:  # the engines start while the servers elect their leader
            self.start_docker(node)
        self.wait_for_leader()
        for node in self.nodes:
            self.wait_for_docker(node)
        self.log("three Consul servers elected a leader; three Docker engines answer")
        self._images()
        for node in self.nodes:
            self.start_registrar(node)
        for node in self.nginx_nodes:
            self.start_nginx(node)
            self.start_renderer(node)
        self.log(f"registrar containers on {len(self.nodes)} nodes; nginx and a renderer on "
                 f"{len(self.nginx_nodes)}")
        for node in self.nginx_nodes:
            wait_until(lambda: requests.get(f"http://{node.address}:{RENDERER_STATUS}/ready", timeout=2).ok, 60,
                       what=f"the renderer on {node.name} ready")
        for node in self.nodes:
            wait_until(lambda: requests.get(f"http://{node.address}:{REGISTRAR_STATUS}/ready", timeout=2).ok, 60,
                       what=f"the registrar on {node.name} ready")
        return self

    def _network(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        # Docker's FORWARD policy is DROP and bridged traffic goes through iptables: let the nodes talk.
        run("iptables", "-I", "FORWARD", "1", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
        for index, node in enumerate(self.nodes, 1):
            veth = f"{self.tag}v{index}"
            run("ip", "netns", "add", node.netns)
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
            run("ip", "link", "set", veth, "master", self.bridge)
            run("ip", "link", "set", veth, "up")
            for command in (("ip", "addr", "add", f"{node.address}/24", "dev", "eth0"),
                            ("ip", "link", "set", "eth0", "up"), ("ip", "link", "set", "lo", "up"),
                            ("ip", "route", "add", "default", "via", self.gateway)):
                run(*node.enter(*command))
            node.directory.mkdir(parents=True, exist_ok=True)
            node.runtime.mkdir(parents=True, exist_ok=True)

    def start_consul(self, node: Node) -> None:
        directory = node.directory / "consul"
        directory.mkdir(exist_ok=True)
        config = {"node_name": node.name, "datacenter": "dc1", "server": True, "bootstrap_expect": len(self.nodes),
                  "bind_addr": node.address, "client_addr": "0.0.0.0",
                  "retry_join": [other.address for other in self.nodes if other is not node],
                  "data_dir": str(directory / "data"), "ports": {"grpc": -1, "dns": CONSUL_DNS},
                  "performance": {"raft_multiplier": 1}, "disable_update_check": True, "log_level": "warn",
                  # Cumulative counters at /v1/agent/metrics?format=prometheus (what the bench reads).
                  "telemetry": {"prometheus_retention_time": "10m", "disable_hostname": True},
                  "leave_on_terminate": False, "skip_leave_on_interrupt": True}
        (directory / "config.json").write_text(json.dumps(config))
        node.spawn("consul", shutil.which("consul") or "/usr/local/bin/consul", "agent", "-config-file",
                   str(directory / "config.json"))

    def start_docker(self, node: Node) -> None:
        node.spawn("dockerd", shutil.which("dockerd") or "/usr/sbin/dockerd", "-H", node.docker_url,
                   "--data-root", str(node.directory / "docker"), "--exec-root", str(node.runtime / "exec"),
                   "--pidfile", str(node.runtime / "docker.pid"), "--bridge", "none", "--iptables=false",
                   "--ip-masq=false", "--shutdown-timeout", "2", "--containerd-namespace", node.netns,
                   "--containerd-plugins-namespace", f"{node.netns}-plugins")

    def wait_for_docker(self, node: Node, timeout: float = 60) -> None:
        wait_until(lambda: _pings(node), timeout, interval=0.2, what=f"the Docker engine of {node.name}")

    def wait_for_leader(self, timeout: float = 60, among: list[Node] | None = None,
                        not_on: Node | None = None) -> Node:
        """The node whose Consul server leads, as every one of ``among`` (default: all) sees it."""
        def agreed():
            seen = {node.consul("/v1/status/leader") for node in among or self.nodes}
            leader = seen.pop() if len(seen) == 1 else ""
            return leader if leader and not (not_on and leader.startswith(f"{not_on.address}:")) else None
        address = wait_until(agreed, timeout, interval=0.05, what="one Consul leader the servers agree on")
        return next(node for node in self.nodes if address.startswith(f"{node.address}:"))

    def wait_for_servers(self, timeout: float = 60) -> None:
        """Every server back in the cluster: a voter the leader finds healthy (a server restarted moments ago
        may still be catching up, and killing another then would leave no quorum)."""
        def healthy():
            servers = self.wait_for_leader(timeout).consul("/v1/operator/autopilot/health").get("Servers") or []
            return sum(1 for server in servers if server["Healthy"] and server["Voter"]) == len(self.nodes)
        wait_until(healthy, timeout, interval=0.2, what="every Consul server a healthy voter")

    def restart_consul(self, node: Node) -> None:
        """The node's Consul server started again on its data (as systemd restarts it), and back in the cluster."""
        if node.pid_of("consul") is None:
            self.start_consul(node)
        self.wait_for_servers()

    def _images(self) -> None:
        """The registrar image in every engine: built in node1's (skipped when up to date) and saved once per
        source digest (``build/``), so the next fleet only loads it."""
        first = self.nodes[0]
        saved = registrar_image.BUILD / f"registrar-image-{registrar_image.source_digest()}.tar"
        if not saved.exists():
            self.log("building the registrar image (make image's recipe) in node1's engine")
            registrar_image.build(env={"DOCKER_HOST": first.docker_url})
            for old in registrar_image.BUILD.glob("registrar-image-*.tar"):
                old.unlink()
            partial = saved.with_suffix(".partial")
            run("docker", "-H", first.docker_url, "save", "-o", str(partial), self.image)
            partial.rename(saved)
        for node in self.nodes:
            client = node.docker()
            try:
                if not _has_image(client, self.image):
                    with open(saved, "rb") as tar:
                        client.images.load(tar)
                client.api.import_image_from_data(busybox_rootfs(), repository=BUSYBOX_IMAGE.split(":")[0],
                                                  tag=BUSYBOX_IMAGE.split(":")[1])
            finally:
                client.close()

    def start_registrar(self, node: Node) -> None:
        """The registrar as registrator runs: a container on the host's network with the Docker socket."""
        socket_group = os.stat(node.runtime / "docker.sock").st_gid
        run("docker", "-H", node.docker_url, "run", "-d", "--name", "registrar", "--net=host", "--restart=always",
            "--group-add", str(socket_group), "-v", f"{node.runtime}/docker.sock:/var/run/docker.sock",
            "-e", f"REGISTRAR_STATUS_ADDRESS=0.0.0.0:{REGISTRAR_STATUS}", self.image,
            "run", "--retry-attempts", "-1", "--ip", node.address, "--hostname", node.name, "--cleanup")

    def start_nginx(self, node: Node) -> None:
        for sub in ("conf.d", "stream.d", "logs", "tmp"):
            (node.prefix / sub).mkdir(parents=True, exist_ok=True)
        (node.prefix / "nginx.conf").write_text(NGINX_CONFIG.format(stream_module=STREAM_MODULE, prefix=node.prefix))
        run(*node.enter(*shlex.split(node.nginx_command())))

    def start_renderer(self, node: Node) -> None:
        node.spawn("renderer", str(BIN / "renderer"), "run", "--consul-addr", f"127.0.0.1:{CONSUL_HTTP}",
                   "--template-dir", f"{ROOT / 'templates' / 'http'}:{node.prefix / 'conf.d'}",
                   "--template-dir", f"{ROOT / 'templates' / 'stream'}:{node.prefix / 'stream.d'}",
                   "--var", f"domain={DOMAIN}", "--check-command", node.nginx_command("-t", "-q"),
                   "--nginx-pid-file", str(node.prefix / "nginx.pid"),
                   "--nginx-error-log", str(node.prefix / "logs" / "error.log"),
                   "--status-address", f"0.0.0.0:{RENDERER_STATUS}", "--log-level", "debug",
                   "--traffic-log", str(node.prefix / "traffic.log"), "--var", f"cert_dir={node.prefix / 'certs'}",
                   *self.renderer_extra.get(node.name, ()), env={"PYTHONUNBUFFERED": "1"})

    def restart_renderer(self, node: Node, *extra: str) -> None:
        """The node's renderer stopped (SIGTERM) and started again with ``extra`` arguments; back when ready."""
        pid = node.pid_of("renderer")
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: node.pid_of("renderer") is None, 30, what=f"{node.name}'s renderer stopped")
        self.renderer_extra[node.name] = list(extra)
        self.start_renderer(node)
        wait_until(lambda: requests.get(f"http://{node.address}:{RENDERER_STATUS}/ready", timeout=2).ok, 60,
                   what=f"the renderer on {node.name} ready")

    def kill_renderer(self, node: Node) -> None:
        pid = node.pid_of("renderer")
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: node.pid_of("renderer") is None, 10, what=f"{node.name}'s renderer killed")

    # What happens to a node ------------------------------------------------------------------
    def kill_consul(self, node: Node) -> None:
        pid = node.pid_of("consul")
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: node.pid_of("consul") is None, 10, what=f"{node.name}'s Consul gone")

    def kill_node(self, node: Node) -> None:
        """Everything of the node at once: Consul server, Docker engine, containers, registrar (and nginx)."""
        for _ in range(5):  # a process may fork while the first ones die
            pids = node.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)

    def restore_node(self, node: Node) -> None:
        """The node boots again: Consul server and Docker engine on their old data; containers with a
        restart policy (the registrar) come back; on an nginx node, nginx and the renderer."""
        _unmount_under(node.runtime)
        shutil.rmtree(node.runtime, ignore_errors=True)  # /run does not survive a reboot: nor do stale pid files
        node.runtime.mkdir(parents=True)
        self.start_consul(node)
        self.start_docker(node)
        self.wait_for_docker(node)
        self.wait_for_servers()
        if node.nginx:
            self.start_nginx(node)
            self.start_renderer(node)

    # Workloads ---------------------------------------------------------------------------------
    def web(self, node: Node, name: str, service: str | None, port: int, body: str | None = None,
            tags: str | None = "http", labels: dict | None = None):
        """``docker run -d --net=host --restart=always --expose PORT -l SERVICE_NAME=... httpd`` on ``node``."""
        return self._container(node, name, ["sh", "-c", WEB.format(body=shlex.quote(body or name), port=port)],
                               service, port, tags, labels)

    def echo(self, node: Node, name: str, service: str, port: int, tags: str = "tcp"):
        return self._container(node, name, ["sh", "-c", ECHO.format(port=port)], service, port, tags, None)

    def _container(self, node, name, command, service, port, tags, labels):
        all_labels = {**({"SERVICE_NAME": service} if service else {}), **({"SERVICE_TAGS": tags} if tags else {}),
                      **(labels or {})}
        client = node.docker()
        try:
            # The low-level API: --expose without publishing, which host networking takes.
            created = client.api.create_container(
                BUSYBOX_IMAGE, command, name=name, labels=all_labels, ports=[port],
                host_config=client.api.create_host_config(network_mode="host", restart_policy={"Name": "always"}))
            client.api.start(created["Id"])
            return client.containers.get(created["Id"])
        finally:
            client.close()

    def remove(self, node: Node, *names: str) -> None:
        client = node.docker()
        try:
            for name in names:
                try:
                    client.containers.get(name).remove(force=True)
                except docker.errors.NotFound:
                    pass
        finally:
            client.close()

    def bodies(self, host: str, count: int = 4) -> dict[str, set[str]]:
        """What each nginx node answers for ``host``, over ``count`` requests each: {node: {bodies}}."""
        return {node.name: {node.get(host).text.strip() for _ in range(count)} for node in self.nginx_nodes}

    def serving(self, host: str, *bodies: str, timeout: float = 30) -> None:
        """Wait until every nginx node answers ``host`` with exactly these bodies."""
        wanted = set(bodies)
        wait_until(lambda: all(seen == wanted for seen in self.bodies(host, 3 * len(wanted) + 3).values()), timeout,
                   what=f"both nginx nodes serving {host} from {sorted(wanted)}")

    def rendered(self, node: Node) -> dict[str, bytes]:
        """The node's rendered files, its own directory written ``{node}``: the nodes share this machine's file
        system, so each renderer is given its own traffic log there (on real nodes every one has the same
        path, /var/lib/renderer/traffic.log, and the same bytes)."""
        own = str(node.prefix).encode()
        return {str(path.relative_to(node.prefix)): path.read_bytes().replace(own, b"{node}")
                for path in sorted([*node.prefix.glob("conf.d/*.conf"), *node.prefix.glob("stream.d/*.conf")])}

    # Down --------------------------------------------------------------------------------------
    def stop(self) -> None:
        """The renderers first (they deregister while Consul answers), then every node as a power cut would:
        nothing of a throwaway fleet needs a clean shutdown, and teardown unmounts what engines leave."""
        for node in self.nginx_nodes:
            pid = node.pid_of("renderer")
            if pid:
                os.kill(pid, signal.SIGTERM)
        for node in self.nginx_nodes:
            wait_until(lambda: node.pid_of("renderer") is None, 15, what=f"{node.name}'s renderer stopped")
        teardown(self.tag, self.directory, self.bridge, [node.netns for node in self.nodes])

    @classmethod
    def from_state(cls, directory: Path) -> "Fleet | None":
        try:
            state = json.loads((Path(directory) / STATE).read_text())
        except (OSError, ValueError):
            return None
        return cls(directory, state["subnet"], state["count"], state["nginx_nodes"])


def teardown(tag: str, directory: Path, bridge: str, namespaces: list[str]) -> None:
    """Whatever is left of a fleet, gone: processes, mounts, namespaces, links, the iptables rule, files."""
    for netns in namespaces:
        for _ in range(5):  # a process may fork while the first ones die
            pids = run("ip", "netns", "pids", netns, check=False).stdout.split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
    for path in (Path(directory), Path(f"/run/{tag}")):
        _unmount_under(path)
    for netns in namespaces:
        run("ip", "netns", "delete", netns, check=False)
    run("ip", "link", "delete", bridge, check=False)
    while run("iptables", "-D", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT", check=False).returncode == 0:
        pass
    shutil.rmtree(f"/run/{tag}", ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)


def _unmount_under(path: Path) -> None:
    """Docker's mounts (overlays, netns files) a killed engine left under ``path``, deepest first."""
    prefix = str(path).rstrip("/") + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix) or m == str(path)), key=len, reverse=True):
        run("umount", "-l", mount, check=False)


def _pings(node: Node) -> bool:
    try:
        client = node.docker()
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False
    finally:
        client.close()


def _has_image(client, reference: str) -> bool:
    try:
        client.images.get(reference)
        return True
    except docker.errors.ImageNotFound:
        return False


def _free_subnet() -> int:
    """A 10.199.N.0/24 no interface of this machine uses (several fleets may run: tests and make fleet)."""
    used = run("ip", "-o", "-4", "addr").stdout
    for candidate in range(10, 250):
        if f"10.199.{candidate}." not in used:
            return candidate
    raise RuntimeError("no free 10.199.N.0/24 for the fleet's nodes")
