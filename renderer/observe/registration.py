"""The renderer in the catalog: each one registers itself in its node's Consul agent.

Service ``consul-nginx-sync-renderer``, one instance per renderer: its
status address as address and port, meta saying its version, and an HTTP
check on its ``/ready``. So Prometheus' ``consul_sd_configs`` finds every
renderer of the fleet, and every node can count the nginx nodes that are
live (passing) from the catalog it already reads.

Level-triggered like the rest: every ``CHECK_EVERY`` seconds the agent is
asked whether it still holds the registration, and it is made again when
not (an agent restarted empty, a registration lost). It is removed on a
clean stop. Only with ``--status-address`` (the check needs ``/ready``) and
unless ``register = false``.
"""

from __future__ import annotations

import ipaddress
import logging

from agentkit.backoff import Retry, consul_agent_backoff
from agentkit.consul import Consul, translate_errors
from agentkit.errors import AgentError
from renderer.routes.model import RENDERER_SERVICE

log = logging.getLogger("renderer")

SERVICE = RENDERER_SERVICE
CHECK_EVERY = 10.0  # seconds between asking the agent whether it still holds the registration
CHECK_INTERVAL = "5s"


class Registration:
    def __init__(self, host: str, port: int, version: str, clock):
        self.clock = clock
        unspecified = _unspecified(host)
        # Bound to every address: Consul gives the service the node's address; the local agent checks
        # on loopback.
        self.address = "" if unspecified else host
        check_host = "127.0.0.1" if unspecified else (f"[{host}]" if ":" in host else host)
        self.id = f"{SERVICE}:{host}:{port}"
        self.definition = {
            "ID": self.id, "Name": SERVICE, "Address": self.address, "Port": port,
            "Meta": {"version": version},
            "Check": {"CheckID": f"service:{self.id}", "Name": "renderer /ready",
                      "HTTP": f"http://{check_host}:{port}/ready", "Interval": CHECK_INTERVAL, "Timeout": "2s",
                      # A renderer killed never says goodbye: critical, it no longer counts among the live
                      # nodes sharing a rate; gone for good (a replaced host), its entry goes after a while.
                      "DeregisterCriticalServiceAfter": "30m"},
        }
        self.check_at = 0.0
        self.retry = Retry(consul_agent_backoff())
        self.registered = False

    def due(self, now: float) -> bool:
        return self.retry.due(now) if self.retry.pending else now >= self.check_at

    def due_in(self, now: float) -> float:
        return max(0.0, (self.retry.at if self.retry.pending else self.check_at) - now)

    def ensure(self, client: Consul) -> None:
        """Make the agent hold this registration (ask first: registering again resets the check)."""
        self.check_at = self.clock() + CHECK_EVERY
        try:
            with translate_errors(client.address):
                held = client.send("GET", f"/v1/agent/service/{self.id}", timeout=5).status_code == 200
                if not held:
                    response = client.send("PUT", "/v1/agent/service/register", json=self.definition, timeout=5)
            if not held and response.status_code == 403:
                raise AgentError(f"Consul at {client.address} denied it: the token lacks service:write on "
                                 f"\"{SERVICE}\"")
            if not held and response.status_code != 200:
                raise AgentError(f"Consul at {client.address} answered {response.status_code}: "
                                 f"{response.text.strip()[:200]}")
        except AgentError as error:
            delay = self.retry.failed(self.clock())
            if self.retry.backoff.worth_saying:
                log.warning("cannot register this renderer in Consul (%s); retrying in %.0fs", error, delay)
            return
        self.retry.succeeded()
        if not held:
            log.info("registered in Consul as %s (id %s, checked on /ready)%s", SERVICE, self.id,
                     " again: the agent no longer held it" if self.registered else "")
        self.registered = True

    def remove(self, client: Consul) -> None:
        """On a clean stop; best effort (the check turns critical anyway once /ready no longer answers)."""
        if not self.registered:
            return
        try:
            with translate_errors(client.address):
                client.send("PUT", f"/v1/agent/service/deregister/{self.id}", timeout=2)
            log.info("deregistered %s from Consul", self.id)
        except Exception as error:  # noqa: BLE001 - stopping goes on
            log.warning("could not deregister %s from Consul (%s)", self.id, error)


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return not host
