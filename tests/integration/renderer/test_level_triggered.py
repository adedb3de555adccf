"""Never silently stale: whatever failed is retried until nginx runs what the catalog says.

Real Consul and nginx. Each test breaks something the way it breaks on a
node (a KV key deleted, Consul restarted empty, a destination that cannot
be written, nginx's pid file gone, a listen port another process holds)
and then only repairs the cause: no catalog change comes to the rescue.
"""

from __future__ import annotations

import signal
import socket

from tests.support.backends import tcp_roundtrip
from tests.support.ports import free_port
from tests.support.renderer_process import run_once
from tests.support.waiting import wait_until


def kv_template(scene, name: str) -> list[str]:
    """A server whose answer is the KV value at ``<unique>/answer``."""
    template = scene.nginx.prefix / f"{scene.unique}{name}.j2"
    template.write_text(
        "server { listen 127.0.0.1:{{ http_port }}; server_name kv.{{ domain }};\n"
        f"    return 200 \"{{{{ key('{scene.unique}/answer') }}}}\\n\"; }}\n")
    return ["--template", f"{template}:{scene.output('http', name)}"]


def test_a_kv_key_deleted_and_written_again_and_a_consul_restart_are_healed(scene):
    scene.consul.kv_put(f"{scene.unique}/answer", "first")
    daemon = scene.daemon(*scene.common_args(), *kv_template(scene, "-kv"))
    scene.settle("kv")
    wait_until(lambda: scene.get("kv").text == "first\n", timeout=10, what="first value served")

    scene.consul.kv_delete(f"{scene.unique}/answer")
    daemon.wait_for_log(f"Consul key '{scene.unique}/answer' does not exist")
    assert scene.get("kv").text == "first\n", "the last good file stays"
    scene.consul.kv_put(f"{scene.unique}/answer", "second")
    wait_until(lambda: scene.get("kv").text == "second\n", timeout=10, what="value written again is served")

    scene.consul.restart()  # a dev agent comes back empty: the key is gone again
    wait_until(lambda: daemon.log.count(f"Consul key '{scene.unique}/answer' does not exist") == 2, timeout=20,
               what="the empty Consul seen")
    scene.consul.kv_put(f"{scene.unique}/answer", "third")
    wait_until(lambda: scene.get("kv").text == "third\n", timeout=15, what="served after the restart")
    assert daemon.alive()


def test_a_destination_made_writable_again_is_written_without_any_change(scene, tmp_path):
    backend = scene.http_backend("late")
    scene.register("late", backend.port, tags=["http"])
    target_dir = tmp_path / "not-yet"  # the directory is missing: the write fails
    template = scene.nginx.prefix / f"{scene.unique}-late.j2"
    template.write_text("# {% for i in service('late') %}{{ i.port }}{% endfor %}\n")
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates(),
                          "--template", f"{template}:{target_dir / 'late.conf'}")
    daemon.wait_for_log(f"cannot write {target_dir / 'late.conf'}")
    target_dir.mkdir()
    wait_until(lambda: (target_dir / "late.conf").exists(), timeout=10, what="written once writable")
    assert (target_dir / "late.conf").read_text().strip() == f"# {backend.port}"
    daemon.wait_for_log("renders and applies again")


def test_indexing_a_service_works_live_as_it_does_from_a_snapshot(scene):
    backend = scene.http_backend("api")
    scene.register(f"{scene.unique}-api", backend.port)
    template = scene.nginx.prefix / f"{scene.unique}-index.j2"
    template.write_text(f"# api port {{{{ service('{scene.unique}-api')[0].port }}}}\n")
    output = scene.output("http", "-index")
    once = run_once(*scene.common_args(), "--template", f"{template}:{output}")
    assert once.returncode == 0, once.stderr
    assert output.read_text() == f"# api port {backend.port}\n"
    output.unlink()
    daemon = scene.daemon(*scene.common_args(), "--template", f"{template}:{output}")
    wait_until(output.exists, timeout=10, what="rendered by the daemon")
    assert output.read_text() == f"# api port {backend.port}\n"
    assert " ERROR " not in daemon.log


def test_a_failed_reload_is_retried_by_itself_and_by_the_next_once(scene):
    backend = scene.http_backend("retry")
    scene.register("retry", backend.port, tags=["http"])
    pid_file = scene.nginx.pid_file
    pid = pid_file.read_text()
    pid_file.unlink()
    try:
        first = run_once(*scene.common_args(), *scene.default_templates())
        assert first.returncode == 1 and "nginx reload failed" in first.stderr, first.stderr
    finally:
        pid_file.write_text(pid)
    second = run_once(*scene.common_args(), *scene.default_templates())
    assert second.returncode == 0 and "nginx reload confirmed" in second.stderr, second.stderr
    scene.settle("retry")

    daemon = scene.daemon(*scene.common_args(), *scene.default_templates())
    daemon.wait_for_log("watching 2 template(s)")
    pid_file.unlink()
    try:
        scene.register("retry2", scene.http_backend("retry2").port, tags=["http"])
        daemon.wait_for_log("nginx reload failed")
    finally:
        pid_file.write_text(pid)
    # No change after the repair: the retry alone brings nginx up to date.
    scene.settle("retry2")
    log = daemon.log
    assert log.index("nginx reload confirmed") > log.index("nginx reload failed"), log


def test_catalog_data_cannot_listen_on_nginx_ports_or_privileged_ones(scene):
    echo = scene.tcp_echo()
    good_port = free_port()
    scene.register(f"{scene.unique}-good", echo.port, tags=["tcp"], meta={"listen_port": str(good_port)})
    scene.register(f"{scene.unique}-onhttp", echo.port, tags=["tcp"],
                   meta={"listen_port": str(scene.nginx.http_port)})
    scene.register(f"{scene.unique}-ssh", echo.port, tags=["tcp"], meta={"listen_port": "22"})
    result = run_once(*scene.common_args(), *scene.default_templates())
    assert result.returncode == 0, result.stderr
    assert (f"route refused: service {scene.unique}-onhttp listen_port='{scene.nginx.http_port}': port "
            f"{scene.nginx.http_port} is nginx's own http_port: no listener" in result.stderr), result.stderr
    assert (f"route refused: service {scene.unique}-ssh listen_port='22': port 22 is outside stream_ports "
            "(1024-65535): no listener" in result.stderr), result.stderr
    stream = scene.outputs[1].read_text()
    assert f"listen 127.0.0.1:{good_port};" in stream and "listen 127.0.0.1:22;" not in stream
    assert wait_until(lambda: tcp_roundtrip(good_port, b"ok\n"), timeout=5, what="allowed listener") == b"ok\n"
    assert scene.get("anything").status_code == 404, "nginx's own HTTP port still serves"


def test_a_reload_nginx_refuses_is_reported_with_its_line_and_the_rest_still_applies(scene):
    """A listen port held by another process: `nginx -t` passes, the reload fails inside nginx."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    held = holder.getsockname()[1]
    try:
        echo = scene.tcp_echo()
        daemon = scene.daemon(*scene.common_args(), *scene.default_templates())
        daemon.wait_for_log("nginx reload confirmed")
        scene.register(f"{scene.unique}-held", echo.port, tags=["tcp"], meta={"listen_port": str(held)})
        web = scene.http_backend("web")
        scene.register("web", web.port, tags=["http"])
        daemon.wait_for_log("nginx refused to load")
        line = next(line for line in daemon.log.splitlines() if "nginx refused to load" in line)
        assert str(scene.outputs[1]) in line and f"bind() to 127.0.0.1:{held} failed" in line, line
        scene.settle("web")  # the http change of the same pass is live
        later = scene.http_backend("later")
        scene.register("later", later.port, tags=["http"])
        scene.settle("later")  # and so is every later change
        # (The refused file itself is tried again with backoff, so it is on disk at times; that it was put
        # back each time is what the log line says, and tests/unit/test_apply.py checks byte by byte.)
        assert "put back the file it runs" in line, line
    finally:
        holder.close()
    # Once the port is free the listener is retried by itself.
    wait_until(lambda: f"listen 127.0.0.1:{held};" in scene.outputs[1].read_text(), timeout=40,
               what="refused listener retried")
    wait_until(lambda: tcp_roundtrip(held, b"back\n") == b"back\n", timeout=10, what="listener served")
    assert daemon.alive()


def test_sigterm_during_a_reload_confirmation_stops_at_once(scene, tmp_path):
    """The daemon waits for nginx in slices: a stop is never held up by it."""
    slow_reload = tmp_path / "reload.sh"
    slow_reload.write_text("#!/bin/sh\nsleep 60\n")
    slow_reload.chmod(0o755)
    backend = scene.http_backend("stop")
    scene.register("stop", backend.port, tags=["http"])
    args = [*scene.common_args(), "--reload-command", str(slow_reload)]
    daemon = scene.daemon(*args, *scene.default_templates())
    wait_until(lambda: scene.outputs[0].exists(), timeout=10, what="files staged, reload running")
    daemon.signal(signal.SIGTERM)
    assert daemon.stop(timeout=20) == 0, daemon.log  # not killed: the 60 s reload was abandoned
    assert "stopping" in daemon.log


def test_stream_ports_are_the_operators_to_set(scene):
    echo = scene.tcp_echo()
    scene.register(f"{scene.unique}-low", echo.port, tags=["tcp"], meta={"listen_port": "1000"})
    denied = run_once(*scene.common_args(), *scene.default_templates())
    assert "port 1000 is outside stream_ports" in denied.stderr
    allowed = run_once(*scene.common_args(), *scene.default_templates(), "--var", "stream_ports=1000,2000-3000")
    assert allowed.returncode == 0 and "listen 127.0.0.1:1000;" in scene.outputs[1].read_text(), allowed.stderr
