"""Dynamic peers (I/O): keep nginx's peer table equal to the route table's, without a reload.

Three places hold it, kept in this order:

* ``peers_dir/renderer_peers.lua``: the Lua side (balancer, push endpoint),
  installed from this package before nginx's config that loads it is checked;
* ``peers_dir/peers.txt``: what nginx loads when it starts or reloads
  (``init_by_lua``), written before a pass applies files, so a reload that
  adds an upstream finds its peers in it;
* nginx's shared dict, by a PUT on the template's local-only socket
  (``peers_socket``): answered with the version and digest nginx then holds,
  which is the confirmation. A GET asks the same, so a table lost to an
  nginx restart from another file, or never received, is noticed and pushed
  again (level-triggered, like the rest of the loop).
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import re
import socket
import time
from importlib import resources
from pathlib import Path

from agentkit.errors import AgentError, ConfigError
from agentkit.files import write_atomically

from .table import PATCH, PeerTable

LUA_MODULE = "renderer_peers.lua"
TABLE_FILE = "peers.txt"
ENDPOINT = "/renderer/peers"
log = logging.getLogger("renderer")
_ANSWER = re.compile(r"^version (\d+) digest (\w+)$")


class PeerPushFailed(AgentError):
    """nginx did not take (or confirm) the peer table; the text names the socket and why."""


class PatchRefused(PeerPushFailed):
    """nginx did not apply a patch: it holds another table than the patch's base (or cannot read patches)."""


@dataclasses.dataclass(frozen=True)
class Held:
    version: int
    digest: str
    patched: int | None = None  # after a push: the pools a patch carried; None: the whole table


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class PeerSync:
    @classmethod
    def installed(cls, settings) -> "PeerSync | None":
        """With ``dynamic_peers`` on: one, with the Lua module in place before nginx checks a
        configuration that loads it (ConfigError when the directory is not writable); else None."""
        if not settings.dynamic_peers:
            return None
        peers = cls(settings.peers_dir, settings.peers_socket)
        try:
            peers.install()
        except OSError as error:
            raise ConfigError(f"--peers-dir {settings.peers_dir}: cannot write the Lua module "
                              f"({error.strerror})") from None
        return peers

    def __init__(self, directory: Path, socket_path: Path, timeout: float = 5.0):
        self.directory, self.socket_path, self.timeout = Path(directory), Path(socket_path), timeout
        self.last_version = 0

    @property
    def table_file(self) -> Path:
        return self.directory / TABLE_FILE

    def install(self) -> None:
        """The Lua module, as this version ships it (rewritten only when it differs)."""
        source = resources.files("renderer.peers").joinpath("lua", LUA_MODULE).read_bytes()
        target = self.directory / LUA_MODULE
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            if target.read_bytes() == source:
                return
        except FileNotFoundError:
            pass
        write_atomically(target, source)

    def write(self, peers: PeerTable, version: int | None = None) -> int:
        """The table nginx loads at start; returns its version (unchanged when the peers are; else
        ``version``, or a new one)."""
        try:
            with open(self.table_file, "rb") as handle:  # the first line says which table it holds
                first = handle.readline().decode("ascii", "replace").split()
            if len(first) == 4 and first[3] == peers.digest:
                return int(first[2])
        except (FileNotFoundError, ValueError, IndexError):
            pass
        version = version or self.new_version()
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self.table_file, peers.text(version).encode())
        return version

    def new_version(self) -> int:
        """Milliseconds since the epoch: increasing across restarts too (and never repeated here)."""
        self.last_version = max(time.time_ns() // 1_000_000, self.last_version + 1)
        return self.last_version

    def push(self, peers: PeerTable, version: int, base: PeerTable | None = None) -> Held:
        """PUT the table, as a patch onto ``base`` when nginx is known to hold it; what nginx holds afterwards,
        which must be it (PeerPushFailed otherwise).

        A patch nginx refuses (it holds another table: restarted, reloaded
        from an older file; or a Lua module of an earlier version) is followed
        by the whole table at once: the patch only saves time.
        """
        held = None
        if base is not None:
            patch = peers.patch(base, version)
            try:
                held = dataclasses.replace(self._request("PUT", patch.encode()), patched=patch.count("\npool "))
            except PatchRefused as refusal:
                log.info("nginx did not take a patch of the peer table (%s): pushing it whole", refusal)
        if held is None:
            held = self._request("PUT", peers.text(version).encode())
        if held.digest != peers.digest:
            raise PeerPushFailed(f"nginx at {self.socket_path} holds peer table {held.digest}, not the "
                                 f"{peers.digest} just pushed")
        return held

    def held(self) -> Held:
        """What nginx holds now."""
        return self._request("GET", None)

    def _request(self, method: str, body: bytes | None) -> Held:
        connection = _UnixConnection(str(self.socket_path), self.timeout)
        try:
            connection.request(method, ENDPOINT, body=body,
                               headers={"Host": "localhost", "Content-Type": "text/plain"})
            response = connection.getresponse()
            text = response.read().decode(errors="replace").strip()
        except FileNotFoundError:
            raise PeerPushFailed(f"nginx has no peer endpoint at {self.socket_path} yet (not started, or its "
                                 "configuration with dynamic peers not loaded)") from None
        except (OSError, http.client.HTTPException) as error:
            raise PeerPushFailed(f"nginx's peer endpoint at {self.socket_path}: {error}") from None
        finally:
            connection.close()
        match = _ANSWER.match(text)
        if response.status in (400, 409) and body is not None and body.startswith(PATCH.encode()):
            raise PatchRefused(f"{response.status}: {text[:200]}")
        if response.status != 200 or not match:
            raise PeerPushFailed(f"nginx's peer endpoint at {self.socket_path} answered {response.status}: "
                                 f"{text[:200]}")
        return Held(int(match.group(1)), match.group(2))
