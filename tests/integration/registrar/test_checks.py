"""Health checks from labels, and Docker HEALTHCHECK mirrored into Consul."""

from __future__ import annotations

from tests.support.registrars import MASTER_TOKEN
from tests.support.waiting import wait_until


def checks_of(agent, service_id: str) -> dict:
    return {c["CheckID"]: c for c in agent.get("/v1/agent/checks").values() if c["ServiceID"] == service_id}


def wait_check(agent, check_id: str, status: str, timeout: float = 15.0) -> dict:
    def check():
        current = {c["CheckID"]: c for c in agent.get("/v1/agent/checks").values()}.get(check_id)
        return current if current and current["Status"] == status else None
    try:
        return wait_until(check, timeout, what=f"{check_id} {status}")
    except TimeoutError:
        current = {c["CheckID"]: c for c in agent.get("/v1/agent/checks").values()}.get(check_id)
        raise AssertionError(f"{check_id} never became {status}: {current}") from None


def test_http_and_tcp_checks_target_the_registered_address_and_port(registrar, containers, consul_agent, unique):
    daemon = registrar()
    # Port 80 answers (busybox httpd), port 81 has nobody listening behind Docker's proxy
    # (which accepts TCP connections itself, so only an HTTP check can tell).
    web = containers("web", ports=("80/tcp", "81/tcp"),
                     labels={"SERVICE_NAME": "web", "SERVICE_80_CHECK_TCP": "true", "SERVICE_CHECK_HTTP": "/index.html",
                             "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "1s"})
    daemon.wait_for(lambda s: len(s) == 2, "two services")
    base = f"{unique}:{unique}-web"
    # The first kind set (registrator's precedence: http before tcp) has registrator's ID.
    http = wait_check(consul_agent, f"service:{base}:80", "passing")
    assert http["Type"] == "http"
    assert f"http://127.0.0.1:{web.get_exposed_port(80)}/index.html" in http["Output"]
    assert wait_check(consul_agent, f"service:{base}:80:tcp", "passing")["Type"] == "tcp"
    wait_check(consul_agent, f"service:{base}:81", "critical")
    assert list(checks_of(consul_agent, f"{base}:81")) == [f"service:{base}:81"]


def test_ttl_check_with_initial_status(registrar, containers, consul_agent, unique):
    daemon = registrar()
    containers("ttl", labels={"SERVICE_CHECK_TTL": "30s", "SERVICE_CHECK_INITIAL_STATUS": "warning"})
    daemon.wait_for(lambda s: s, "ttl service")
    check = checks_of(consul_agent, f"{unique}:{unique}-ttl:80")[f"service:{unique}:{unique}-ttl:80"]
    assert (check["Type"], check["Status"]) == ("ttl", "warning")


def test_false_check_value_adds_no_check(registrar, containers, consul_agent, unique):
    daemon = registrar()
    containers("nocheck", labels={"SERVICE_CHECK_TCP": "false"})
    daemon.wait_for(lambda s: s, "service")
    assert checks_of(consul_agent, f"{unique}:{unique}-nocheck:80") == {}


def test_script_checks_on_an_agent_that_enables_them(registrar, containers, acl_agent, unique):
    # The shared agent refuses script checks (Consul's default); acl_agent enables them.
    daemon = registrar("--consul-token", MASTER_TOKEN, agent=acl_agent)
    containers("ok", labels={"SERVICE_NAME": "ok", "SERVICE_CHECK_SCRIPT": "test $SERVICE_PORT -gt 0",
                             "SERVICE_CHECK_INTERVAL": "1s"})
    containers("bad", labels={"SERVICE_NAME": "bad", "SERVICE_CHECK_SCRIPT": "exit 2",
                              "SERVICE_CHECK_INTERVAL": "1s"})
    daemon.wait_for(lambda s: len(s) == 2, "both services")
    assert wait_check(acl_agent, f"service:{unique}:{unique}-ok:80", "passing")["Type"] == "script"
    wait_check(acl_agent, f"service:{unique}:{unique}-bad:80", "critical")
    assert MASTER_TOKEN not in daemon.log


def test_script_check_refused_by_the_agent_costs_only_that_service(registrar, containers, unique):
    daemon = registrar()
    containers("script", labels={"SERVICE_NAME": "script", "SERVICE_CHECK_SCRIPT": "true"})
    containers("plain", labels={"SERVICE_NAME": "plain"})
    services = daemon.wait_for(lambda s: s, "the plain service")
    assert [s["Service"] for s in services.values()] == ["plain"]
    # One line naming the culprit and what the agent lacks.
    wait_until(lambda: "Scripts are disabled" in daemon.log, 5, what="refusal logged")
    line = next(line for line in daemon.log.splitlines() if "Scripts are disabled" in line)
    assert f"registering script ({unique}:{unique}-script:80)" in line and "enable_script_checks" in line
    assert daemon.alive()


def test_docker_healthcheck_is_mirrored_as_a_ttl_check(registrar, containers, consul_agent, unique):
    daemon = registrar()
    web = containers("health", labels={"SERVICE_NAME": "health"},
                     healthcheck={"test": ["CMD", "cat", "/tmp/healthy"], "interval": 300_000_000,
                                  "timeout": 1_000_000_000, "retries": 1})
    daemon.wait_for(lambda s: s, "service")
    check_id = f"service:{unique}:{unique}-health:80:docker-health"
    assert wait_check(consul_agent, check_id, "critical")["Type"] == "ttl"  # starting or unhealthy
    container = web.get_wrapped_container()
    container.exec_run(["sh", "-c", "echo ok > /tmp/healthy"])
    wait_check(consul_agent, check_id, "passing", timeout=10)
    container.exec_run(["sh", "-c", "echo > /tmp/x; cat /tmp/x > /tmp/healthy; mv /tmp/healthy /tmp/gone"])
    wait_check(consul_agent, check_id, "critical", timeout=10)
    assert daemon.log.count("registered health") == 1  # health changes are TTL updates, not re-registrations
