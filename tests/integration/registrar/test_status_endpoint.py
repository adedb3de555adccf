"""`registrar run --status-address`: metrics after known events, /health, /ready, its page in a real browser."""

from __future__ import annotations

import json
import socket
import subprocess

import requests

from tests.support.metrics import scrape
from tests.support.metrics import value as sample
from tests.support.ports import free_port
from tests.support.registrars import REGISTRAR
from tests.support.waiting import wait_until


def test_metrics_ready_and_the_page(registrar, containers, browser, unique):
    port = free_port()
    daemon = registrar("--status-address", f"127.0.0.1:{port}")
    daemon.wait_for_log(f"status page on http://127.0.0.1:{port}/")
    before = scrape(port)
    containers("web", labels={"SERVICE_NAME": "web", "SERVICE_TAGS": "http,a#b", "SERVICE_CONSUL-X": "y"})
    service = next(iter(daemon.wait_for(lambda s: s, "registered")))

    def counted():
        samples = scrape(port)
        return samples if value(samples, "registrar_registrations_total", outcome="ok") > value(
            before, "registrar_registrations_total", outcome="ok") else None
    samples = wait_until(counted, 10, what="the registration counted")
    assert value(samples, "registrar_docker_events_total", action="start") >= 1
    assert value(samples, "registrar_services_owned") >= 1
    assert value(samples, "registrar_consul_reachable") == 1 and value(samples, "registrar_docker_reachable") == 1
    assert value(samples, "registrar_reconcile_duration_seconds_count") >= 1
    assert value(samples, "registrar_ready") == 1

    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    ready = requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)
    assert ready.status_code == 200 and ready.text == "ready: Consul holds what Docker runs\n"

    page = browser.open(f"http://127.0.0.1:{port}/")
    assert page.title == f"registrar on {unique}: ready"
    row = next(text for text in browser.rows("#containers tr.container") if text.startswith(f"{unique}-web"))
    assert service in row and "in Consul" in row
    assert "label SERVICE_CONSUL-X='y' not used as meta" in row, "the skipped key, with its reason"
    assert "tag 'a#b'" in row and "the renderer will not show it to nginx" in row
    browser.screenshot("registrar-status-page.png")


def test_json_logs_name_the_service_and_container(run_sync, containers, unique):
    containers("web", labels={"SERVICE_NAME": "jsonweb"})
    result = run_sync("--log-format", "json")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    registered = next(e for e in entries if e["message"].startswith("registered jsonweb "))
    assert registered["service"] == "jsonweb" and registered["container"] == f"{unique}-web"
    assert registered["service_id"] == f"{unique}:{unique}-web:80" and registered["program"] == "registrar"


def test_a_status_address_in_use_is_one_line_and_exit_2(consul_agent, unique):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([REGISTRAR, "run", "--consul-addr", consul_agent.address, "--hostname", unique,
                                 "--status-address", f"127.0.0.1:{port}"], capture_output=True, text=True,
                                timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"registrar: --status-address 127.0.0.1:{port}: cannot listen (the port is in use)")


def value(samples: dict, name: str, **labels) -> float:
    """A counter not yet moved reads 0 here."""
    return sample(samples, name, **labels) or 0.0
