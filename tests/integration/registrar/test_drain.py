"""Drain on stop: a container's services leave the routable set at its stop signal, before it exits."""

from __future__ import annotations

import threading

import docker.errors
import pytest

from tests.support.waiting import wait_until

# Keeps serving for a while after SIGTERM, as a graceful app does; ignores SIGHUP.
GRACEFUL = "sh -c \"trap 'sleep {drain}; exit 0' TERM; trap '' HUP; httpd -f -p 80 -h /www & wait\""


def stopping_check(agent, service_id: str) -> dict | None:
    return agent.get("/v1/agent/checks").get(f"service:{service_id}:stopping")


def running(container) -> bool:
    wrapped = container.get_wrapped_container()
    try:
        wrapped.reload()
    except docker.errors.NotFound:
        return False
    return wrapped.attrs["State"]["Running"]


class Plain:
    """A container made with the low-level API (testcontainers cannot set a stop timeout)."""

    def __init__(self, container):
        self.container = container

    def get_wrapped_container(self):
        return self.container


@pytest.fixture
def slow_to_stop(docker_engine, busybox_image, own_containers, unique):
    """``sleep 600`` as PID 1 (which ignores SIGTERM), with a stop timeout, published on a host port."""
    api, made = docker_engine.client.api, []

    def start(suffix: str, stop_timeout: int) -> Plain:
        created = api.create_container(busybox_image, ["sleep", "600"], name=f"{unique}-{suffix}", ports=[80],
                                       labels={"SERVICE_NAME": suffix}, stop_timeout=stop_timeout,
                                       host_config=api.create_host_config(port_bindings={80: None}))
        made.append(created["Id"])
        own_containers.add(created["Id"])
        api.start(created["Id"])
        return Plain(docker_engine.client.containers.get(created["Id"]))

    yield start
    for container_id in made:
        try:
            api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass


def stop_in_background(container, timeout: int = 30) -> threading.Thread:
    """``docker stop``, which blocks until the container exited."""
    thread = threading.Thread(target=container.get_wrapped_container().stop, kwargs={"timeout": timeout},
                              daemon=True)
    thread.start()
    return thread


def test_a_stopping_container_is_drained_before_it_exits_then_deregistered(registrar, containers, consul_agent,
                                                                           unique):
    daemon = registrar()
    app = containers("app", command=GRACEFUL.format(drain=3), labels={"SERVICE_NAME": f"{unique}-app"},
                     stop_signal="SIGTERM")
    service_id = next(iter(daemon.wait_for(lambda s: s, "registered")))
    stopper = stop_in_background(app)

    def drained():
        return stopping_check(consul_agent, service_id)
    check = wait_until(drained, 10, what="the stopping check")
    assert running(app), "drained while the app still runs (it drains for 3 s)"
    assert check["Status"] == "critical" and check["Name"].startswith("Container stopping: sent SIGTERM at ")
    assert consul_agent.get(f"/v1/health/service/{unique}-app", passing="1") == [], "nginx routes passing ones"
    daemon.wait_for(lambda s: not s, "deregistered once it exited", timeout=15)
    stopper.join(15)
    assert f"drained {unique}-app ({service_id})" in daemon.log and "out of routing until it exits" in daemon.log


def test_a_signal_that_does_not_stop_the_container_changes_nothing(registrar, containers, consul_agent, unique):
    daemon = registrar()
    app = containers("app", command=GRACEFUL.format(drain=3), labels={"SERVICE_NAME": "app"}, stop_signal="SIGTERM")
    service_id = next(iter(daemon.wait_for(lambda s: s, "registered")))
    app.get_wrapped_container().kill(signal="SIGHUP")  # e.g. to reload a config
    wait_until(lambda: "docker event kill" in daemon.log and "signal 1" in daemon.log, 10, what="the HUP seen")
    assert stopping_check(consul_agent, service_id) is None
    assert daemon.log.count("registered app") == 1 and running(app)


def test_a_container_that_did_not_stop_is_put_back(registrar, slow_to_stop, consul_agent, unique):
    daemon = registrar()
    # PID 1 without a handler ignores SIGTERM: "docker kill -s TERM" does not stop it. Its stop
    # timeout (1 s) plus the margin (5 s) later, the registrar gives the stop up.
    app = slow_to_stop("stubborn", stop_timeout=1)
    service_id = next(iter(daemon.wait_for(lambda s: s, "registered")))
    app.get_wrapped_container().kill(signal="SIGTERM")
    wait_until(lambda: stopping_check(consul_agent, service_id), 10, what="drained at the signal")
    wait_until(lambda: stopping_check(consul_agent, service_id) is None, 15, what="put back")
    assert running(app)
    assert "container " + f"{unique}-stubborn was sent SIGTERM at" in daemon.log
    assert "it did not stop; its services are routable again" in daemon.log


def test_a_registrar_started_during_a_stop_drains_at_once(registrar, slow_to_stop, consul_agent, unique):
    # Asked to stop before any registrar ran (a host rebooting its registrar mid-deploy):
    # Docker's recent events say so, and the first reconciliation registers it drained.
    app = slow_to_stop("late", stop_timeout=60)
    app.get_wrapped_container().kill(signal="SIGTERM")  # ignored by PID 1: it keeps running, "stopping"
    daemon = registrar()
    services = daemon.wait_for(lambda s: s, "registered")
    service_id = next(iter(services))
    assert stopping_check(consul_agent, service_id) is not None
    assert daemon.log.count(f"drained late ({service_id})") == 1
    assert "registered late" not in daemon.log, "never routable in between"


def test_drain_off_keeps_registrators_timing(registrar, containers, consul_agent, unique):
    daemon = registrar("--drain", "off")
    app = containers("app", command=GRACEFUL.format(drain=2), labels={"SERVICE_NAME": "app"}, stop_signal="SIGTERM")
    service_id = next(iter(daemon.wait_for(lambda s: s, "registered")))
    stopper = stop_in_background(app)
    wait_until(lambda: "docker event kill" in daemon.log, 10, what="the stop signal seen")
    assert stopping_check(consul_agent, service_id) is None and running(app)
    assert service_id in daemon.services(), "still registered while it drains"
    daemon.wait_for(lambda s: not s, "deregistered once it exited", timeout=15)
    stopper.join(15)
