"""The command-line contract: exit codes, one clear line, tokens never shown."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from tests.support.registrars import MASTER_TOKEN, REGISTRAR, acl_request


def test_sync_exits_zero_after_one_reconciliation(run_sync, containers, consul_agent, unique):
    containers("web", labels={"SERVICE_NAME": "web"})
    result = run_sync()
    assert result.returncode == 0, result.stderr
    assert f"{unique}:{unique}-web:80" in consul_agent.services()
    again = run_sync()
    assert again.returncode == 0 and "registered" not in again.stderr  # nothing differs, nothing written


def test_unreachable_consul_is_one_line_and_non_zero(run_sync, docker_engine, unique):
    started = time.monotonic()
    result = subprocess.run([REGISTRAR, "sync", "--consul-addr", "127.0.0.1:1", "--hostname", unique,
                             "--retry-attempts", "2", "--retry-interval", "200"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert time.monotonic() - started >= 0.4  # two retries, 200 ms apart
    assert result.stderr.count("retrying in 0.2s") == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == "registrar: cannot reach Consul at http://127.0.0.1:1: connection refused"


def test_bad_flags_are_one_line(docker_engine, unique):
    result = subprocess.run([REGISTRAR, "sync", "--hostname", "bad:name"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == "registrar: --hostname 'bad:name' is not a valid name (letters, digits, _ . - only)"
    result = subprocess.run([REGISTRAR, "run", "--consul-token-file", "/nonexistent/token"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.strip().startswith("registrar: cannot read Consul token file")


def test_unreachable_docker_is_one_line(consul_agent, unique):
    result = subprocess.run([REGISTRAR, "sync", "--consul-addr", consul_agent.address, "--hostname", unique,
                             "--docker-url", "unix:///nonexistent/docker.sock"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("registrar: cannot reach Docker at unix:///nonexistent")


def test_token_without_write_rights_names_the_missing_permission(run_sync, containers, acl_agent, unique, tmp_path):
    policy = acl_request(acl_agent, "PUT", "/v1/acl/policy",
                         {"Name": f"{unique}-read", "Rules": 'service_prefix "" { policy = "read" }\n'
                                                              'node_prefix "" { policy = "read" }'})
    token = acl_request(acl_agent, "PUT", "/v1/acl/token", {"Policies": [{"ID": policy["ID"]}]})["SecretID"]
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    containers("web", labels={"SERVICE_NAME": "web"})

    result = run_sync("--consul-token-file", str(token_file), agent=acl_agent)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"registrar: Consul at {acl_agent.url} denied registering web ({unique}:{unique}-web:80): "
                    'the token lacks service:write on "web"')
    assert token not in result.stderr and token not in result.stdout

    result = run_sync("--consul-token", "00000000-0000-0000-0000-000000000000", agent=acl_agent)
    assert result.returncode == 1 and "ACL not found" in result.stderr
    assert "00000000-0000-0000-0000-000000000000" not in result.stderr

    result = run_sync(agent=acl_agent, env={"CONSUL_HTTP_TOKEN": MASTER_TOKEN})
    assert result.returncode == 0, result.stderr
    assert MASTER_TOKEN not in result.stderr
    acl_request(acl_agent, "PUT", f"/v1/agent/service/deregister/{unique}:{unique}-web:80")


def test_systemd_is_told_ready_after_the_first_reconciliation_and_stopping(registrar, containers, unique):
    containers("web", labels={"SERVICE_NAME": "web"})
    directory = tempfile.mkdtemp(prefix="notify-")  # AF_UNIX paths are short; pytest's tmp_path may not be
    address = os.path.join(directory, "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(10)
    try:
        daemon = registrar(env={"NOTIFY_SOCKET": address})
        assert listener.recv(256) == b"READY=1\nSTATUS=reconciled; following Docker"
        assert [s["Service"] for s in daemon.services().values()] == ["web"], "READY only after the first pass"
        assert daemon.stop() == 0
        assert listener.recv(256) == b"STOPPING=1"
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)
