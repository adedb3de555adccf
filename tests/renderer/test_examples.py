"""Each example under examples/ does what it says, on real nginx."""

import collections
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from renderer.settings import build
from tests.support.ports import free_port
from tests.support.renderer_process import run_once
from tests.support.tls_backend import TlsBackend, tls_hello
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_node_nginx_conf_is_valid_nginx():
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    result = subprocess.run([nginx, "-t", "-q", "-c", str(EXAMPLES / "nginx.conf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_node_renderer_toml_is_a_complete_config(tmp_path):
    token = tmp_path / "consul-token"
    token.write_text("example-token\n")
    config = tmp_path / "renderer.toml"
    config.write_text((EXAMPLES / "renderer.toml").read_text().replace("/etc/renderer/consul-token", str(token)))
    settings = build({"config": str(config)}, environ={})
    assert settings.consul_token == "example-token"
    assert [str(d) for _, d in settings.template_dirs] == ["/etc/nginx/conf.d", "/etc/nginx/stream.d"]
    assert settings.variables["domain"] == "example.org" and settings.wait.min == 0.2 and settings.grace == 30
    assert settings.check_command == "nginx -t -q"
    assert str(settings.nginx_pid_file) == "/run/nginx.pid" and settings.variables["stream_ports"] == "1024-65535"


def test_canary_weights_and_header_routing(scene):
    stable = [scene.http_backend(f"stable-{n}") for n in range(3)]
    canary = scene.http_backend("canary")
    for backend in stable:
        scene.register("shop", backend.port, tags=["http"], meta={"weight": "10"})
    scene.register("shop", canary.port, tags=["http", "canary"], meta={"weight": "1"})
    template = EXAMPLES / "templates" / "canary.conf.j2"
    result = run_once(*scene.common_args(), "--template", f"{template}:{scene.output('http')}")
    assert result.returncode == 0, result.stderr

    scene.settle("shop")
    answers = collections.Counter(scene.get("shop").text.strip() for _ in range(124))
    assert 2 <= answers["canary"] <= 6, answers  # weight 1 of 31: about 4 in 124
    assert all(answers[f"stable-{n}"] >= 30 for n in range(3)), answers
    headers = {"Host": f"shop.{scene.domain}", "X-Canary": "always"}
    forced = {requests.get(f"http://127.0.0.1:{scene.nginx.http_port}/", headers=headers, timeout=2).text.strip()
              for _ in range(10)}
    assert forced == {"canary"}


def test_canary_rejects_a_bad_weight_with_a_warning(scene):
    backend = scene.http_backend("odd")
    scene.register("oddweight", backend.port, tags=["http"], meta={"weight": "9999"})
    template = EXAMPLES / "templates" / "canary.conf.j2"
    result = run_once(*scene.common_args(), "--template", f"{template}:{scene.output('http')}")
    assert result.returncode == 0, result.stderr
    assert "meta weight 9999 is not 1-1000, using 10" in result.stderr
    assert "weight=10;" in scene.outputs[0].read_text()


def test_tls_passthrough_routes_by_sni(scene):
    backends = {name: TlsBackend(name) for name in ("vault", "ledger")}
    for backend in backends.values():
        scene.closers.append(backend.close)
        scene.register(backend.name, backend.port, tags=["tls"])
    tls_port = free_port()
    template = EXAMPLES / "templates" / "tls-passthrough.conf.j2"
    result = run_once(*scene.common_args(), "--var", f"tls_port={tls_port}",
                      "--template", f"{template}:{scene.output('stream', '-tls')}")
    assert result.returncode == 0, result.stderr
    for name in backends:
        assert wait_until(lambda: tls_hello(tls_port, f"{name}.{scene.domain}") == name, timeout=5,
                          what=f"TLS to {name} through nginx")
    with pytest.raises(OSError):  # ssl.SSLError is an OSError: the connection is closed
        tls_hello(tls_port, f"unknown.{scene.domain}")
