"""Faults the registrar must survive: Consul agent restart, dockerd restart, cleanup after downtime."""

from __future__ import annotations

import pytest

from tests.support.docker_engine import PrivateDockerEngine
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def test_consul_agent_restart_is_noticed_and_services_restored(registrar, containers, consul_agent, unique):
    daemon = registrar("--resync", "600")  # a resync must not be what saves us
    containers("web", labels={"SERVICE_NAME": "web"})
    daemon.wait_for(lambda s: len(s) == 1, "registered")

    consul_agent.restart()  # a dev agent comes back empty; no Docker event says anything
    daemon.wait_for(lambda s: len(s) == 1, "service restored (the agent is polled every second)", timeout=10)
    # The log line follows the registration it reports; give it a moment to be written.
    wait_until(lambda: "answers again" in daemon.log or "Consul lost 1 of this host's services" in daemon.log,
               2, what="the restart reported")


def test_consul_outage_keeps_following_docker(registrar, containers, consul_agent, unique):
    daemon = registrar("--resync", "600")
    containers("web", labels={"SERVICE_NAME": "web"})
    daemon.wait_for(lambda s: len(s) == 1, "registered")

    consul_agent.stop()
    try:
        # While Consul is away Docker is still followed: this one must appear when it is back.
        late = containers("late", labels={"SERVICE_NAME": "late"})
        seen = f"docker event start {late.get_wrapped_container().name}"
        wait_until(lambda: seen in daemon.log, 10, what="the start event handled while Consul is away")
    finally:
        consul_agent.start()  # the agent is shared: it must run again whatever happens
    services = daemon.wait_for(lambda s: len(s) == 2, "both services restored", timeout=10)
    assert sorted(s["Service"] for s in services.values()) == ["late", "web"]
    assert daemon.alive()
    wait_until(lambda: "keeping the desired state" in daemon.log, 2, what="the outage reported")


def test_cleanup_removes_services_whose_container_vanished_while_down(run_sync, containers, consul_agent, unique):
    web = containers("web", labels={"SERVICE_NAME": "web"})
    result = run_sync()
    assert result.returncode == 0, result.stderr
    service_id = f"{unique}:{unique}-web:80"
    assert service_id in consul_agent.services()
    # Someone else's services, by hand and by another host's registrar, are never touched.
    consul_agent.register(f"{unique}-manual", f"{unique}-manual", 1)
    consul_agent.register(f"{unique}-other", f"{unique}-other", 2, meta={"registrar-host": f"{unique}-elsewhere"})
    try:
        web.stop()  # removed while no registrar runs: no event will ever say so

        result = run_sync()
        assert result.returncode == 0, result.stderr
        assert service_id in consul_agent.services(), "without --cleanup an orphan stays"
        assert "--cleanup removes it" in result.stderr

        result = run_sync("--cleanup")
        assert result.returncode == 0, result.stderr
        services = consul_agent.services()
        assert service_id not in services
        assert f"{unique}-manual" in services and f"{unique}-other" in services
        assert f"deregistered web ({service_id}): container gone (--cleanup)" in result.stderr
    finally:
        consul_agent.deregister(f"{unique}-manual")
        consul_agent.deregister(f"{unique}-other")


def test_stopped_while_down_is_deregistered_at_start_without_cleanup(run_sync, containers, consul_agent, unique):
    web = containers("web", labels={"SERVICE_NAME": "web"})
    assert run_sync().returncode == 0
    web.get_wrapped_container().stop(timeout=1)
    result = run_sync()
    assert result.returncode == 0, result.stderr
    assert f"{unique}:{unique}-web:80" not in consul_agent.services()
    assert "container " + f"{unique}-web stopped" in result.stderr


@pytest.fixture
def private_engine(tmp_path, docker_engine):
    """A dockerd of this test's own, so restarting it costs no other test its containers."""
    engine = PrivateDockerEngine(tmp_path / "dockerd").start()
    yield engine
    engine.stop()


def test_dockerd_restart_is_survived(registrar, private_engine, own_containers, unique):
    image = private_engine.busybox_image()
    api = private_engine.client.api
    daemon = registrar(docker_url=private_engine.url)

    def host_container(suffix: str, restart: dict | None = None) -> str:
        # No bridge on the private engine: host networking, the exposed port registered as is.
        created = api.create_container(image, ["sleep", "600"], name=f"{unique}-{suffix}", ports=[free_port()],
                                       labels={"SERVICE_NAME": suffix}, stop_signal="SIGKILL",
                                       host_config=api.create_host_config(network_mode="host",
                                                                          restart_policy=restart))
        own_containers.add(created["Id"])
        api.start(created["Id"])
        return created["Id"]

    host_container("always", {"Name": "always"})
    host_container("once")
    daemon.wait_for(lambda s: sorted(x["Service"] for x in s.values()) == ["always", "once"], "both registered")

    private_engine.restart()  # stops every container; only "always" comes back

    # Intermediate states pass by (one container's die handled before the other's), so wait
    # for the end state: only "always".
    daemon.wait_for(lambda s: [x["Service"] for x in s.values()] == ["always"],
                    "only the restarted container", timeout=30)
    assert daemon.alive()
    assert "reconnecting" in daemon.log and "reconciling everything" in daemon.log

    # And events flow again on the new stream.
    host_container("after")
    daemon.wait_for(lambda s: sorted(x["Service"] for x in s.values()) == ["after", "always"],
                    "a container started after the restart")


def test_hostile_labels_cost_only_what_is_unusable_and_the_daemon_goes_on(registrar, containers, unique):
    daemon = registrar()
    containers("evil1", labels={"SERVICE_NAME": "x;} server { listen 80"})
    containers("evil2", labels={"SERVICE_NAME": "ok", "SERVICE_TAGS": "a\nb", "SERVICE_CHECK_INTERVAL": "1s"})
    containers("evil3", labels={"SERVICE_ID": "../../../v1/agent/leave", "SERVICE_NAME": "leave"})
    containers("evil4", labels={"SERVICE_NAME": "spaced", "SERVICE_VERSION": "1 2"})
    containers("spoof", labels={"SERVICE_REGISTRAR-HOST": "someone-else", "SERVICE_NAME": "spoof"})
    containers("evil5", labels={"SERVICE_NAME": "big", "SERVICE_DATA": "x" * 100_000})
    containers("good", labels={"SERVICE_NAME": "good"})
    services = daemon.wait_for(lambda s: len(s) == 5, "every container with a usable name and ID")
    by_name = {s["Service"]: s for s in services.values()}
    assert sorted(by_name) == ["big", "good", "ok", "spaced", "spoof"]
    assert by_name["spoof"]["Meta"]["registrar-host"] == unique  # the ownership mark cannot be overridden
    assert by_name["ok"]["Tags"] == ["a\nb"], "Consul takes it; the renderer withholds it from nginx"
    assert by_name["spaced"]["Meta"]["version"] == "1 2"
    assert "data" not in by_name["big"]["Meta"], "over Consul's 512 characters: dropped, the service kept"
    log = daemon.log
    assert f"container {unique}-evil1" in log and "label SERVICE_NAME='x;} server { listen 80'" in log
    assert "label SERVICE_TAGS='a\\nb'" in log and "the renderer will not show it to nginx" in log
    assert "SERVICE_ID='../../../v1/agent/leave'" in log
    assert "SERVICE_REGISTRAR-HOST" in log and "SERVICE_VERSION='1 2'" in log
    assert "SERVICE_DATA" in log and "x" * 1000 not in log
    assert daemon.alive()
