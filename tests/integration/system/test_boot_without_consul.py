"""A node booting while its Consul agent is down: both daemons start, nginx keeps its config, all converge.

As systemd runs them (``Type=notify``, ``WatchdogSec``): each daemon must
tell systemd READY although Consul is unreachable (else systemd kills it at
its start timeout and restarts it, over and over), keep pinging the
watchdog from its loop, leave nginx's configuration as it was, and converge
once the agent is up. The agent's ports are chosen before it runs, as a
node's are fixed.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

import pytest

from tests.support.scene import HTTP_TEMPLATE, STREAM_TEMPLATE
from tests.support import require
from tests.support.consul_agent import ConsulAgent
from tests.support.registrar_process import RegistrarProcess
from tests.support.renderer_process import RendererDaemon
from tests.support.waiting import wait_until
from tests.support.web_containers import WebContainers


class Systemd:
    """A notify socket per daemon, collecting what it is told."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="notify-")  # AF_UNIX paths must stay short
        self.sockets: dict[str, socket.socket] = {}
        self.messages: dict[str, list[str]] = {}

    def environment(self, name: str, watchdog_seconds: float = 2.0) -> dict:
        path = os.path.join(self.directory, f"{name}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(path)
        listener.setblocking(False)
        self.sockets[name], self.messages[name] = listener, []
        return {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(watchdog_seconds * 1e6))}

    def told(self, name: str) -> list[str]:
        while True:
            try:
                self.messages[name].append(self.sockets[name].recv(512).decode())
            except BlockingIOError:
                return self.messages[name]

    def close(self) -> None:
        for listener in self.sockets.values():
            listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def systemd():
    manager = Systemd()
    yield manager
    manager.close()


def test_both_daemons_start_without_consul_keep_nginx_as_it_is_and_converge(
        nginx, docker_engine, busybox_image, unique, tmp_path, systemd):
    agent = ConsulAgent(require.binary("consul"))  # ports fixed, agent not running yet
    domain = f"{unique}.test"
    http_out, stream_out = nginx.conf_d / f"{unique}.conf", nginx.stream_d / f"{unique}.conf"
    # What nginx ran before the reboot: it must go on serving it while Consul is down.
    http_out.write_text(f"server {{ listen 127.0.0.1:{nginx.http_port}; server_name kept.{domain}; "
                        f"return 200 \"kept\\n\"; }}\n")
    nginx.reload()
    web = WebContainers(docker_engine, busybox_image, unique)
    daemons = []
    try:
        wait_until(lambda: nginx.get(f"kept.{domain}").text == "kept\n", timeout=5, what="the old config served")
        renderer = RendererDaemon(
            "--consul-addr", agent.address, "--var", f"domain={domain}", "--var", f"http_port={nginx.http_port}",
            "--var", "listen_address=127.0.0.1", *nginx.renderer_args,
            "--template", f"{HTTP_TEMPLATE}:{http_out}", "--template", f"{STREAM_TEMPLATE}:{stream_out}",
            env=systemd.environment("renderer"))
        daemons.append(renderer)
        registrar = RegistrarProcess(agent, unique, ["--ip", "127.0.0.1", "--retry-attempts", "-1"],
                                     tmp_path / "registrar.log", systemd.environment("registrar")).start()
        daemons.append(registrar)
        for name in ("renderer", "registrar"):
            wait_until(lambda: any(m.startswith("READY=1") for m in systemd.told(name)), timeout=15,
                       what=f"{name} READY without Consul")
            ready = next(m for m in systemd.told(name) if m.startswith("READY=1"))
            assert "STATUS=Consul unreachable" in ready, ready
        web.start("booted", "booted")
        # The loops are alive, not blocked: the watchdog keeps being pinged while Consul is down.
        for name in ("renderer", "registrar"):
            wait_until(lambda: systemd.told(name).count("WATCHDOG=1") >= 3, timeout=10, what=f"{name} pings")
        assert nginx.get(f"kept.{domain}").text == "kept\n" and http_out.read_text().startswith("server {")

        agent.start()
        wait_until(lambda: nginx.get(f"booted.{domain}").text.strip() == "booted", timeout=30,
                   what="the container routed once Consul is up")
        assert renderer.alive() and registrar.alive()
        assert all(sum(m.startswith("READY=1") for m in systemd.told(n)) == 1 for n in ("renderer", "registrar"))
    finally:
        for daemon in daemons:
            daemon.stop()
        web.close()
        agent.close()
        for path in (http_out, stream_out):
            nginx.remove_rendered(path)
        nginx.reload()
