"""A Consul dev agent serving HTTPS with ``verify_incoming``: a CA, server and client certificates.

The certificates are made offline by Consul itself (``consul tls ca create``,
``consul tls cert create -server`` / ``-client``), as an operator makes
them. The server certificate names ``server.dc1.consul``, ``localhost`` and
``127.0.0.1``. The agent keeps plain HTTP on its http port, which the tests'
own helpers use to register services; the daemons under test use HTTPS.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from .consul_agent import ConsulAgent
from .ports import free_port


class Certificates:
    def __init__(self, consul: str, directory: Path):
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        run = lambda *args: subprocess.run([consul, "tls", *args], cwd=directory, check=True, capture_output=True)
        run("ca", "create")
        run("cert", "create", "-server", "-dc", "dc1")
        run("cert", "create", "-client", "-dc", "dc1")

    @property
    def ca(self) -> Path:
        return self.dir / "consul-agent-ca.pem"

    @property
    def server(self) -> tuple[Path, Path]:
        return self.dir / "dc1-server-consul-0.pem", self.dir / "dc1-server-consul-0-key.pem"

    @property
    def client(self) -> tuple[Path, Path]:
        return self.dir / "dc1-client-consul-0.pem", self.dir / "dc1-client-consul-0-key.pem"


class TlsConsulAgent(ConsulAgent):
    def __init__(self, binary: str, directory: Path):
        self.certificates = Certificates(binary, directory / "tls")
        self.https_port = free_port()
        cert, key = self.certificates.server
        super().__init__(binary, directory=directory, extra_config={
            "ports": {"https": self.https_port},
            "verify_incoming": True, "verify_incoming_https": True,
            "ca_file": str(self.certificates.ca), "cert_file": str(cert), "key_file": str(key)})

    @property
    def https_address(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def https_works(self) -> bool:
        cert, key = self.certificates.client
        response = requests.get(f"{self.https_address}/v1/status/leader", verify=str(self.certificates.ca),
                                cert=(str(cert), str(key)), timeout=5)
        return response.status_code == 200
