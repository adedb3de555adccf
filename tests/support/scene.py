"""A renderer test's scene: its own services, backends and output files in the shared Consul and nginx."""

from __future__ import annotations

from pathlib import Path

from tests.support.backends import HttpBackend, TcpEcho
from tests.support.renderer_process import RendererDaemon
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
HTTP_TEMPLATE = ROOT / "templates" / "http" / "services.conf.j2"
STREAM_TEMPLATE = ROOT / "templates" / "stream" / "services.conf.j2"


class Scene:
    """What one test registers, starts and renders; all of it undone at teardown."""

    def __init__(self, consul, nginx, unique):
        self.consul, self.nginx, self.unique = consul, nginx, unique
        self.domain = f"{unique}.test"
        self.kv_prefix = f"routing-{unique}"  # this scene's route settings in KV (--kv-prefix)
        self.service_ids: list[str] = []
        self.closers = []
        self.outputs: list[Path] = []

    def http_backend(self, name: str) -> HttpBackend:
        backend = HttpBackend(name)
        self.closers.append(backend.close)
        return backend

    def tcp_echo(self) -> TcpEcho:
        echo = TcpEcho()
        self.closers.append(echo.close)
        return echo

    def register(self, name: str, port: int, *, service_id: str | None = None, **kwargs) -> str:
        service_id = service_id or f"{name}-{port}"
        self.consul.register(name, service_id, port, **kwargs)
        self.service_ids.append(service_id)
        return service_id

    def route_setting(self, service: str | None, key: str, value: str | None) -> None:
        """Write (None: remove) a route setting in this scene's KV: SERVICE's override, or (None) a default."""
        path = f"{self.kv_prefix}/defaults/{key}" if service is None else f"{self.kv_prefix}/routes/{service}/{key}"
        if value is None:
            self.consul.kv_delete(path)
        else:
            self.consul.kv_put(path, value)

    def output(self, kind: str, name: str = "") -> Path:
        directory = self.nginx.conf_d if kind == "http" else self.nginx.stream_d
        path = directory / f"{self.unique}{name}.conf"
        self.outputs.append(path)
        return path

    def common_args(self, *, wait: str | None = None) -> list[str]:
        args = ["--consul-addr", self.consul.address, "--var", f"domain={self.domain}", "--kv-prefix", self.kv_prefix,
                "--var", f"http_port={self.nginx.http_port}", "--var", "listen_address=127.0.0.1",
                *self.nginx.renderer_args]
        return args + (["--wait", wait] if wait else [])

    def default_templates(self) -> list[str]:
        return ["--template", f"{HTTP_TEMPLATE}:{self.output('http')}",
                "--template", f"{STREAM_TEMPLATE}:{self.output('stream')}"]

    def daemon(self, *args: str, env: dict | None = None) -> RendererDaemon:
        daemon = RendererDaemon(*args, env=env)
        self.closers.append(daemon.stop)
        return daemon

    def get(self, name: str, path: str = "/"):
        return self.nginx.get(f"{name}.{self.domain}", path)

    def settle(self, name: str, status: int = 200) -> None:
        """Wait until nginx answers for ``name`` with the new config only.

        `nginx -s reload` returns once the signal is sent; an old worker may
        still accept a connection and answer with the previous config until
        it has gone, so wait for the one worker of the new config as well.
        """
        wait_until(lambda: self.nginx.worker_count() == 1 and all(
            self.get(name).status_code == status for _ in range(10)), timeout=5,
            what=f"nginx settled on {name}.{self.domain}")

    def close(self) -> None:
        """Undo everything, even past a failing step; the first failure is raised at the end."""
        failures = []
        for close in reversed(self.closers):
            try:
                close()
            except Exception as error:  # noqa: BLE001 - keep tearing down, report after
                failures.append(error)
        for service_id in self.service_ids:
            try:
                self.consul.deregister(service_id)
            except Exception:
                pass
        try:
            self.consul.kv_delete(self.kv_prefix, recurse=True)
        except Exception:
            pass
        removed = False
        for path in self.outputs:
            removed |= self.nginx.remove_rendered(path)
        if removed:
            self.nginx.reload()
        if failures:
            raise failures[0]


class Routing:
    """A scene with what TLS routes need: a CA and its cert_dir, an HTTPS port, a socket directory."""

    def __init__(self, scene, authority):
        from tests.support.ports import free_port
        self.scene, self.ca = scene, authority
        self.https_port = free_port()

    def host(self, name: str) -> str:
        return f"{name}.{self.scene.domain}"

    def args(self, *extra: str) -> list[str]:
        return [*self.scene.common_args(), *self.scene.default_templates(),
                "--var", f"https_port={self.https_port}", "--var", f"cert_dir={self.ca.cert_dir}",
                "--var", f"socket_dir={self.scene.nginx.prefix}", *extra]

    def once(self, *extra: str):
        from tests.support.renderer_process import run_once
        result = run_once(*self.args(*extra))
        assert result.returncode == 0, result.stderr
        self.scene.nginx.settled()
        return result

    def https(self, host: str, path: str = "/", method: str = "GET", **kwargs):
        """A request over TLS to nginx's HTTPS port, with SNI and verification for ``host``."""
        import urllib3
        pool = urllib3.HTTPSConnectionPool("127.0.0.1", self.https_port, server_hostname=host, assert_hostname=host,
                                           ca_certs=str(self.ca.ca), retries=False, timeout=5)
        headers = {"Host": host, **kwargs.pop("headers", {})}
        try:
            return pool.request(method, path, headers=headers, redirect=False, **kwargs)
        finally:
            pool.close()
