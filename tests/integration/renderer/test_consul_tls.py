"""The renderer against a Consul agent serving HTTPS with verify_incoming (client certificates required)."""

from __future__ import annotations

import shutil
import subprocess

from tests.support.consul_tls import Certificates
from tests.support.renderer_process import run_once
from tests.support.waiting import wait_until


def tls_args(scene, agent, *, client=True, server_name="server.dc1.consul", ca=None):
    cert, key = agent.certificates.client
    args = [a for a in scene.common_args()]
    args[args.index("--consul-addr") + 1] = agent.https_address
    args += ["--consul-cacert", str(ca or agent.certificates.ca)]
    if client:
        args += ["--consul-client-cert", str(cert), "--consul-client-key", str(key)]
    if server_name:
        args += ["--consul-tls-server-name", server_name]
    return args


def test_the_renderer_reads_consul_over_https_with_a_client_certificate(scene, tls_consul, tmp_path):
    backend = scene.http_backend("secure")
    tls_consul.register("secure", f"{scene.unique}-secure", backend.port, tags=["http"])
    try:
        result = run_once(*tls_args(scene, tls_consul), *scene.default_templates())
        assert result.returncode == 0, result.stderr
        scene.settle("secure")

        # The same through Consul's own environment variables, as the daemon runs under systemd.
        cert, key = tls_consul.certificates.client
        args = [a for a in scene.common_args()]
        args[args.index("--consul-addr") + 1] = f"127.0.0.1:{tls_consul.https_port}"
        second = scene.http_backend("secure-2")
        tls_consul.register("secure", f"{scene.unique}-secure-2", second.port, tags=["http"])
        daemon = scene.daemon(*args, *scene.default_templates(), env={
            "CONSUL_HTTP_SSL": "true", "CONSUL_CACERT": str(tls_consul.certificates.ca),
            "CONSUL_CLIENT_CERT": str(cert), "CONSUL_CLIENT_KEY": str(key),
            "CONSUL_TLS_SERVER_NAME": "server.dc1.consul"})
        wait_until(lambda: {scene.get("secure").text.strip() for _ in range(8)} == {"secure", "secure-2"},
                   timeout=10, what="both instances, read over HTTPS")
        assert daemon.alive()
    finally:
        tls_consul.deregister(f"{scene.unique}-secure")
        tls_consul.deregister(f"{scene.unique}-secure-2")


def test_tls_mistakes_are_one_line_naming_the_address(scene, tls_consul, tmp_path):
    other_ca = Certificates(shutil.which("consul"), tmp_path / "other").ca
    cases = {
        "Consul wants a client certificate it trusts (verify_incoming): --consul-client-cert":
            tls_args(scene, tls_consul, client=False),
        "certificate verify failed: unable to get local issuer certificate (--consul-cacert, CONSUL_CACERT)":
            tls_args(scene, tls_consul, ca=other_ca),
        "hostname 'consul.example.org' doesn't match either of 'server.dc1.consul', 'localhost', '127.0.0.1' "
        "(--consul-tls-server-name": tls_args(scene, tls_consul, server_name="consul.example.org"),
    }
    for expected, args in cases.items():
        result = run_once(*args, *scene.default_templates())
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert last.startswith(f"renderer: cannot reach Consul at {tls_consul.https_address}: TLS handshake "
                               "failed: ") and expected in last, last


def test_tls_flags_are_shown_in_help():
    from tests.support.renderer_process import RENDERER
    text = subprocess.run([RENDERER, "run", "--help"], capture_output=True, text=True, timeout=30).stdout
    for flag in ("--consul-cacert", "--consul-client-cert", "--consul-client-key", "--consul-tls-server-name"):
        assert flag in text
