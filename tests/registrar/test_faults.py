"""Faults the registrar must survive: Consul agent restart, dockerd restart, cleanup after downtime."""

from __future__ import annotations

import time

import pytest

from tests.support.waiting import wait_until


def test_consul_agent_restart_is_noticed_and_services_restored(registrar, containers, consul_agent, unique):
    daemon = registrar("--resync", "600")  # a resync must not be what saves us
    containers("web", labels={"SERVICE_NAME": "web"})
    daemon.wait_for(lambda s: len(s) == 1, "registered")

    consul_agent.restart()  # a dev agent comes back empty; no Docker event says anything
    back = time.monotonic()
    daemon.wait_for(lambda s: len(s) == 1, "service restored", timeout=10)
    elapsed = time.monotonic() - back
    assert elapsed < 5, f"restored only after {elapsed:.1f}s"
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
        containers("late", labels={"SERVICE_NAME": "late"})
        time.sleep(1.0)
    finally:
        consul_agent.start()  # the agent is shared: it must run again whatever happens
    back = time.monotonic()
    services = daemon.wait_for(lambda s: len(s) == 2, "both services restored", timeout=10)
    assert time.monotonic() - back < 5
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


def test_dockerd_restart_is_survived(registrar, containers, docker_engine, unique):
    if not docker_engine.started_here:
        pytest.skip("dockerd was already running before the tests; only one started by them can be restarted")
    daemon = registrar()
    containers("always", labels={"SERVICE_NAME": "always"}, restart_policy={"Name": "always"})
    containers("once", labels={"SERVICE_NAME": "once"})
    daemon.wait_for(lambda s: len(s) == 2, "both registered")

    docker_engine.restart()  # stops every container; only "always" comes back, on a new port

    def current_port() -> int | None:
        container = docker_engine.client.containers.get(f"{unique}-always")
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get("80/tcp") or []
        return int(bindings[0]["HostPort"]) if container.status == "running" and bindings else None

    # Intermediate states pass by (one container's die handled before the other's), so wait
    # for the end state: only "always", registered at the port it has now.
    daemon.wait_for(lambda s: [(x["Service"], x["Port"]) for x in s.values()] == [("always", current_port())],
                    "only the restarted container, at its new port", timeout=30)
    assert daemon.alive()
    assert "reconnecting" in daemon.log and "reconciling everything" in daemon.log

    # And events flow again on the new stream.
    containers("after", labels={"SERVICE_NAME": "after"})
    daemon.wait_for(lambda s: len(s) == 2, "a container started after the restart")


def test_hostile_labels_are_refused_with_a_warning_and_the_daemon_goes_on(registrar, containers, unique):
    daemon = registrar()
    containers("evil1", labels={"SERVICE_NAME": "x;} server { listen 80"})
    containers("evil2", labels={"SERVICE_NAME": "ok", "SERVICE_TAGS": "a\nb", "SERVICE_CHECK_INTERVAL": "1s"})
    containers("evil3", labels={"SERVICE_ID": "../../../v1/agent/leave", "SERVICE_NAME": "leave"})
    containers("evil4", labels={"SERVICE_NAME": "spaced", "SERVICE_VERSION": "1 2"})
    containers("spoof", labels={"SERVICE_META_REGISTRAR-HOST": "someone-else", "SERVICE_NAME": "spoof"})
    containers("evil5", labels={"SERVICE_NAME": "big", "SERVICE_DATA": "x" * 100_000})
    containers("good", labels={"SERVICE_NAME": "good"})
    services = daemon.wait_for(lambda s: len(s) == 2, "the good containers")
    assert sorted(s["Service"] for s in services.values()) == ["good", "spoof"]
    spoof = next(s for s in services.values() if s["Service"] == "spoof")
    assert spoof["Meta"]["registrar-host"] == unique  # the ownership mark cannot be overridden
    log = daemon.log
    assert f"container {unique}-evil1" in log and "label SERVICE_NAME='x;} server { listen 80'" in log
    assert "label SERVICE_TAGS='a\\nb'" in log
    assert "SERVICE_ID='../../../v1/agent/leave'" in log
    assert "SERVICE_META_REGISTRAR-HOST" in log and "SERVICE_VERSION='1 2'" in log
    assert "SERVICE_DATA" in log and "x" * 1000 not in log
    assert daemon.alive()
