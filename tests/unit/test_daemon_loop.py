"""The renderer's loop, one step at a time: fake watches, a fake Consul, an injected clock.

Renders still run for real (in the bounded child) against template files in
tmp_path; the check and reload are the stand-in nginx of ``test_apply``, so
a reload can fail on demand. No threads, no sleeping: time is moved by hand.
"""

from __future__ import annotations

import json
import logging

import pytest

from agentkit.consul import Answer
from agentkit.errors import ConsulUnavailable
from agentkit.lifecycle import Lifecycle
from renderer.catalog import node_dump
from renderer import settings as settings_module
from renderer.apply.applier import Applier
from renderer.daemon import Daemon
from renderer.catalog.kv import KvSnapshot
from renderer.render.render_pass import RenderPass
from renderer.render.loader import TemplateLoader
from renderer.catalog.watch import Update

from .test_apply import Nginx


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeConsul:
    """Answers the node dump and KV reads from plain dicts; ``down`` makes every read fail."""

    def __init__(self):
        self.down = False
        self.services: list[dict] = []
        self.kv: dict[str, str] = {}
        self.index = 10

    def get_json(self, path, params=None, timeout=None, decode=None, absent_ok=False):
        if self.down:
            raise ConsulUnavailable("cannot reach Consul at http://127.0.0.1:8500: connection refused")
        if path.startswith("/v1/kv/"):
            import base64
            prefix = path[len("/v1/kv/"):]
            entries = [{"Key": k, "Value": base64.b64encode(v.encode()).decode()}
                       for k, v in self.kv.items() if k.startswith(prefix)]
            return Answer(self.index, entries or None)
        body = json.dumps([{"Node": "n1", "Address": "10.0.0.1", "Services": self.services, "Checks": []}])
        return Answer(self.index, node_dump.decode(body.encode()))

    def close(self):
        pass


class FakeWatch:
    def __init__(self, source, fetch, deliver, wait, start_index):
        self.source, self.fetch, self.deliver, self.start_index = source, fetch, deliver, start_index
        self.stopped = False

    def stop(self):
        self.stopped = True


class FakeFiles:
    def __init__(self, notify):
        self.notify = notify

    def start(self):
        return self

    def watch(self, template_dirs, files, data_dirs=()):
        self.files = set(files)

    def stop(self):
        pass


def service(name, port, tags=("http",)):
    return {"ID": f"{name}-{port}", "Service": name, "Address": "10.0.0.1", "Port": port, "Tags": list(tags),
            "Meta": {}, "ModifyIndex": port}


class Harness:
    def __init__(self, tmp_path, templates: dict[str, str], *extra_flags):
        self.tmp_path, self.clock, self.consul = tmp_path, Clock(), FakeConsul()
        self.out = tmp_path / "out"
        self.out.mkdir()
        args = []
        for name, text in templates.items():
            (tmp_path / name).write_text(text)
            args.append(f"{tmp_path / name}:{self.out / name.replace('.j2', '')}")
        self.flags = {"template": tuple(args), "nginx_pid_file": "", "var": ("domain=example.org",)}
        for flag in extra_flags:
            self.flags.update(flag)
        self.nginx = Nginx([self.out / name.replace(".j2", "") for name in templates])
        self.watches: list[FakeWatch] = []
        self.notified: list[str] = []
        lifecycle = Lifecycle(clock=self.clock)
        self.daemon = Daemon(settings_module.build(self.flags, environ={}),
                             rebuild_settings=lambda: settings_module.build(self.flags, environ={}),
                             lifecycle=lifecycle, connect=lambda settings, timeout=0: self.consul,
                             watch_factory=self._watch, files_factory=FakeFiles, notify=self.notified.append,
                             make_pass=self._make_pass)
        self.daemon.client = self.consul
        self.daemon.files = FakeFiles(lambda: None)
        self.daemon._configure(self.daemon.settings)

    def _watch(self, *args):
        watch = FakeWatch(*args)
        self.watches.append(watch)
        return watch

    def _make_pass(self, settings, lifecycle, bytecode_cache=None):
        applier = Applier(self.nginx.check, self.nginx.reload, clock=self.clock)
        return RenderPass(TemplateLoader(settings.variables), applier, settings.template_specs(), settings.limits,
                          lifecycle)

    def step(self):
        return self.daemon.step(block=False)

    def later(self, seconds):
        self.clock.now += seconds
        return self.step()

    def watch(self, source) -> FakeWatch:
        live = [w for w in self.watches if w.source == source and not w.stopped]
        assert len(live) == 1, f"one live {source} watch expected, found {len(live)}"
        return live[0]

    def deliver(self, source):
        """What the watch would deliver now: a fresh read through its own fetch."""
        index, data = self.watch(source).fetch(0, 0)
        self.consul.index += 1
        self.daemon.events.put(Update(source, data, self.consul.index))
        return self.step()

    def output(self, name):
        path = self.out / name
        return path.read_text() if path.exists() else None


UPSTREAMS = "{% for s in services('http') %}{% for i in service(s.name) %}{{ s.name }} {{ i.port }}\n" \
            "{% endfor %}{% endfor %}"


def test_consul_down_at_start_keeps_the_files_tells_systemd_ready_and_renders_when_it_is_back(tmp_path):
    h = Harness(tmp_path, {"a.conf.j2": UPSTREAMS})
    (h.out / "a.conf").write_text("what nginx runs\n")
    h.consul.down = True
    h.step()
    assert h.output("a.conf") == "what nginx runs\n"
    assert h.notified[0].startswith("READY=1\nSTATUS=Consul unreachable"), h.notified
    watch = h.watch("catalog")  # the templates' missing data is watched already
    h.consul.down, h.consul.services = False, [service("web", 80)]
    h.deliver("catalog")
    assert h.output("a.conf") == "web 80\n" and h.nginx.reloads == 1
    assert sum(m.startswith("READY=1") for m in h.notified) == 1
    assert watch is h.watch("catalog")


def test_a_kv_key_deleted_and_written_again_renders_again_without_anything_else(tmp_path, caplog):
    h = Harness(tmp_path, {"k.conf.j2": "size {{ key('cfg/size') }};\n"})
    h.consul.kv = {"cfg/size": "10m"}
    h.step()
    assert h.output("k.conf") == "size 10m;\n"
    h.consul.kv = {}
    with caplog.at_level(logging.ERROR, logger="renderer"):
        h.deliver("kv")
    assert "Consul key 'cfg/size' does not exist" in caplog.text and h.output("k.conf") == "size 10m;\n"
    h.consul.kv = {"cfg/size": "20m"}
    h.deliver("kv")  # the failed render kept watching the key
    assert h.output("k.conf") == "size 20m;\n"


def test_a_key_absent_from_the_first_render_is_watched_and_renders_once_written(tmp_path):
    h = Harness(tmp_path, {"k.conf.j2": "size {{ key('cfg/size') }};\n"})
    h.step()
    assert h.output("k.conf") is None and h.daemon.state.pending
    h.consul.kv = {"cfg/size": "10m"}
    h.deliver("kv")  # no time passes: the watch of the failed render's key brings it
    assert h.output("k.conf") == "size 10m;\n"


def test_indexing_a_result_before_the_catalog_arrived_is_not_a_failure(tmp_path, caplog):
    h = Harness(tmp_path, {"i.conf.j2": "port {{ service('api')[0].port }};\n"})
    h.consul.services = [service("api", 8443)]
    with caplog.at_level(logging.ERROR, logger="renderer"):
        h.step()
    assert h.output("i.conf") == "port 8443;\n" and not caplog.records


def test_a_failed_reload_is_retried_on_its_own(tmp_path):
    h = Harness(tmp_path, {"a.conf.j2": UPSTREAMS})
    h.consul.services = [service("web", 80)]
    h.nginx.reload_fails = True
    h.step()
    assert h.nginx.reloads == 0 and h.daemon.render_pass.applier.reload_pending
    h.nginx.reload_fails = False
    h.later(0.1)
    assert h.nginx.reloads == 0, "not before its backoff"
    h.later(5)
    assert h.nginx.reloads == 1 and not h.daemon.render_pass.applier.reload_pending
    assert h.daemon.state.running_serial == h.daemon.serial


def test_a_destination_that_becomes_writable_is_written_without_a_data_change(tmp_path):
    h = Harness(tmp_path, {"a.conf.j2": UPSTREAMS})
    blocked = h.out / "a.conf"
    blocked.mkdir()  # a directory where the file should be: the write fails
    h.consul.services = [service("web", 80)]
    h.step()
    assert h.daemon.state.pending
    blocked.rmdir()
    h.later(5)
    assert h.output("a.conf") == "web 80\n" and not h.daemon.state.pending


def test_sighup_naming_a_missing_template_directory_keeps_the_settings(tmp_path, caplog):
    h = Harness(tmp_path, {"a.conf.j2": UPSTREAMS})
    h.consul.services = [service("web", 80)]
    h.step()
    h.flags["template_dir"] = (f"{tmp_path / 'gone'}:{h.out}",)
    h.daemon.events.put("reload-settings")
    with caplog.at_level(logging.ERROR, logger="renderer"):
        h.step()
    assert "SIGHUP: keeping the current settings: template directory" in caplog.text
    assert h.output("a.conf") == "web 80\n"


def test_a_stop_request_ends_the_loop(tmp_path):
    h = Harness(tmp_path, {"a.conf.j2": "static\n"})
    h.step()
    h.daemon.stop()
    assert h.step() is False


@pytest.mark.parametrize("reset", [True, False])
def test_identical_data_renders_nothing_again(tmp_path, reset):
    h = Harness(tmp_path, {"a.conf.j2": UPSTREAMS})
    h.consul.services = [service("web", 80)]
    h.step()
    checks = h.nginx.checks
    h.daemon.events.put(Update("kv", KvSnapshot([""], {}), 1))
    h.deliver("catalog")
    assert h.nginx.checks == checks


def test_a_pass_that_fails_as_a_whole_makes_ready_say_so_until_one_succeeds(tmp_path, caplog):
    h = Harness(tmp_path, {"a.conf.j2": UPSTREAMS})
    h.consul.services = [service("web", 80)]
    h.step()
    assert h.daemon.status.endpoint.snapshot.ready
    run = h.daemon.render_pass.run

    def broken(data, force=False):
        raise ValueError("a bug")
    h.daemon.render_pass.run = broken
    h.consul.services = [service("web", 81)]
    with caplog.at_level(logging.ERROR, logger="renderer"):
        h.deliver("catalog")
    snapshot = h.daemon.status.endpoint.snapshot
    assert not snapshot.ready and snapshot.ready_reason.startswith(
        "not ready: render pass: failed unexpectedly (ValueError: a bug)")
    h.daemon.render_pass.run = run
    h.later(5)
    assert h.daemon.status.endpoint.snapshot.ready and h.output("a.conf") == "web 81\n"
