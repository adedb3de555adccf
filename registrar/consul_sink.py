"""The Consul edge: this host's services in the local agent.

Raw agent endpoints over agentkit's client session (token in the header
only), because python-consul2's ``agent.service.register`` cannot send
several checks with IDs of their own or ``replace-existing-checks``.

Failures: transport errors raise :class:`ConsulUnavailable` (the whole pass
is retried later); 403 raises :class:`ConsulDenied` naming the permission
the token lacks; any other refusal of one definition raises
:class:`ServiceRefused`, which costs that service only.
"""

from __future__ import annotations

import logging
import socket
import time
from urllib.parse import quote

import tenacity

from agentkit.consul import Consul, translate_errors

from .errors import ConsulDenied, ConsulUnavailable, ServiceRefused
from .model import Service
from .reconcile import Actual, owned

log = logging.getLogger("registrar")


class ConsulSink:
    def __init__(self, client: Consul, hostname: str):
        self.client = client
        self.hostname = hostname
        self.address = client.address

    def _request(self, method: str, path: str, *, json=None, params=None, what: str, permission: str):
        with translate_errors(self.address):
            response = self.client.send(method, path, json=json, params=params)
        if response.status_code == 403:
            detail = _first_line(response.text)
            if "acl not found" in detail.lower():
                raise ConsulDenied(f"Consul at {self.address} denied {what}: the token is unknown to Consul "
                                   "(ACL not found)")
            raise ConsulDenied(f"Consul at {self.address} denied {what}: the token lacks {permission}")
        if response.status_code >= 500 and not response.text.strip():
            raise ConsulUnavailable(f"Consul at {self.address} failed {what}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise ServiceRefused(f"Consul at {self.address} refused {what}: "
                                  f"{_first_line(response.text) or 'HTTP %d' % response.status_code}")
        return response

    def agent_services(self) -> dict:
        response = self._request("GET", "/v1/agent/services", what="listing services",
                                 permission="service:read")
        try:
            return response.json()
        except ValueError:
            raise ConsulUnavailable(f"Consul at {self.address} answered /v1/agent/services with invalid JSON") \
                from None

    def owned_services(self) -> dict[str, Actual]:
        return owned(self.agent_services(), self.hostname)

    def register(self, service: Service) -> None:
        self._request("PUT", "/v1/agent/service/register", json=service.payload(),
                      params={"replace-existing-checks": "true"},
                      what=f"registering {service.name} ({service.id})",
                      permission=f'service:write on "{service.name}"')

    def deregister(self, service_id: str, name: str = "") -> None:
        self._request("PUT", f"/v1/agent/service/deregister/{quote(service_id, safe='')}",
                      what=f"deregistering {name or service_id} ({service_id})",
                      permission=f'service:write on "{name or service_id}"')

    def update_ttl(self, check_id: str, status: str, output: str, service_name: str = "") -> None:
        self._request("PUT", f"/v1/agent/check/update/{quote(check_id, safe='')}",
                      json={"Status": status, "Output": output},
                      what=f"updating check {check_id}",
                      permission=f'service:write on "{service_name or check_id}"')

    def host_address(self) -> str:
        """The agent's own address: what other nodes reach this host at."""
        try:
            response = self._request("GET", "/v1/agent/self", what="reading the agent's address",
                                     permission="agent:read")
            address = (response.json().get("Member") or {}).get("Addr")
            if address:
                return address
        except (ConsulDenied, ServiceRefused, ValueError):
            pass
        return fallback_host_address()

    def ping(self) -> None:
        self._request("GET", "/v1/status/leader", what="a status request", permission="(none)")


def fallback_host_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _first_line(text: str) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:200] if lines else ""


def wait_for_consul(sink: ConsulSink, attempts: int, interval: float, sleep=time.sleep) -> dict:
    """Reach Consul at start-up: ``attempts`` retries ``interval`` seconds apart (-1: forever)."""
    def before_sleep(state: tenacity.RetryCallState) -> None:
        log.warning("%s; retrying in %.1fs (attempt %d)", state.outcome.exception(), interval,
                    state.attempt_number + 1)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(ConsulUnavailable),
        stop=tenacity.stop_never if attempts < 0 else tenacity.stop_after_attempt(attempts + 1),
        wait=tenacity.wait_fixed(interval), sleep=sleep, reraise=True, before_sleep=before_sleep)
    return retrying(sink.agent_services)
