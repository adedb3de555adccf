"""What a registrator user sees after switching: same check IDs, meta, tags, exit rules (real Docker, Consul).

Each test is one surprise a migrating user hit, stated as registrator behaves.
"""

from __future__ import annotations

import subprocess

import requests

from tests.support.registrars import MASTER_TOKEN
from tests.integration.registrar.test_checks import wait_check
from tests.support.daemon_process import BIN
from tests.support.route_backends import GrpcBackend
from tests.support.waiting import wait_until


def one(services: dict) -> dict:
    assert len(services) == 1, services
    return next(iter(services.values()))


def test_an_app_heartbeats_its_ttl_check_at_registrators_check_id(registrar, containers, consul_agent, unique):
    daemon = registrar()
    containers("beat", labels={"SERVICE_NAME": f"{unique}-beat", "SERVICE_CHECK_TTL": "30s"})
    service = one(daemon.wait_for(lambda s: s, "the ttl service"))
    check_id = f"service:{service['ID']}"
    wait_check(consul_agent, check_id, "critical")
    # What the app does, as it did under registrator.
    response = requests.put(f"{consul_agent.url}/v1/agent/check/pass/{check_id}", timeout=5)
    assert response.status_code == 200, response.text
    wait_check(consul_agent, check_id, "passing")
    passing = consul_agent.get(f"/v1/health/service/{unique}-beat", passing="1")
    assert [entry["Service"]["ID"] for entry in passing] == [service["ID"]]


def test_http_method_and_a_second_check_kind(registrar, containers, consul_agent, unique):
    daemon = registrar()
    containers("web", labels={"SERVICE_NAME": "web", "SERVICE_CHECK_HTTP": "/index.html",
                              "SERVICE_CHECK_HTTP_METHOD": "HEAD", "SERVICE_CHECK_TCP": "true",
                              "SERVICE_CHECK_INTERVAL": "1s"})
    service = one(daemon.wait_for(lambda s: s, "the service"))
    http = wait_check(consul_agent, f"service:{service['ID']}", "passing")
    assert http["Type"] == "http" and http["Output"].startswith("HTTP HEAD http://127.0.0.1:")
    assert wait_check(consul_agent, f"service:{service['ID']}:tcp", "passing")["Type"] == "tcp"


def test_a_grpc_check_asks_the_standard_health_service(registrar, docker_engine, busybox_image, consul_agent,
                                                      own_containers, unique):
    backend = GrpcBackend("shop.Cart")  # a gRPC health server on the host
    api = docker_engine.client.api
    made = []
    try:
        daemon = registrar()
        # Host networking: the container "is" the server on the host's port, which the check dials.
        for suffix, value in (("grpc", "true"), ("named", "shop.Cart"), ("unknown", "shop.Nothing")):
            created = api.create_container(
                busybox_image, ["sleep", "600"], name=f"{unique}-{suffix}", ports=[backend.port],
                labels={"SERVICE_NAME": suffix, "SERVICE_CHECK_GRPC": value, "SERVICE_CHECK_INTERVAL": "1s"},
                host_config=api.create_host_config(network_mode="host"))
            made.append(created["Id"])
            own_containers.add(created["Id"])
            api.start(created["Id"])
        services = daemon.wait_for(lambda s: len(s) == 3, "three services")
        ids = {s["Service"]: s["ID"] for s in services.values()}
        assert wait_check(consul_agent, f"service:{ids['grpc']}", "passing")["Type"] == "grpc"
        wait_check(consul_agent, f"service:{ids['named']}", "passing")
        wait_check(consul_agent, f"service:{ids['unknown']}", "critical")
    finally:
        for container_id in made:
            api.remove_container(container_id, force=True)
        backend.close()


def test_a_cmd_check_runs_inside_the_container(registrar, containers, acl_agent, unique):
    # A Consul Docker check: the agent needs enable_script_checks (acl_agent has it) and Docker's socket.
    daemon = registrar("--consul-token", MASTER_TOKEN, agent=acl_agent)
    containers("served", labels={"SERVICE_NAME": "served", "SERVICE_CHECK_CMD": "test -f /www/index.html",
                                 "SERVICE_CHECK_INTERVAL": "1s"})
    containers("missing", labels={"SERVICE_NAME": "missing", "SERVICE_CHECK_CMD": "test -f /www/nope.html",
                                  "SERVICE_CHECK_INTERVAL": "1s"})
    services = daemon.wait_for(lambda s: len(s) == 2, "both services")
    by_name = {s["Service"]: s["ID"] for s in services.values()}
    assert wait_check(acl_agent, f"service:{by_name['served']}", "passing")["Type"] == "docker"
    wait_check(acl_agent, f"service:{by_name['missing']}", "warning")  # Consul's rule: exit 1 is a warning


def test_a_cmd_check_on_an_agent_without_script_checks_says_what_is_missing(registrar, containers, unique):
    daemon = registrar()
    containers("cmd", labels={"SERVICE_NAME": "cmd", "SERVICE_CHECK_CMD": "true"})
    wait_until(lambda: "Scripts are disabled" in daemon.log, 10, what="the refusal")
    line = next(line for line in daemon.log.splitlines() if "Scripts are disabled" in line)
    assert f"registering cmd ({unique}:{unique}-cmd:80)" in line and "enable_script_checks" in line
    assert daemon.services() == {}


def test_odd_values_register_as_with_registrator_and_say_what_nginx_will_not_see(
        registrar, containers, docker_engine, busybox_image, unique):
    # An image whose base name has an underscore, as registrator users have.
    docker_engine.client.images.get(busybox_image).tag(f"nginx-sync-test/{unique}_app", "1")
    try:
        daemon = registrar()
        containers("described", labels={"SERVICE_NAME": "described", "SERVICE_DESCRIPTION": "my app"})
        containers("traefik", labels={"SERVICE_NAME": "traefik",
                                      "SERVICE_TAGS": "traefik.http.routers.x.rule=Host(`a.example`),http"})
        containers("under", labels={"SERVICE_NAME": "my_svc"})
        containers("dotted", labels={"SERVICE_NAME": "api.v2"})
        containers("image", image=f"nginx-sync-test/{unique}_app:1")
        services = daemon.wait_for(lambda s: len(s) == 5, "every container registered")
    finally:
        docker_engine.client.images.remove(f"nginx-sync-test/{unique}_app:1")
    by_name = {s["Service"]: s for s in services.values()}
    assert sorted(by_name) == sorted(["described", "traefik", "my_svc", "api.v2", f"{unique}_app"])
    assert by_name["described"]["Meta"]["description"] == "my app"
    assert by_name["traefik"]["Tags"] == ["traefik.http.routers.x.rule=Host(`a.example`)", "http"]
    log = daemon.log
    assert f"container {unique}-described" in log and "label SERVICE_DESCRIPTION='my app'" in log
    assert "the renderer will not show it to nginx" in log
    assert "Consul's DNS interface will not resolve my_svc.service.consul" in log
    assert "Consul's DNS interface will not resolve api.v2.service.consul" in log


def test_tags_meta_and_forced_tags_as_registrator_writes_them(registrar, containers, unique):
    daemon = registrar("--tags", "{{.Config.Hostname}},fleet")
    web = containers("web", labels={"SERVICE_NAME": "web", "SERVICE_TAGS": r"a\,b,c", "SERVICE_META_TEAM": "blue",
                                    "SERVICE_CHECK_TCP": "true", "SERVICE_VERSION": "2"})
    service = one(daemon.wait_for(lambda s: s, "the service"))
    hostname = web.get_wrapped_container().attrs["Config"]["Hostname"]
    assert service["Tags"] == ["a,b", "c", hostname, "fleet"]
    meta = {k: v for k, v in service["Meta"].items() if not k.startswith("registrar-")}
    assert meta == {"meta_team": "blue", "check_tcp": "true", "version": "2"}


def test_a_tags_template_that_does_not_parse_stops_the_registrar_with_one_line(consul_agent, unique):
    result = subprocess.run([str(BIN / "registrar"), "sync", "--consul-addr", consul_agent.address, "--hostname",
                             unique, "--tags", "{{ httpGet \"http://metadata/\" }}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "registrar: --tags '{{ httpGet \"http://metadata/\" }}': httpGet at character 4 is not supported: it "
        "makes an HTTP request, and the registrar makes no request a template asks for"]


def test_what_the_registrar_warns_about_the_renderer_withholds(registrar, containers, consul_agent, unique,
                                                               tmp_path):
    # One rule (agentkit.nginx_safe) for both daemons: registered, warned about on the Docker host,
    # withheld from templates on the nginx node, the instance kept.
    daemon = registrar()
    containers("web", labels={"SERVICE_NAME": f"{unique}-web", "SERVICE_TAGS": "http,a#b",
                              "SERVICE_DESCRIPTION": "my app"})
    service = one(daemon.wait_for(lambda s: s, "the service"))
    assert service["Tags"] == ["http", "a#b"] and service["Meta"]["description"] == "my app"
    assert "tag 'a#b'" in daemon.log
    template = tmp_path / "seen.j2"
    template.write_text(f'{{% for i in service("{unique}-web") %}}{{{{ i.tags | join(",") }}}} '
                        f'{{{{ i.meta.description | default("-") }}}}{{% endfor %}}\n')
    result = subprocess.run([str(BIN / "renderer"), "render", str(template), "--consul-addr", consul_agent.address],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "http -"
    assert f"service instance '{service['ID']}'" in result.stderr and "tag 'a#b'" in result.stderr
    assert "(withheld from templates; the instance is kept)" in result.stderr
