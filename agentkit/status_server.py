"""The daemons' status endpoint (``--status-address``): a small HTTP server that cannot hold up its daemon.

It serves ``/metrics``, ``/health``, ``/ready`` and a status page from its
own thread, with its own asyncio loop, and never touches the daemon's state:
each route is a function reading the immutable snapshot the daemon's loop
last published (a reference swap), so a request costs the loop nothing but
its share of the interpreter, and the loop never waits for a client.

What a slow or malicious client can do is bounded:

* at most ``MAX_CONNECTIONS`` open connections: a new one beyond that
  evicts the oldest connection still sending its request head (what a
  slowloris holds), so a client that sends its request at once is answered
  whatever the others do;
* the request head must arrive within ``HEAD_TIMEOUT`` seconds and fit in
  ``HEAD_LIMIT`` bytes (else 408 or 431 and the connection is closed);
* GET and HEAD only, no request body, one request per connection;
* the answer must be taken within ``WRITE_TIMEOUT`` seconds.

So whatever clients do, a new connection is answered within about one
handler's time, and the daemon's loop runs on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket
import threading
from typing import Callable
from urllib.parse import urlsplit

from .errors import ConfigError

log = logging.getLogger("status")

MAX_CONNECTIONS = 64
HEAD_LIMIT = 8192
HEAD_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @classmethod
    def text(cls, status: int, line: str) -> "Response":
        return cls(status, (line.rstrip("\n") + "\n").encode())


class StatusServerError(ConfigError):
    """The status address cannot be listened on (a setting to change: exit status 2)."""


class StatusServer:
    def __init__(self, host: str, port: int, routes: dict[str, Callable[[], Response]], *,
                 head_timeout: float = HEAD_TIMEOUT, max_connections: int = MAX_CONNECTIONS):
        self.host, self.requested_port = host, port
        self.head_timeout, self.max_connections = head_timeout, max_connections
        self.routes = routes
        self.active = 0
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # still sending their head, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._started = threading.Event()

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    def start(self) -> "StatusServer":
        """Bind now (a wrong address is the caller's one line), then serve on a thread of its own."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
            sock.listen(128)
        except OSError as error:
            sock.close()
            why = "the port is in use" if error.errno == errno.EADDRINUSE else error.strerror or str(error)
            raise StatusServerError(f"--status-address {self.host}:{self.requested_port}: cannot listen ({why})") \
                from None
        sock.setblocking(False)
        self._socket = sock
        self._thread = threading.Thread(target=self._run, name="status-server", daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if self._socket is not None:
            self._socket.close()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._handle, sock=self._socket, limit=HEAD_LIMIT))
        self._started.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.max_connections:
            if not self._waiting:  # every slot busy answering: nothing to evict
                writer.transport.abort()
                return
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()  # its readuntil fails; its handler gives the slot back
        self.active += 1
        self._waiting[writer] = None
        timely = False
        try:
            response, head_only = await self._answer(reader, writer)
            await asyncio.wait_for(self._write(writer, response, head_only), WRITE_TIMEOUT)
            timely = True
        except (asyncio.TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.active -= 1
            self._waiting.pop(writer, None)
            if timely:
                writer.close()
            else:
                writer.transport.abort()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[Response, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.head_timeout)
        except asyncio.TimeoutError:
            return Response.text(408, "request head not received in time"), False
        except asyncio.LimitOverrunError:
            return Response.text(431, f"request head over {HEAD_LIMIT} bytes"), False
        finally:
            self._waiting.pop(writer, None)
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return Response.text(400, "malformed request line"), False
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return Response.text(405, f"{method} is not served here: GET or HEAD"), False
        route = self.routes.get(urlsplit(target).path)
        if route is None:
            return Response.text(404, f"no such page; try {', '.join(sorted(self.routes))}"), method == "HEAD"
        try:
            return route(), method == "HEAD"
        except Exception:  # a bug in a page must not end the server
            log.exception("status page %s failed", target)
            return Response.text(500, "internal error (logged)"), method == "HEAD"

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
        head = (f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode()
        writer.write(head if head_only else head + response.body)
        await writer.drain()


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError naming what is wrong."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class StatusEndpoint:
    """``/``, ``/metrics``, ``/health`` and ``/ready`` of one daemon, from the snapshot its loop last published.

    ``snapshot`` needs ``ready`` and ``ready_reason``; ``render_page`` turns
    one into HTML, at most once per snapshot (the page is kept until the next
    one); ``metrics_text`` is the Prometheus exposition; ``/health`` asks the
    loop's :class:`agentkit.lifecycle.Lifecycle` whether it still turns.
    """

    def __init__(self, program: str, lifecycle, render_page: Callable[[object], str],
                 metrics_text: Callable[[], bytes], metrics_type: str, snapshot,
                 page_version: Callable[[], int] = lambda: 0):
        """``page_version``: what else the page shows changed (the page is rendered again when it moves)."""
        self.program, self.lifecycle = program, lifecycle
        self.render_page, self.metrics_text, self.metrics_type = render_page, metrics_text, metrics_type
        self.page_version = page_version
        self.snapshot = snapshot
        self.server: StatusServer | None = None
        self._page: tuple[object, int, bytes] = (None, 0, b"")

    def publish(self, snapshot) -> None:
        self.snapshot = snapshot  # one reference swap: the server thread reads whichever it sees

    def serve(self, host: str, port: int, extra: dict[str, Callable[[], Response]] | None = None) -> None:
        """Serve the four endpoints, and ``extra`` ones (path -> answer)."""
        self.server = StatusServer(host, port, {"/": self.page, "/metrics": self.metrics, "/health": self.health,
                                                "/ready": self.ready, **(extra or {})}).start()
        shown = f"[{host}]" if ":" in host else host
        logging.getLogger(self.program).info("status page on http://%s:%d/ (/metrics, /health, /ready)", shown,
                                             self.server.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def page(self) -> Response:
        snapshot, version = self.snapshot, self.page_version()
        cached, cached_version, body = self._page
        if cached is not snapshot or cached_version != version:
            body = self.render_page(snapshot).encode()
            self._page = (snapshot, version, body)
        return Response(200, body, "text/html; charset=utf-8")

    def metrics(self) -> Response:
        return Response(200, self.metrics_text(), self.metrics_type)

    def health(self) -> Response:
        healthy, line = self.lifecycle.health()
        return Response.text(200 if healthy else 503, line)

    def ready(self) -> Response:
        snapshot = self.snapshot
        return Response.text(200 if snapshot.ready else 503, snapshot.ready_reason)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("consul-nginx-sync")
    except PackageNotFoundError:
        return "unknown"
