"""Templates are bounded and watched as used: a runaway template fails alone, edits to partials count.

Real Consul and nginx; each hostile template sits beside a good one, which
must keep rendering and reloading.
"""

from __future__ import annotations

import signal
import subprocess

from tests.support.ports import free_port
from tests.support.renderer_process import RENDERER, run_once
from tests.support.waiting import wait_until

HOSTILE = {
    "loop": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}\n",
    "huge": "{% for a in range(100000) %}{{ 'x' * 1000 }}{% endfor %}\n",
    "memory": "{{ 'x' | center(20000000000) }}\n",
    "escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}\n",
}


def good_template(scene, source_dir):
    (source_dir / f"{scene.unique}-good.conf.j2").write_text(
        "server { listen 127.0.0.1:{{ http_port }}; server_name good.{{ domain }};\n"
        "    return 200 \"{% for i in service('good-svc') %}{{ i.port }}{% endfor %}\\n\"; }\n")
    scene.outputs.append(scene.nginx.conf_d / f"{scene.unique}-good.conf")


def test_runaway_templates_fail_alone_with_one_line_each(scene, tmp_path):
    source_dir = tmp_path / "templates"
    source_dir.mkdir()
    good_template(scene, source_dir)
    for name, text in HOSTILE.items():
        (source_dir / f"{scene.unique}-{name}.conf.j2").write_text(text)
        scene.outputs.append(scene.nginx.conf_d / f"{scene.unique}-{name}.conf")
    scene.register("good-svc", 4242)
    result = run_once(*scene.common_args(), "--template-dir", f"{source_dir}:{scene.nginx.conf_d}",
                      "--render-timeout", "2s", "--render-max-output", "1m")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == len(HOSTILE), result.stderr
    expected = {"loop": "took longer than 2s (render_timeout)",
                "huge": "output is larger than 1048576 bytes (render_max_output)",
                "memory": "ran out of memory",
                "escape": "access to attribute '__class__' of 'str' object is unsafe"}
    for name, text in expected.items():
        assert any(f"{scene.unique}-{name}.conf.j2" in line and text in line for line in errors), (name, errors)
    assert "Traceback" not in result.stderr
    wait_until(lambda: scene.get("good").text == "4242\n", timeout=5, what="the good template applied")
    assert not any((scene.nginx.conf_d / f"{scene.unique}-{name}.conf").exists() for name in HOSTILE)


def test_sigterm_stops_the_daemon_while_a_template_runs_for_ever(scene, tmp_path):
    looping = tmp_path / "loop.conf.j2"
    looping.write_text(HOSTILE["loop"])
    daemon = scene.daemon(*scene.common_args(), "--template", f"{looping}:{scene.output('http', '-loop')}",
                          "--render-timeout", "10m")
    daemon.wait_for_log("watching 1 template(s)")
    wait_until(lambda: any("renderer" in child_cmdline(pid) for pid in children(daemon.process.pid)),
               timeout=10, what="the render child running")
    daemon.signal(signal.SIGTERM)
    # Ten minutes of render_timeout are left: only obeying SIGTERM at once exits cleanly here.
    assert daemon.stop(timeout=20) == 0, daemon.log
    assert "stopping" in daemon.log


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def child_cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""


def test_an_edit_to_an_included_partial_renders_again(scene, tmp_path):
    main_dir = tmp_path / "main"
    (main_dir / "partials").mkdir(parents=True)
    (main_dir / "partials" / "answer.inc").write_text("one")
    (main_dir / "site.conf.j2").write_text(
        "{% import 'answer.macro' as m %}server { listen 127.0.0.1:{{ http_port }}; server_name inc.{{ domain }};\n"
        "    return 200 \"{{ m.answer() }}\\n\"; }\n")
    (main_dir / "answer.macro").write_text("{% macro answer() %}{% include 'partials/answer.inc' %}{% endmacro %}")
    # Neither partial is a template of its own, and one is in a subdirectory: only the render knows
    # the template reads them.
    daemon = scene.daemon(*scene.common_args(), "--template", f"{main_dir / 'site.conf.j2'}:{scene.output('http')}")
    wait_until(lambda: scene.get("inc").text == "one\n", timeout=10, what="first render")
    (main_dir / "partials" / "answer.inc").write_text("two")
    wait_until(lambda: scene.get("inc").text == "two\n", timeout=10, what="the edited partial rendered")
    (main_dir / "answer.macro").write_text("{% macro answer() %}three{% endmacro %}")
    wait_until(lambda: scene.get("inc").text == "three\n", timeout=10, what="the edited import rendered")
    assert daemon.alive()


def test_a_vanished_template_directory_keeps_its_outputs(scene, tmp_path):
    http_dir, stream_dir = tmp_path / "http", tmp_path / "stream"
    for directory in (http_dir, stream_dir):
        directory.mkdir()
    echo = scene.tcp_echo()
    listen = free_port()
    scene.register(f"{scene.unique}-tcp", echo.port, tags=["tcp"], meta={"listen_port": str(listen)})
    (stream_dir / f"{scene.unique}.conf.j2").write_text(
        "{% for s in services('tcp') %}{% for i in service(s.name) %}"
        "server { listen 127.0.0.1:{{ i.meta.listen_port }}; proxy_pass 127.0.0.1:{{ i.port }}; }\n"
        "{% endfor %}{% endfor %}")
    stream_output = scene.nginx.stream_d / f"{scene.unique}.conf"
    scene.outputs.append(stream_output)
    config = tmp_path / "renderer.toml"
    config.write_text(f'template_dir = ["{stream_dir}:{scene.nginx.stream_d}"]\n')
    daemon = scene.daemon(*scene.common_args(), "--config", str(config))
    wait_until(stream_output.exists, timeout=10, what="stream rendered")
    before = stream_output.read_bytes()

    hidden = tmp_path / "hidden"
    stream_dir.rename(hidden)  # the directory vanishes (an unmounted volume, a botched deploy)
    daemon.wait_for_log(f"template directory {stream_dir} does not exist; keeping the previous template set")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log(f"SIGHUP: keeping the current settings: template directory {stream_dir} does not exist")
    assert stream_output.read_bytes() == before, "the tcp routes stay"
    hidden.rename(stream_dir)
    daemon.wait_for_log("template directories readable again", timeout=40)
    assert stream_output.read_bytes() == before and daemon.alive()


def test_operator_mistakes_are_one_line_and_exit_2(scene, tmp_path):
    template = tmp_path / "a.conf.j2"
    template.write_text("x\n")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("template_dir = 3\n")
    cases = {
        "both render to": ["--template", f"{template}:{tmp_path / 'a.conf'}",
                           "--template", f"{template}:{tmp_path / 'a.conf'}"],
        "does not exist": ["--template-dir", f"{tmp_path / 'missing'}:{tmp_path}"],
        "expected ports and ranges": ["--template", f"{template}:{tmp_path / 'a.conf'}",
                                      "--var", "stream_ports=all"],
        "must be a list": ["--config", str(bad_toml)],
        "no such readable file": ["--template", f"{template}:{tmp_path / 'a.conf'}",
                                  "--consul-cacert", str(tmp_path / "ca.pem")],
    }
    for expected, args in cases.items():
        for command in ("once", "run"):
            result = subprocess.run([RENDERER, command, *args], capture_output=True, text=True, timeout=30)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], (command, args, result.stderr)
    version = subprocess.run([RENDERER, "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("renderer ")
