"""A private Consul agent on free loopback ports: a dev agent, or a one-server cluster as a node runs.

Tests use the dev agent: it is ready in half a second and forgets
everything when it stops, which fault tests rely on. Benchmarks use the
server (``dev=False``): a dev agent pretty-prints every HTTP response, which
for the renderer's node dump is 2.6x the bytes and 1.6x Consul's time, so
figures taken on it would not be what a production node sees.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from .ports import free_port
from .waiting import terminate


class ConsulAgent:
    def __init__(self, binary: str, extra_config: dict | None = None, directory: Path | None = None,
                 token: str | None = None, dev: bool = True):
        self.binary, self.dev = binary, dev
        # With ACLs on and default_policy deny, even the readiness poll needs a token.
        self.headers = {"X-Consul-Token": token} if token else {}
        self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="consul-test-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        # Chosen once: a restarted agent comes back on the same ports, as a real one does.
        self.other_ports = {"serf_lan": free_port(), "serf_wan": free_port(), "server": free_port()}
        self.extra_config = extra_config or {}
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 30.0) -> "ConsulAgent":
        data_dir = self.dir / "data"
        shutil.rmtree(data_dir, ignore_errors=True)
        extra = dict(self.extra_config)
        config = {
            "ports": {"http": self.http_port, "dns": -1, "grpc": -1, **self.other_ports, **extra.pop("ports", {})},
            "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1", "data_dir": str(data_dir),
            "disable_update_check": True, "log_level": "warn",
        }
        if not self.dev:  # data_dir is wiped above, so a restart comes back empty here too
            config.update({"server": True, "bootstrap_expect": 1, "performance": {"raft_multiplier": 1}})
        config.update(extra)
        (self.dir / "config.json").write_text(json.dumps(config))
        self.log = open(self.dir / "consul.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, "agent", *(["-dev"] if self.dev else []), "-config-file", str(self.dir / "config.json")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_for_leader(timeout)
        return self

    def _wait_for_leader(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"consul exited: {(self.dir / 'consul.log').read_text()[-2000:]}")
            try:
                leader = requests.get(f"{self.url}/v1/status/leader", timeout=1, headers=self.headers).json()
                nodes = requests.get(f"{self.url}/v1/catalog/nodes", timeout=1, headers=self.headers)
                if leader and nodes.status_code == 200 and nodes.json():
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError("consul elected no leader")

    def stop(self) -> None:
        terminate(self.process, 10)
        self.process = None

    def restart(self, pause: float = 0.0) -> None:
        """Stop and start again on the same ports; the agent comes back empty."""
        self.stop()
        time.sleep(pause)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # Small helpers for tests: raw HTTP, so the code under test is not testing itself.
    def put(self, path: str, body=None, **params) -> requests.Response:
        response = requests.put(f"{self.url}{path}", json=body, params=params, timeout=10, headers=self.headers)
        response.raise_for_status()
        return response

    def get(self, path: str, **params):
        response = requests.get(f"{self.url}{path}", params=params, timeout=10, headers=self.headers)
        response.raise_for_status()
        return response.json()

    def index(self) -> int:
        """The catalog's current Raft index: a renderer pass at this index or later has seen every write so far."""
        response = requests.get(f"{self.url}/v1/catalog/services", timeout=10, headers=self.headers)
        response.raise_for_status()
        return int(response.headers["X-Consul-Index"])

    def kv_put(self, key: str, value: str) -> None:
        """Write a raw KV value (``put`` would send JSON, quotes included)."""
        requests.put(f"{self.url}/v1/kv/{key}", data=value.encode(), timeout=10,
                     headers=self.headers).raise_for_status()

    def kv_delete(self, key: str, recurse: bool = False) -> None:
        requests.delete(f"{self.url}/v1/kv/{key}", params={"recurse": "true"} if recurse else None, timeout=10,
                        headers=self.headers).raise_for_status()

    def register(self, name: str, service_id: str, port: int, *, address: str = "127.0.0.1",
                 tags=(), meta=None, check: dict | None = None) -> None:
        body = {"Name": name, "ID": service_id, "Port": port, "Address": address,
                "Tags": list(tags), "Meta": meta or {}}
        if check:
            body["Check"] = check
        self.put("/v1/agent/service/register", body)

    def deregister(self, service_id: str) -> None:
        self.put(f"/v1/agent/service/deregister/{service_id}")

    def services(self) -> dict:
        return self.get("/v1/agent/services")
