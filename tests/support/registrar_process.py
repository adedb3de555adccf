"""The registrar as operators run it (``registrar run``), with a ``--hostname`` of the test's own."""

from __future__ import annotations

import time
from pathlib import Path

from .daemon_process import BIN, DaemonProcess
from .waiting import wait_until

REGISTRAR = str(BIN / "registrar")


def owned(agent, hostname: str) -> dict:
    return {sid: s for sid, s in agent.services().items() if (s.get("Meta") or {}).get("registrar-host") == hostname}


class RegistrarProcess(DaemonProcess):
    def __init__(self, agent, hostname: str, args, log_path: Path, env: dict | None = None):
        self.agent = agent
        self.hostname = hostname
        super().__init__([REGISTRAR, "run", "--consul-addr", agent.address, "--hostname", hostname,
                          "--resync", "2", "--log-level", "debug", *args], log_path, env)

    def start(self) -> "RegistrarProcess":
        # Up once it has subscribed to Docker and reconciled: the first "started" line is
        # followed by the first full pass, which a poll of Consul cannot see when it has
        # nothing to register; waiting for the log is the honest signal.
        wait_until(lambda: "started for host" in self.log or self.process.poll() is not None, 15,
                   what="registrar start")
        assert self.process.poll() is None, self.log
        time.sleep(0.3)
        return self

    def services(self) -> dict:
        return owned(self.agent, self.hostname)

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
