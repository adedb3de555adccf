"""The fleet's certificates on the reference layout: one ACME order for a host, its certificate served by both
nginx nodes, the issuer's renderer killed and the other renewing, an imported certificate on both.

pebble (Debian's ACME test server) resolves every name to node2, so the CA
validates on node2's nginx while node1's renderer, elected first, orders:
the challenge crosses the fleet through Consul KV.
"""

from __future__ import annotations

import base64
import datetime
import os
import socket
import ssl
import subprocess
import threading

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.support import require
from tests.support.daemon_process import BIN
from tests.support.fleet import RENDERER_STATUS
from tests.support.pebble import Pebble
from tests.support.waiting import wait_until

DOMAIN = "fleet.test"
VALIDITY = 50  # seconds: renewed when a third is left, 17 s before it expires (a takeover takes up to ~30 s)
PREFIX = "consul-nginx-sync"


def log_of(node) -> str:
    return (node.directory / "renderer.log").read_text(errors="replace")


def served(node, host: str, root: str) -> int:
    """The serial of the certificate ``node``'s nginx serves for ``host``, verified up to pebble's root."""
    context = ssl.create_default_context(cadata=root)
    with socket.create_connection((node.address, 443), timeout=3) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def serial_or_none(node, host: str, root: str) -> int | None:
    try:
        return served(node, host, root)
    except (OSError, ssl.SSLError):
        return None


@pytest.fixture(scope="module")
def acme(fleet, tmp_path_factory):
    """pebble, and both renderers restarted as ACME candidates (node1's first: the issuer); put back after."""
    require.binary("pebble")
    require.binary("pebble-challtestsrv")
    node1, node2 = fleet.nginx_nodes
    directory = tmp_path_factory.mktemp("acme")
    pebble = Pebble(directory / "pebble", node2.address, 80, validity=VALIDITY, listen=fleet.gateway).start()
    key = directory / "fleet.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode())
    args = ("--acme-directory", pebble.directory_url, "--acme-ca-bundle", str(pebble.ca_bundle),
            "--cert-encryption-key", str(key))
    try:
        fleet.restart_renderer(node1, *args)  # node1 first: its renderer is the issuer
        wait_until(lambda: "holding the fleet's ACME lock" in log_of(node1), 30, what="node1 holding the lock")
        fleet.restart_renderer(node2, *args)
        yield pebble, args, key
    finally:
        requests.delete(f"{node1.consul_url}/v1/kv/{PREFIX}/acme/", params={"recurse": "true"}, timeout=10)
        for node in fleet.nginx_nodes:
            fleet.restart_renderer(node)
        pebble.stop()


def test_a_host_is_ordered_once_served_by_both_nodes_and_renewed_by_the_next_issuer(fleet, acme, unique):
    pebble, args, _ = acme
    node1, node2, node3 = fleet.nodes
    host, port = f"{unique}acme.{DOMAIN}", fleet.port()
    root = pebble.root()
    fleet.web(node3, f"{unique}-acme", f"{unique}acme", port,
              labels={"SERVICE_TLS": "terminate", "SERVICE_TLS_ACME": "true"})
    try:
        wait_until(lambda: all(serial_or_none(node, host, root) for node in (node1, node2)), 60,
                   what="both nginx nodes serving a certificate from pebble")
        first = served(node1, host, root)
        assert served(node2, host, root) == first and pebble.orders() == 1, "exactly one order, for both"
        assert sum(log.count(f"ordering a certificate for {host}") for log in map(log_of, (node1, node2))) == 1
        sealed = requests.get(f"{node1.consul_url}/v1/kv/{PREFIX}/certs/{host}/key", params={"raw": "true"},
                              timeout=5).text
        assert sealed.startswith("sealed:aes-256-gcm:") and "PRIVATE KEY" not in sealed
        assert oct(os.stat(node2.prefix / "certs" / f"{host}.key").st_mode & 0o777) == "0o600"
        leaf = x509.load_pem_x509_certificate((node2.prefix / "certs" / f"{host}.crt").read_bytes())

        def expiry() -> list[float]:  # once the renderer has confirmed what nginx already serves
            metrics = requests.get(f"http://{node2.address}:{RENDERER_STATUS}/metrics", timeout=5).text
            return [sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
                    if sample.name == "renderer_certificate_expiry_timestamp_seconds"
                    and sample.labels == {"host": host, "source": "acme"}]
        assert wait_until(expiry, 10, what="the certificate's expiry in node2's metrics") == [
            leaf.not_valid_after_utc.timestamp()]
        page = requests.get(f"http://{node2.address}:{RENDERER_STATUS}/", timeout=5).text
        assert f'<td class="mono">{host}</td><td>acme</td>' in page

        # The issuer's renderer dies: node2's takes the lock when its session runs out, and renews in time.
        fleet.kill_renderer(node1)
        wait_until(lambda: "holding the fleet's ACME lock" in log_of(node2), 40, what="node2 taking the lock")
        failures, stop = [], threading.Event()

        def clients():  # HTTPS through node2 all along the renewal: not one may fail
            while not stop.is_set():
                try:
                    context = ssl.create_default_context(cadata=root)
                    with socket.create_connection((node2.address, 443), timeout=3) as raw:
                        with context.wrap_socket(raw, server_hostname=host) as tls:
                            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                            if not tls.recv(64).startswith(b"HTTP/1.1 200"):
                                failures.append("not 200")
                except (OSError, ssl.SSLError) as error:
                    failures.append(repr(error))
        thread = threading.Thread(target=clients, daemon=True)
        thread.start()
        try:
            wait_until(lambda: served(node2, host, root) != first, VALIDITY, what="the renewed certificate on node2")
        finally:
            stop.set()
            thread.join(10)
        assert not failures, failures[:3]
        assert pebble.orders() == 2 and f"ordering a certificate for {host}" in log_of(node2)
        renewed = served(node2, host, root)
        fleet.restart_renderer(node1, *args)  # back: it catches up from KV
        wait_until(lambda: served(node1, host, root) == renewed, 30, what="node1 serving the renewed certificate")
    finally:
        fleet.remove(node3, f"{unique}-acme")
        requests.delete(f"{node1.consul_url}/v1/kv/{PREFIX}/certs/{host}/", params={"recurse": "true"}, timeout=10)


def self_signed(host: str, directory) -> tuple[str, str, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                   .sign(key, hashes.SHA256()))
    crt, pem_key = directory / f"{host}.pem", directory / f"{host}-key.pem"
    crt.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return str(crt), str(pem_key), certificate.serial_number


def test_an_imported_certificate_reaches_both_nodes(fleet, acme, unique, tmp_path):
    _, _, key = acme
    node1, node2, node3 = fleet.nodes
    host, port = f"{unique}imp.{DOMAIN}", fleet.port()
    crt, pem_key, serial = self_signed(host, tmp_path)
    imported = subprocess.run([str(BIN / "renderer"), "certs", "import", host, crt, pem_key,
                               "--consul-addr", node1.consul_url, "--cert-encryption-key", str(key)],
                              capture_output=True, text=True, timeout=30)
    assert imported.returncode == 0 and "(key sealed)" in imported.stdout, imported.stderr
    fleet.web(node3, f"{unique}-imp", f"{unique}imp", port, labels={"SERVICE_TLS": "terminate"})
    try:
        root = open(crt).read()
        wait_until(lambda: all(serial_or_none(node, host, root) == serial for node in (node1, node2)), 30,
                   what="both nginx nodes serving the imported certificate")
        listed = subprocess.run([str(BIN / "renderer"), "certs", "--consul-addr", node1.consul_url,
                                 "--cert-encryption-key", str(key)], capture_output=True, text=True, timeout=30)
        assert f"{host}  import  expires" in listed.stdout
    finally:
        fleet.remove(node3, f"{unique}-imp")
        requests.delete(f"{node1.consul_url}/v1/kv/{PREFIX}/certs/{host}/", params={"recurse": "true"}, timeout=10)
