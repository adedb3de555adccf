"""Faults on the renderer's side, each measured by a probe through nginx ."""

import os
import shlex
import signal

from tests.support.probe import Probe
from tests.support.renderer_process import RendererDaemon
from tests.support.waiting import wait_until


def routed(scene, name, body):
    backend = scene.http_backend(body)
    scene.register(name, backend.port, tags=["http"])
    return backend


def test_reload_failure_is_reported_and_the_next_change_succeeds(scene):
    """nginx's pid file is gone, so `nginx -s reload` fails."""
    routed(scene, "steady", "steady")
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates())
    scene.settle("steady")
    pid_file = scene.nginx.prefix / "nginx.pid"
    with Probe(scene.nginx.http_port, f"steady.{scene.domain}", "steady") as probe:
        pid = pid_file.read_text()
        pid_file.unlink()
        try:
            routed(scene, "late", "late")
            daemon.wait_for_log("nginx reload failed", timeout=10)
            line = next(l for l in daemon.log.splitlines() if "nginx reload failed" in l)
            assert "nginx.pid" in line and "retrying in" in line
            assert daemon.process.poll() is None
        finally:
            pid_file.write_text(pid)
        routed(scene, "later", "later")
        scene.settle("later")
        scene.settle("late")  # the change whose reload failed is live too
    assert not probe.failures, probe.report()


def test_bad_templates_are_contained_while_traffic_flows(scene, tmp_path):
    """A syntax error, invalid nginx, an unwritable destination: one line each, no lost route."""
    routed(scene, "steady", "steady")
    source_dir = tmp_path / "t"
    source_dir.mkdir()
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates(),
                          "--template-dir", f"{source_dir}:{scene.nginx.conf_d}")
    scene.settle("steady")
    blocked = tmp_path / "file"
    blocked.write_text("")
    with Probe(scene.nginx.http_port, f"steady.{scene.domain}", "steady") as probe:
        (source_dir / f"{scene.unique}-syntax.conf.j2").write_text("{% for %}\n")
        (source_dir / f"{scene.unique}-invalid.conf.j2").write_text("not_a_directive on;\n")
        scene.outputs += [scene.nginx.conf_d / f"{scene.unique}-syntax.conf",
                          scene.nginx.conf_d / f"{scene.unique}-invalid.conf"]
        daemon.wait_for_log(f"{scene.unique}-syntax.conf.j2:1: ", timeout=10)
        daemon.wait_for_log("nginx -t refused", timeout=10)
        assert scene.nginx.config_is_valid()
        routed(scene, "after", "after")  # good changes still flow past the broken templates
        scene.settle("after")
        probe.cover(5)  # the probe keeps answering after the change
    assert not probe.failures, probe.report()
    log = daemon.log
    assert log.count(f"{scene.unique}-syntax.conf.j2:1: ") == 1, "one line, not one per pass"
    assert scene.nginx.config_is_valid()


def test_sigkill_mid_apply_leaves_whole_files_and_restart_converges(scene, tmp_path):
    """The renderer killed while nginx is being told to reload (files staged, not confirmed)."""
    routed(scene, "steady", "steady")
    started = tmp_path / "reload-started"
    slow_reload = f"sh -c {shlex.quote(f'touch {started}; sleep 30; {scene.nginx.reload_command}')}"
    args = [*scene.common_args(), *scene.default_templates()]
    first = scene.daemon(*args)
    scene.settle("steady")
    before = scene.outputs[0].read_bytes()

    with Probe(scene.nginx.http_port, f"steady.{scene.domain}", "steady") as probe:
        first.stop()
        slow = RendererDaemon(*args, "--reload-command", slow_reload)
        scene.closers.append(slow.stop)
        routed(scene, "fresh", "fresh")
        wait_until(started.exists, timeout=10, what="reload started")
        staged = scene.outputs[0].read_bytes()
        os.kill(slow.process.pid, signal.SIGKILL)
        slow.process.wait(5)
        assert staged != before and staged.endswith(b"}\n"), "the staged file is whole"
        assert any(p.name.endswith(".renderer-previous") for p in scene.nginx.conf_d.iterdir())

        again = scene.daemon(*args)
        again.wait_for_log("back as nginx last confirmed running it", timeout=10)
        scene.settle("fresh")
    assert not probe.failures, probe.report()
    assert not [p for p in scene.nginx.conf_d.iterdir() if p.name.startswith(".")], "journal cleared"
    assert scene.nginx.config_is_valid()
