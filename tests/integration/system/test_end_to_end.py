"""The whole loop with both daemons: docker run -> registrar -> Consul -> renderer -> nginx."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.scene import HTTP_TEMPLATE, STREAM_TEMPLATE, Scene
from tests.support.backends import tcp_roundtrip
from tests.support.daemon_process import BIN, DaemonProcess
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]
SERVE = "trap 'exit 0' TERM; echo {body} > /www/index.html; httpd -f -p 80 -h /www & wait"


@pytest.fixture
def loop(consul_agent, nginx, docker_engine, busybox_image, unique, tmp_path):
    """Both daemons on the session's Consul, nginx and Docker engine; containers named unique-*."""
    scene = Scene(consul_agent, nginx, unique)
    registrar = DaemonProcess([str(BIN / "registrar"), "run", "--consul-addr", consul_agent.address,
                               "--hostname", unique, "--ip", "127.0.0.1", "--resync", "2"], tmp_path / "registrar.log")
    scene.daemon(*scene.common_args(), "--template", f"{HTTP_TEMPLATE}:{scene.output('http')}",
                 "--template", f"{STREAM_TEMPLATE}:{scene.output('stream')}")
    scene.registrar, scene.image = registrar, busybox_image
    yield scene
    try:
        for container in docker_engine.client.containers.list(all=True, filters={"name": unique}):
            container.remove(force=True)
        wait_until(lambda: not [s for s in consul_agent.services().values()
                                if (s.get("Meta") or {}).get("registrar-host") == unique], timeout=10,
                   what="the registrar's services gone with its containers")
        assert registrar.stop() == 0, registrar.log[-3000:]
    finally:
        registrar.stop()
        scene.close()


def docker(*args: str, env: dict | None = None) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}).stdout.strip()


def test_docker_run_is_routed_and_removal_unrouted(loop):
    name = f"{loop.unique}-web"
    docker("run", "-d", "--name", name, "-l", f"SERVICE_NAME={name}", "-l", "SERVICE_TAGS=http",
           "--expose", "80", "-P", loop.image, "sh", "-c", SERVE.format(body=name))
    wait_until(lambda: loop.get(name).text.strip() == name, timeout=15, what="container routed through nginx")

    docker("rm", "-f", name)
    loop.settle(name, status=404)
    assert f"upstream {name} " not in loop.outputs[0].read_text()


def test_the_seed_script_builds_the_seed_deployment(loop):
    prefix = f"{loop.unique}-"
    docker_run = subprocess.run(["sh", str(ROOT / "examples" / "seed-docker-run.sh")], capture_output=True,
                                text=True, env={**os.environ, "IMAGE": loop.image, "PREFIX": prefix})
    assert docker_run.returncode == 0, docker_run.stderr
    bodies = wait_until(lambda: (lambda seen: seen if len(seen) == 4 else None)(
        {loop.get("httpfront").text.strip() for _ in range(40)}), timeout=20, what="four httpfront instances")
    assert bodies == {"httpfront-1", "httpfront-2", "httpfront-3", "httpfront-canary"}
    assert loop.get("httpbackend").status_code == 404, "the untagged service is not exposed"
    assert wait_until(lambda: tcp_roundtrip(9999, b"echo\n"), timeout=10, what="tcp echo on 9999") == b"echo\n"
    canary_meta = [s["Meta"] for s in loop.consul.services().values() if s["ID"].endswith("httpfront-canary:80")]
    assert canary_meta and canary_meta[0]["weight"] == "1"
