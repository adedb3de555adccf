"""The registrar as operators run it (``registrar run``), with a ``--hostname`` of the test's own."""

from __future__ import annotations

from pathlib import Path

from .daemon_process import BIN, DaemonProcess
from .waiting import wait_until

REGISTRAR = str(BIN / "registrar")


def owned(agent, hostname: str) -> dict:
    return {sid: s for sid, s in agent.services().items() if (s.get("Meta") or {}).get("registrar-host") == hostname}


class RegistrarProcess(DaemonProcess):
    def __init__(self, agent, hostname: str, args, log_path: Path, env: dict | None = None, own=None):
        self.agent = agent
        self.hostname = hostname
        self.own = own  # OwnContainers: services() counts only these containers' services
        super().__init__([REGISTRAR, "run", "--consul-addr", agent.address, "--hostname", hostname,
                          "--resync", "2", "--log-level", "debug", *args], log_path, env)

    def start(self) -> "RegistrarProcess":
        # Up once it has subscribed to Docker and reconciled fully (or found Consul away and
        # follows Docker meanwhile): a poll of Consul cannot see a pass that had nothing to
        # register, so the log is the honest signal.
        wait_until(lambda: "full reconciliation done" in self.log or "keeping the desired state" in self.log
                   or self.process.poll() is not None, 15, what="registrar start")
        assert self.process.poll() is None, self.log
        return self

    def services(self) -> dict:
        services = owned(self.agent, self.hostname)
        if self.own is None:
            return services
        return {sid: s for sid, s in services.items() if (s.get("Meta") or {}).get("registrar-container") in self.own}

    def wait_for(self, predicate, what: str, timeout: float = 10.0) -> dict:
        """Wait until ``predicate(services)`` holds; returns those services."""
        def check():
            services = self.services()
            return (services,) if predicate(services) else None
        try:
            return wait_until(check, timeout, what=what)[0]
        except TimeoutError:
            raise AssertionError(f"{what}: not within {timeout}s; services={self.services()}\n"
                                 f"--- registrar log ---\n{self.log[-4000:]}") from None
