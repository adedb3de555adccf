"""The registrar's decisions with fake edges: no Docker, no Consul, no sleeping."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from agentkit.errors import ConfigError
from registrar import config as config_module
from registrar.consul_sink import wait_for_consul as connect
from registrar.sync import Registrar
from registrar.docker_source import ContainerEvent
from registrar.errors import ConsulDenied, ConsulUnavailable
from registrar.model import MappingSettings
from registrar.reconcile import Actual
from tests.unit.test_registrar_labels import inspect

MAPPING = MappingSettings(hostname="node1", host_address="10.0.0.1")


class FakeDocker:
    def __init__(self, *infos):
        self.infos = {info["Id"]: info for info in infos}
        self.events: list = []  # what recent_events gives back
        self.listed = 0

    def containers(self):
        self.listed += 1
        return [{"Id": cid, "Names": [info["Name"]], "State": "running" if info["State"]["Running"] else "exited",
                 "Status": "Up" if info["State"]["Running"] else f"Exited ({info['State']['ExitCode']}) now"}
                for cid, info in self.infos.items()]

    def recent_events(self, since, actions):
        return [event for event in self.events if event.action in actions]

    def inspect(self, cid):
        # Docker takes a unique prefix of an ID, as the registrar's short IDs are.
        return next((info for full, info in self.infos.items() if full.startswith(cid)), None) if cid else None


class FakeConsul:
    def __init__(self):
        self.services: dict[str, dict] = {}
        self.calls: list[tuple] = []
        self.down = False
        self.refuse: set[str] = set()

    def _check(self):
        if self.down:
            raise ConsulUnavailable("cannot reach Consul at http://x:1: connection refused")

    def owned_services(self):
        self._check()
        return {sid: Actual.from_service(s) for sid, s in self.services.items()}

    def register(self, service):
        self._check()
        if service.name in self.refuse:
            raise ConsulDenied(f'denied registering {service.name}: the token lacks service:write on "{service.name}"')
        self.calls.append(("register", service.id))
        self.services[service.id] = service

    def deregister(self, sid, name=""):
        self._check()
        self.calls.append(("deregister", sid))
        self.services.pop(sid, None)

    def update_ttl(self, check_id, status, output, name=""):
        self._check()
        self.calls.append(("ttl", check_id, status))


def make(*infos, **config):
    cfg = config_module.build(hostname="node1", consul_addr="127.0.0.1:1", environ={}, **config)
    consul = FakeConsul()
    return Registrar(cfg, FakeDocker(*infos), consul, MAPPING), consul


def test_full_sync_registers_once_and_a_second_sync_changes_nothing():
    registrar, consul = make(inspect())
    assert registrar.full_sync() == []
    assert consul.calls == [("register", "node1:web:80")]
    registrar.full_sync()
    registrar.check_consul()
    assert consul.calls == [("register", "node1:web:80")]


def test_agent_that_lost_everything_is_refilled_on_the_next_check():
    registrar, consul = make(inspect())
    registrar.full_sync()
    consul.services.clear()  # what an agent restart looks like
    registrar.check_consul()
    assert consul.calls == [("register", "node1:web:80")] * 2


def test_container_event_after_stop_deregisters():
    info = inspect()
    registrar, consul = make(info)
    registrar.full_sync()
    info["State"] = {"Running": False, "ExitCode": 137}
    registrar.observe(info["Id"])
    registrar.apply()
    assert consul.calls[-1] == ("deregister", "node1:web:80")


def test_destroy_event_cleans_up_and_the_tombstone_goes_once_clean():
    info = inspect()
    registrar, consul = make(info)
    registrar.full_sync()
    del registrar.docker.infos[info["Id"]]
    registrar.observe(info["Id"], "web")
    registrar.apply()
    assert consul.calls[-1] == ("deregister", "node1:web:80") and registrar.containers == {}


def test_consul_down_keeps_desired_state_and_catches_up_later():
    registrar, consul = make()
    registrar.full_sync()
    consul.down = True
    with pytest.raises(ConsulUnavailable):
        registrar.full_sync()
    registrar.actual = None
    info = inspect()
    registrar.docker.infos[info["Id"]] = info
    registrar.observe(info["Id"])  # Docker still followed while Consul is away
    consul.down = False
    registrar.apply()
    assert consul.calls == [("register", "node1:web:80")]


def test_a_refused_service_does_not_stop_the_others_and_is_reported():
    registrar, consul = make(inspect(name="a", labels={"SERVICE_NAME": "secret"}),
                             inspect(name="b", labels={"SERVICE_NAME": "open"}) | {"Id": "b" * 64})
    consul.refuse = {"secret"}
    failures = registrar.full_sync()
    assert consul.calls == [("register", "node1:b:80")]
    assert len(failures) == 1 and "service:write" in str(failures[0])


def test_docker_health_changes_push_ttl_updates_without_re_registering():
    info = inspect(health="starting", healthcheck="true")
    registrar, consul = make(info)
    registrar.full_sync()
    info["State"]["Health"]["Status"] = "healthy"
    registrar.observe(info["Id"])
    registrar.apply()
    assert consul.calls == [("register", "node1:web:80"), ("ttl", "service:node1:web:80:docker-health", "passing")]
    registrar.heartbeat()
    assert consul.calls[-1] == ("ttl", "service:node1:web:80:docker-health", "passing")


def test_start_up_retries_only_unavailability_and_as_often_as_told():
    consul = FakeConsul()
    consul.down = True
    consul.agent_services = lambda: consul._check() or {}
    sleeps = []
    with pytest.raises(ConsulUnavailable):
        connect(consul, attempts=3, interval=0.25, sleep=sleeps.append)
    assert sleeps == [0.25, 0.25, 0.25]

    def denied():
        raise ConsulDenied("denied")
    consul.agent_services = denied
    sleeps.clear()
    with pytest.raises(ConsulDenied):
        connect(consul, attempts=5, interval=1, sleep=sleeps.append)
    assert sleeps == []


def test_config_flags_beat_environment_and_bad_values_name_the_flag():
    env = {"CONSUL_HTTP_ADDR": "10.1.1.1:8500", "CONSUL_HTTP_TOKEN": "s3cret", "DOCKER_HOST": "tcp://d:2375"}
    cfg = config_module.build(consul_addr="127.0.0.1:9", hostname="h", environ=env, tags="a, b", retry_interval=500)
    assert str(cfg.consul_address) == "http://127.0.0.1:9" and cfg.docker_url == "tcp://d:2375"
    assert cfg.tags.render({}) == "a, b" and cfg.retry_interval == 0.5 and cfg.consul_token == "s3cret"
    assert "s3cret" not in repr(cfg)
    for bad, flag in (({"tags": "{{ .Name"}, "--tags"), ({"tags": "{{ httpGet \"http://x\" }}"}, "--tags"), ({"hostname": "a:b"}, "--hostname"), ({"ip": "a b"}, "--ip"),
                      ({"resync": -1}, "--resync"), ({"retry_attempts": -2}, "--retry-attempts")):
        with pytest.raises(ConfigError, match=flag):
            config_module.build(environ={}, **({"hostname": "h"} | bad))



def test_a_payload_that_breaks_the_mapping_costs_only_that_container(caplog):
    broken = inspect(name="broken") | {"Id": "b" * 64}
    broken["Config"] = "not a dict"  # no Docker sends this; a bug might
    registrar, consul = make(inspect(), broken)
    with caplog.at_level(logging.ERROR, logger="registrar"):
        assert registrar.full_sync() == []
    assert consul.calls == [("register", "node1:web:80")]
    assert "cannot map its settings" in caplog.text
    # What it had in Consul stays: a bug must not take a live service away.
    consul.services["kept"] = dataclasses.replace(
        consul.services["node1:web:80"], id="kept", container_id="bbbbbbbbbbbb",
        meta=(("registrar-container", "bbbbbbbbbbbb"), ("registrar-host", "node1")))
    registrar.full_sync()
    assert "kept" in consul.services


def kill(info, sig, at=None):
    import time as _time
    return ContainerEvent(info["Id"], "kill", "web", (("name", "web"), ("signal", str(sig))), at or _time.time())


def test_the_stop_signal_drains_and_other_signals_change_nothing():
    info = inspect()
    registrar, consul = make(info)
    registrar.full_sync()
    registrar.observe(info["Id"], "web", kill(info, 1))  # docker kill -s HUP: a config reload
    registrar.apply()
    assert consul.calls == [("register", "node1:web:80")]

    registrar.observe(info["Id"], "web", kill(info, 15))  # docker stop
    registrar.apply()
    assert consul.calls[-1] == ("register", "node1:web:80")
    check = consul.services["node1:web:80"].stopping_check
    assert (check.id, check.status) == ("service:node1:web:80:stopping", "critical")
    assert check.name.startswith("Container stopping: sent SIGTERM at ")
    # SIGKILL after the timeout: still the same drain, not a second registration.
    registrar.observe(info["Id"], "web", kill(info, 9))
    registrar.apply()
    assert len(consul.calls) == 2

    info["State"] = {"Running": False, "ExitCode": 143}  # die: deregistered as before
    registrar.observe(info["Id"], "web", ContainerEvent(info["Id"], "die", "web"))
    registrar.apply()
    assert consul.calls[-1] == ("deregister", "node1:web:80") and registrar.stops == {}


def test_a_custom_stop_signal_drains_and_a_restart_ends_the_drain():
    info = inspect()
    info["Config"]["StopSignal"] = "SIGUSR1"
    registrar, consul = make(info)
    registrar.full_sync()
    registrar.observe(info["Id"], "web", kill(info, 10))  # SIGUSR1: this container's stop signal
    registrar.apply()
    assert consul.services["node1:web:80"].stopping_check is not None
    registrar.observe(info["Id"], "web", ContainerEvent(info["Id"], "start", "web"))
    registrar.apply()
    assert consul.services["node1:web:80"].stopping_check is None


def test_a_container_that_did_not_stop_is_put_back(caplog):
    info = inspect()
    info["Config"]["StopTimeout"] = 1
    registrar, consul = make(info)
    registrar.full_sync()
    registrar.observe(info["Id"], "web", kill(info, 15))
    registrar.apply()
    request = registrar.stops["0123456789ab"]
    assert request.give_up_at == request.at + 1 + 5, "its stop timeout plus the margin"
    registrar.give_up_stops(request.give_up_at - 0.5)
    assert registrar.stops, "not before its time"
    with caplog.at_level(logging.WARNING):
        registrar.give_up_stops(request.give_up_at)
    registrar.apply()
    assert consul.services["node1:web:80"].stopping_check is None
    assert "was sent SIGTERM at" in caplog.text and "it did not stop" in caplog.text


def test_drain_off_keeps_registrators_timing():
    info = inspect()
    registrar, consul = make(info, drain="off")
    registrar.full_sync()
    registrar.observe(info["Id"], "web", kill(info, 15))
    registrar.apply()
    assert consul.calls == [("register", "node1:web:80")] and registrar.stops == {}


def test_an_old_stop_replayed_at_start_is_ignored_but_a_recent_one_drains():
    info = inspect()
    registrar, consul = make(info)
    registrar.full_sync()
    import time as _time
    registrar.observe(info["Id"], "web", kill(info, 15, at=_time.time() - 60))  # past its timeout + margin
    assert registrar.stops == {}
    registrar.observe(info["Id"], "web", kill(info, 15, at=_time.time() - 2))  # a stop under way
    assert "0123456789ab" in registrar.stops


def test_a_stop_under_way_before_the_registrar_started_is_drained_by_the_first_reconciliation():
    info = inspect()
    registrar, consul = make(info)
    registrar.docker.events = [ContainerEvent(info["Id"], "start", "web"), kill(info, 15)]
    registrar.full_sync()
    assert consul.services["node1:web:80"].stopping_check is not None
    assert consul.calls == [("register", "node1:web:80")], "registered drained, never routable in between"
    # A later start (docker restart) ends it.
    registrar.docker.events.append(ContainerEvent(info["Id"], "start", "web"))  # no live event seen
    registrar.full_sync()
    assert consul.services["node1:web:80"].stopping_check is None
