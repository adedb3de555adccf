"""Debian's pebble ACME test server, with pebble-challtestsrv as its DNS, for one test session.

Debian ships the binaries but not pebble's test certificates: a throwaway
CA signs the listener's certificate, and clients trust that CA
(``ca_bundle``). Every name resolves to ``address`` (challtestsrv's
default answer; no IPv6, which pebble would ask for first), and http-01 is
validated on ``http_port`` there: nginx's port, where every renderer makes
its nginx answer the fleet's challenges. Issued certificates chain to
pebble's own root, fetched from its management port (``root()``).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .ports import free_port
from .waiting import wait_until


def _throwaway_ca(directory: Path, listen: str) -> tuple[Path, Path, Path]:
    """(CA certificate, listener certificate for localhost and ``listen``, its key)."""
    import ipaddress
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address(listen))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Pebble:
    def __init__(self, directory: Path, address: str, http_port: int, validity: int | None = None,
                 listen: str = "127.0.0.1"):
        """``listen``: where pebble answers (a fleet's renderers reach it at their bridge's gateway)."""
        self.directory, self.address, self.http_port, self.validity = Path(directory), address, http_port, validity
        self.listen = listen
        self.port, self.management = free_port(), free_port()
        self.dns, self.dns_management = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        self.ca_bundle: Path | None = None

    @property
    def directory_url(self) -> str:
        return f"https://{self.listen}:{self.port}/dir"

    @property
    def log(self) -> str:
        return (self.directory / "pebble.log").read_text(errors="replace")

    def start(self) -> "Pebble":
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_bundle, certificate, key = _throwaway_ca(self.directory, self.listen)
        config = {"pebble": {"listenAddress": f"{self.listen}:{self.port}",
                             "managementListenAddress": f"{self.listen}:{self.management}",
                             "certificate": str(certificate), "privateKey": str(key),
                             "httpPort": self.http_port, "tlsPort": free_port(), "ocspResponderURL": "",
                             "externalAccountBindingRequired": False}}
        if self.validity:
            config["pebble"]["certificateValidityPeriod"] = self.validity
        (self.directory / "pebble.json").write_text(json.dumps(config))
        self._spawn("challtestsrv", shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv",
                    "-defaultIPv4", self.address, "-defaultIPv6", "", "-dns01", f"127.0.0.1:{self.dns}",
                    "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", f"127.0.0.1:{self.dns_management}")
        self._spawn("pebble", shutil.which("pebble") or "/usr/bin/pebble", "-config",
                    str(self.directory / "pebble.json"), "-dnsserver", f"127.0.0.1:{self.dns}",
                    env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
        wait_until(self._answers, 30, what="pebble's ACME directory answering")
        return self

    def _spawn(self, name: str, *argv: str, env: dict | None = None) -> None:
        log = open(self.directory / f"{name}.log", "ab")
        self.processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                               env={**os.environ, **(env or {})}, start_new_session=True))

    def _answers(self) -> bool:
        try:
            return requests.get(self.directory_url, verify=str(self.ca_bundle), timeout=2).ok
        except requests.RequestException:
            return False

    def root(self) -> str:
        """The root pebble issues under (it makes a new one each start)."""
        return requests.get(f"https://{self.listen}:{self.management}/roots/0", verify=str(self.ca_bundle),
                            timeout=5).text

    def orders(self) -> int:
        """Orders placed so far (pebble logs each request to its new-order endpoint)."""
        return self.log.count("POST /order-plz")

    def issued(self) -> int:
        return self.log.count("Issued certificate serial")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
