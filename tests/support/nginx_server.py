"""A private nginx: own prefix, own ports, http and stream includes.

Configs land in ``conf.d/*.conf`` (inside ``http {}``) and ``stream.d/*.conf``
(inside ``stream {}``). Tests write files with names of their own and remove
them when done, so one nginx serves the whole session.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from renderer.apply.nginx_master import children, process_title

from .ports import free_port, wait_for_port

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
# nginx's Lua module (libnginx-mod-http-lua) needs its development kit loaded first: --dynamic-peers.
LUA_MODULES = (Path("/usr/lib/nginx/modules/ndk_http_module.so"), Path("/usr/lib/nginx/modules/ngx_http_lua_module.so"))

MAIN_CONFIG = """\
# The stream and Lua modules are dynamic; under a private prefix the stock
# modules-enabled includes resolve relative to the prefix, so load them by path.
load_module {stream_module};
{lua_modules}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    # An operator's own access log, buffered. Not "access_log off": at the http level it would silence
    # every log of that level, the renderer's traffic log too (nginx's rule; docs/observability.md).
    access_log {prefix}/logs/access.log combined buffer=64k flush=5s;
    # As examples/nginx.conf: one virtual host per service outgrows the defaults,
    # and nginx then searches hash sizes on every check and reload (the benches' 5,000).
    server_names_hash_max_size 16384;
    server_names_hash_bucket_size 128;
    variables_hash_max_size 4096;
    variables_hash_bucket_size 128;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    # Not default_server: the default http template brings that (404 for unknown names). This one only
    # keeps the port answering between tests; an explicit default_server wins over it.
    server {{
        listen 127.0.0.1:{http_port};
        location / {{ return 404 "no such site\\n"; }}
    }}
    include {prefix}/conf.d/*.conf;
}}
stream {{
    include {prefix}/stream.d/*.conf;
}}
"""


def lua_available() -> bool:
    return all(module.exists() for module in LUA_MODULES)



def accepting_workers(master: int) -> int:
    """How many of the master's workers accept connections. For about 100 ms after a reload both
    generations do (nginx's master starts the new one, waits, then tells the old one to quit), and a
    request may meet the previous configuration."""
    return sum(1 for pid in children(master)
               if "worker process" in process_title(pid) and "shutting down" not in process_title(pid))

class Nginx:
    def __init__(self, binary: str, prefix: Path | None = None, lua: bool | None = None):
        self.binary = binary
        self.lua = lua_available() if lua is None else lua
        self.prefix = Path(prefix) if prefix else Path(tempfile.mkdtemp(prefix="nginx-test-"))
        self.http_port = free_port()
        self.conf_d = self.prefix / "conf.d"
        self.stream_d = self.prefix / "stream.d"
        self.config = self.prefix / "nginx.conf"

    @property
    def base_command(self) -> str:
        return f"{shlex.quote(self.binary)} -p {self.prefix} -c {self.config}"

    @property
    def check_command(self) -> str:
        return f"{self.base_command} -t -q"

    @property
    def reload_command(self) -> str:
        return f"{self.base_command} -s reload"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def renderer_args(self) -> list[str]:
        """How a renderer checks, reloads and confirms this nginx (it signals the master in the pid file: no
        reload command, as by default)."""
        return ["--check-command", self.check_command,
                "--nginx-pid-file", str(self.pid_file), "--nginx-error-log", str(self.error_log)]

    def start(self) -> "Nginx":
        for sub in ("conf.d", "stream.d", "logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        # mkdtemp makes it 0700; the workers (nobody) must reach the unix sockets the templates put here.
        self.prefix.chmod(0o755)
        lua = "".join(f"load_module {module};\n" for module in LUA_MODULES) if self.lua else ""
        self.config.write_text(MAIN_CONFIG.format(
            stream_module=STREAM_MODULE, lua_modules=lua, prefix=self.prefix, http_port=self.http_port))
        subprocess.run(shlex.split(self.check_command), check=True, capture_output=True)
        subprocess.run(shlex.split(self.base_command), check=True, capture_output=True)
        wait_for_port(self.http_port)
        return self

    def pid(self) -> int:
        return int(self.pid_file.read_text())

    def worker_count(self) -> int:
        """nginx's workers that accept connections: a generation shutting down has closed its listeners.

        (One may linger for minutes holding a UDP session or a websocket, answering only that.)
        """
        return accepting_workers(self.pid())

    @staticmethod
    def remove_rendered(path: Path) -> bool:
        """Remove a file a renderer wrote and its journal (a renderer stopped mid-pass leaves one)."""
        for journal in (".renderer-previous", ".renderer-absent"):
            path.with_name(f".{path.name}{journal}").unlink(missing_ok=True)
        if path.exists():
            path.unlink()
            return True
        return False

    def settled(self, timeout: float = 10.0) -> None:
        """Wait until only the newest generation of workers runs (a reload's old workers are gone)."""
        from .waiting import wait_until
        wait_until(lambda: self.worker_count() == 1, timeout, what="nginx's old workers gone")

    def reload(self) -> None:
        """Reload and return once nginx runs the new configuration (the renderer's own confirmation)."""
        from renderer.apply.nginx_master import NginxMaster
        master = NginxMaster(self.pid_file, self.error_log, timeout=30)
        before = master.before()
        subprocess.run(shlex.split(self.reload_command), check=True, capture_output=True)
        master.confirm(before)
        self.settled()

    def config_is_valid(self) -> bool:
        return subprocess.run(shlex.split(self.check_command), capture_output=True).returncode == 0

    def stop(self) -> None:
        subprocess.run(shlex.split(self.base_command) + ["-s", "quit"], capture_output=True)
        deadline = time.monotonic() + 10
        while (self.prefix / "nginx.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def get(self, host: str, path: str = "/", timeout: float = 2.0) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.http_port}{path}", headers={"Host": host}, timeout=timeout)
