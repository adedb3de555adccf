"""Containers come and go; the registrar's services follow (real Docker, real Consul)."""

from __future__ import annotations

from tests.support.ports import free_port
from tests.support.waiting import wait_until


def one(services: dict) -> dict:
    assert len(services) == 1, services
    return next(iter(services.values()))


def test_containers_running_before_start_up_are_registered_once(registrar, containers, consul_agent, unique):
    web = containers("web", labels={"SERVICE_NAME": f"{unique}-web", "SERVICE_TAGS": "http,front"})
    host_port = int(web.get_exposed_port(80))
    daemon = registrar()
    services = daemon.wait_for(lambda s: len(s) == 1, "the running container registered")
    service = one(services)
    assert service["ID"] == f"{unique}:{unique}-web:80"
    assert (service["Service"], service["Address"], service["Port"]) == (f"{unique}-web", "127.0.0.1", host_port)
    assert service["Tags"] == ["http", "front"]
    assert service["Meta"]["registrar-container"] == web.get_wrapped_container().id[:12]

    # Unchanged services are never written again: two full reconciliations (every 2 s) and many
    # Consul polls later, the catalog entry has not moved and the log has one registration.
    index = consul_agent.get(f"/v1/catalog/service/{unique}-web")[0]["ModifyIndex"]
    passes = daemon.log.count("full reconciliation done")
    wait_until(lambda: daemon.log.count("full reconciliation done") >= passes + 2, 15, what="two more resyncs")
    assert consul_agent.get(f"/v1/catalog/service/{unique}-web")[0]["ModifyIndex"] == index
    assert daemon.log.count("registered ") == 1, daemon.log
    assert f"registered {unique}-web ({unique}:{unique}-web:80) at 127.0.0.1:{host_port}" in daemon.log


def test_start_stop_kill_remove(registrar, containers, unique):
    daemon = registrar()
    web = containers("web")
    service_id = f"{unique}:{unique}-web:80"
    daemon.wait_for(lambda s: service_id in s, "registered on start")
    container = web.get_wrapped_container()

    container.stop(timeout=1)
    daemon.wait_for(lambda s: not s, "deregistered on stop")
    container.start()
    daemon.wait_for(lambda s: service_id in s, "registered again on start")
    container.kill()
    daemon.wait_for(lambda s: not s, "deregistered on kill")
    container.start()
    daemon.wait_for(lambda s: service_id in s, "registered again")
    container.remove(force=True)
    daemon.wait_for(lambda s: not s, "deregistered on remove")
    assert "deregistered busybox" in daemon.log


def test_two_published_ports_make_two_services(registrar, containers, unique):
    daemon = registrar()
    containers("web", ports=("80/tcp", "443/tcp"), labels={"SERVICE_NAME": "front", "SERVICE_443_NAME": "front-tls"})
    services = daemon.wait_for(lambda s: len(s) == 2, "two services")
    assert sorted((s["ID"], s["Service"]) for s in services.values()) == [
        (f"{unique}:{unique}-web:443", "front-tls"), (f"{unique}:{unique}-web:80", "front-80")]
    assert len({s["Port"] for s in services.values()}) == 2


def test_udp_port_gets_udp_id_and_tag(registrar, containers, unique):
    daemon = registrar()
    containers("dns", command="sleep 600", ports=("53/udp",), labels={"SERVICE_NAME": "dns"})
    service = one(daemon.wait_for(lambda s: len(s) == 1, "udp service"))
    assert service["ID"] == f"{unique}:{unique}-dns:53:udp" and service["Tags"] == ["udp"]


def test_service_ignore_and_per_port_ignore(registrar, containers, unique):
    daemon = registrar()
    containers("ignored", labels={"SERVICE_IGNORE": "true"})
    containers("half", ports=("80/tcp", "443/tcp"), labels={"SERVICE_443_IGNORE": "yes"})
    # Events are handled in order: once "last" is in, the others have been decided.
    containers("last", labels={"SERVICE_NAME": "last"})
    services = daemon.wait_for(lambda s: any(x["Service"] == "last" for x in s.values()), "last container")
    assert sorted(s["ID"] for s in services.values()) == [f"{unique}:{unique}-half:80", f"{unique}:{unique}-last:80"]


def test_explicit_registers_only_named_containers(registrar, containers, unique):
    daemon = registrar("--explicit")
    containers("anonymous")
    containers("named", labels={"SERVICE_NAME": "named"})
    services = daemon.wait_for(lambda s: s, "named container")
    assert [s["Service"] for s in services.values()] == ["named"]


def test_env_vars_work_like_labels_and_labels_win(registrar, containers, unique):
    daemon = registrar()
    containers("env", env={"SERVICE_NAME": "fromenv", "SERVICE_TAGS": "a,b", "SERVICE_VERSION": "7"})
    containers("both", env={"SERVICE_NAME": "fromenv2"}, labels={"SERVICE_NAME": "fromlabel"})
    services = daemon.wait_for(lambda s: len(s) == 2, "both containers")
    by_name = {s["Service"]: s for s in services.values()}
    assert set(by_name) == {"fromenv", "fromlabel"}
    assert by_name["fromenv"]["Tags"] == ["a", "b"] and by_name["fromenv"]["Meta"]["version"] == "7"


def test_meta_and_global_tags(registrar, containers, unique):
    daemon = registrar("--tags", "dc-a,prod")
    containers("web", labels={"SERVICE_VERSION": "2.1", "SERVICE_META_TEAM": "blue", "SERVICE_TAGS": "http"})
    service = one(daemon.wait_for(lambda s: s, "service with meta"))
    assert service["Tags"] == ["http", "dc-a", "prod"]
    meta = service["Meta"]
    # As registrator writes it: SERVICE_META_TEAM is meta meta_team.
    assert (meta["version"], meta["meta_team"], meta["registrar-host"]) == ("2.1", "blue", unique)
    assert len(meta["registrar-hash"]) == 16


def test_internal_registers_container_ip_and_exposed_port(registrar, containers, docker_engine, unique):
    daemon = registrar("--internal")
    web = containers("web")
    service = one(daemon.wait_for(lambda s: s, "internal service"))
    info = docker_engine.client.api.inspect_container(web.get_wrapped_container().id)
    networks = info["NetworkSettings"]["Networks"]
    expected = networks[sorted(networks)[0]]["IPAddress"]
    assert (service["Address"], service["Port"]) == (expected, 80)
    assert not expected.startswith("127.")


def test_host_network_container_registers_exposed_port_on_host_address(registrar, docker_engine, busybox_image,
                                                                        unique):
    daemon = registrar()
    port = free_port()
    # Host mode takes no port bindings, and testcontainers always sends them; an exposed port
    # without binding (what an image EXPOSE gives) needs the low-level API.
    api = docker_engine.client.api
    created = api.create_container(busybox_image, ["sleep", "600"], name=f"{unique}-hostnet", ports=[port],
                                   labels={"SERVICE_NAME": "hostnet"},
                                   host_config=api.create_host_config(network_mode="host"))
    try:
        api.start(created["Id"])
        service = one(daemon.wait_for(lambda s: s, "host-network service"))
        assert (service["Service"], service["Address"], service["Port"]) == ("hostnet", "127.0.0.1", port)
    finally:
        api.remove_container(created["Id"], force=True)


def exit_code(container) -> int:
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    return wrapped.attrs["State"]["ExitCode"]


def test_deregister_on_success_keeps_crashed_and_drops_stopped_or_killed(registrar, containers, unique):
    daemon = registrar("--deregister", "on-success")
    # Each exits when the test says, with the code it is given.
    exit_when_told = "sh -c 'until [ -f /tmp/exit ]; do sleep 0.1; done; exit $(cat /tmp/exit)'"
    crash = containers("crash", command=exit_when_told, labels={"SERVICE_NAME": "crash"})
    clean = containers("clean", command=exit_when_told, labels={"SERVICE_NAME": "clean"})
    # docker stop: SIGTERM, which this shell turns into an exit by that signal (143).
    stopped = containers("stopped", command="sh -c \"trap 'exit 143' TERM; sleep 600 & wait\"",
                         labels={"SERVICE_NAME": "stopped"}, stop_signal="SIGTERM")
    killed = containers("killed", command="sleep 600", labels={"SERVICE_NAME": "killed"})  # docker kill: 137
    daemon.wait_for(lambda s: len(s) == 4, "all registered while running")

    crash.get_wrapped_container().exec_run(["sh", "-c", "echo 3 > /tmp/exit"])
    clean.get_wrapped_container().exec_run(["sh", "-c", "echo 0 > /tmp/exit"])
    stopped.get_wrapped_container().stop(timeout=10)
    killed.get_wrapped_container().kill()
    daemon.wait_for(lambda s: [x["Service"] for x in s.values()] == ["crash"],
                    "exit 0, docker stop and docker kill deregistered (registrator counts a signal as success)",
                    timeout=15)
    assert [exit_code(c) for c in (crash, clean, stopped, killed)] == [3, 0, 143, 137]

    passes = daemon.log.count("full reconciliation done")
    wait_until(lambda: daemon.log.count("full reconciliation done") > passes, 10, what="a resync")
    assert [x["Service"] for x in daemon.services().values()] == ["crash"], "a resync keeps the crashed one"
    crash.get_wrapped_container().remove()  # destroy cleans whatever is left
    daemon.wait_for(lambda s: not s, "crashed container's service gone after remove")
