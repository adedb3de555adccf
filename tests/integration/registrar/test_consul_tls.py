"""The registrar against a Consul agent serving HTTPS with verify_incoming, set up from Consul's variables."""

from __future__ import annotations

import os
import subprocess

from tests.support.registrars import REGISTRAR, owned


def tls_environment(agent) -> dict:
    cert, key = agent.certificates.client
    return {**os.environ, "CONSUL_HTTP_ADDR": f"127.0.0.1:{agent.https_port}", "CONSUL_HTTP_SSL": "true",
            "CONSUL_CACERT": str(agent.certificates.ca), "CONSUL_CLIENT_CERT": str(cert),
            "CONSUL_CLIENT_KEY": str(key), "CONSUL_TLS_SERVER_NAME": "server.dc1.consul"}


def test_the_registrar_registers_over_https_with_a_client_certificate(tls_consul, containers, unique):
    containers("web", labels={"SERVICE_NAME": "secure-web"})
    try:
        result = subprocess.run([REGISTRAR, "sync", "--hostname", unique, "--ip", "127.0.0.1"],
                                capture_output=True, text=True, timeout=60, env=tls_environment(tls_consul))
        assert result.returncode == 0, result.stderr
        assert [s["Service"] for s in owned(tls_consul, unique).values()] == ["secure-web"]
    finally:
        for service_id in owned(tls_consul, unique):
            tls_consul.deregister(service_id)


def test_without_its_client_certificate_the_registrar_says_what_is_missing(tls_consul, docker_engine, unique):
    environment = tls_environment(tls_consul)
    del environment["CONSUL_CLIENT_CERT"], environment["CONSUL_CLIENT_KEY"]
    result = subprocess.run([REGISTRAR, "sync", "--hostname", unique, "--ip", "127.0.0.1"],
                            capture_output=True, text=True, timeout=60, env=environment)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"registrar: cannot reach Consul at https://127.0.0.1:{tls_consul.https_port}: "
                               "TLS handshake failed") and "--consul-client-cert" in lines[0], lines[0]
