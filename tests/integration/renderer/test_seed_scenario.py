"""The seed deployment through `renderer once`, real Consul and real nginx."""

from tests.support.backends import tcp_roundtrip
from tests.support.ports import free_port
from tests.support.renderer_process import run_once
from tests.support.waiting import wait_until


def test_seed_deployment(scene):
    fronts = [scene.http_backend(f"httpfront-{letter}") for letter in "abc"]
    for backend in fronts:
        scene.register("httpfront", backend.port, tags=["http"])
    sick = scene.http_backend("httpfront-sick")
    scene.register("httpfront", sick.port, tags=["http"], check={"TTL": "600s", "Status": "critical"})
    internal = scene.http_backend("httpbackend")
    scene.register("httpbackend", internal.port)
    echo = scene.tcp_echo()
    listen_port = free_port()
    scene.register(f"tcpfront-{listen_port}", echo.port, tags=["tcp"])

    result = run_once(*scene.common_args(), *scene.default_templates())
    assert result.returncode == 0, result.stderr

    http_conf = scene.outputs[0].read_text()
    assert "upstream httpfront {" in http_conf and f"server_name httpfront.{scene.domain};" in http_conf
    assert f"127.0.0.1:{sick.port}" not in http_conf, "a critical instance is excluded"
    assert "httpbackend" not in http_conf, "an untagged service is not exposed"

    answers = wait_until(lambda: {scene.get("httpfront").text.strip() for _ in range(12)} == {
        "httpfront-a", "httpfront-b", "httpfront-c"}, timeout=5, what="balancing over the three fronts")
    assert answers
    assert scene.get("httpbackend").status_code == 404

    reply = wait_until(lambda: tcp_roundtrip(listen_port, b"ping\n"), timeout=5, what="tcp echo through nginx")
    assert reply == b"ping\n"


def test_second_pass_with_no_change_writes_and_reloads_nothing(scene):
    backend = scene.http_backend("steady")
    scene.register("steady", backend.port, tags=["http"])
    args = [*scene.common_args(), *scene.default_templates(), "--log-level", "info"]
    first = run_once(*args)
    assert first.returncode == 0 and "nginx reload confirmed" in first.stderr
    mtime = scene.outputs[0].stat().st_mtime_ns
    second = run_once(*args)
    assert second.returncode == 0, second.stderr
    assert "rendered" not in second.stderr and "reload" not in second.stderr
    assert scene.outputs[0].stat().st_mtime_ns == mtime


def test_service_with_no_passing_instance_answers_503(scene):
    backend = scene.http_backend("gone")
    scene.register("allsick", backend.port, tags=["http"], check={"TTL": "600s", "Status": "critical"})
    result = run_once(*scene.common_args(), *scene.default_templates())
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: scene.get("allsick").status_code == 503, timeout=5, what="503 for allsick")
