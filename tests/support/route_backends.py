"""Backends that say what reached them: what the route tests look at behind nginx.

* :class:`EchoBackend`: HTTP (or HTTPS with a certificate) answering JSON
  ``{name, path, method, headers, body_bytes}``; ``/slow?s=2`` waits first.
* :class:`AuthBackend`: 200 with ``X-User``/``X-Role`` for ``Authorization:
  Bearer good``, 401 otherwise; counts the requests it saw.
* :class:`GrpcBackend`: a plaintext gRPC server (h2c) with one unary method
  ``/demo.Echo/Say`` over raw bytes: no generated code needed.
* :class:`WebsocketBackend`: a websocket echo server.
* :class:`ClientCertTlsBackend`: TLS that requires a client certificate
  signed by the test CA, then says its name (svc9: passthrough to a backend
  that checks client certificates).
"""

from __future__ import annotations

import asyncio
import collections
import http.server
import json
import socket
import ssl
import threading
import time
from concurrent import futures
from urllib.parse import parse_qs, urlparse


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class EchoBackend:
    """Answers every request with what it received, as JSON: ``status`` and ``headers`` are its own answer's
    (a failing instance answers 502); ``methods`` counts the requests by method, ``seen`` lists them; with ``hold``, each request
    waits for that event before it is answered."""

    def __init__(self, name: str, tls: tuple | None = None, status: int = 200, headers: dict | None = None,
                 hold: threading.Event | None = None):
        owner = self
        self.name, self.requests, self.methods, self.seen = name, 0, collections.Counter(), []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = {"name": owner.name, "path": self.path, "method": self.command,
                        "headers": {k.lower(): v for k, v in self.headers.items()}, "body_bytes": len(body)}
                owner.seen.append(seen)
                owner.requests += 1
                owner.methods[self.command] += 1
                if hold is not None:  # answer only once the test lets it
                    hold.wait(30)
                url = urlparse(self.path)
                if url.path.endswith("/slow"):
                    time.sleep(float(parse_qs(url.query).get("s", ["1"])[0]))
                payload = json.dumps(seen).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for header, value in (headers or {}).items():
                    self.send_header(header, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _answer

            def log_message(self, *_):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, tls))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AuthBackend(EchoBackend):
    def __init__(self):
        owner = self
        self.requests, self.name = 0, "auth"

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                owner.requests += 1
                good = self.headers.get("Authorization") == "Bearer good"
                self.send_response(200 if good else 401)
                if good:
                    self.send_header("X-User", "alice")
                    self.send_header("X-Role", "admin")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class GrpcBackend:
    def __init__(self, name: str):
        import grpc
        self.name = name

        def say(request: bytes, context) -> bytes:
            return f"{name}:".encode() + request

        def health(request: bytes, context) -> bytes:
            # grpc.health.v1: HealthCheckRequest{service = 1}; answer SERVING (status = 1) for "" and
            # this backend's name, NOT_FOUND otherwise, as the standard health service does.
            service = request[2:].decode() if request[:1] == b"\x0a" else ""
            if service not in ("", name):
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service}")
            return b"\x08\x01"

        handler = grpc.method_handlers_generic_handler("demo.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(say)})
        health_handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(health)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler, health_handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


def grpc_health(port: int, authority: str, service: str = "", timeout: float = 5.0) -> int:
    """grpc.health.v1 Check over plaintext HTTP/2 (prior knowledge): the status (1 SERVING)."""
    import grpc
    request = b"\x0a" + bytes([len(service)]) + service.encode() if service else b""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", authority)]) as channel:
        answer = channel.unary_unary("/grpc.health.v1.Health/Check")(request, timeout=timeout)
    return answer[1] if answer[:1] == b"\x08" else 0


def grpc_say(port: int, authority: str, ca: bytes, message: bytes, timeout: float = 5.0) -> bytes:
    """One unary call over TLS (HTTP/2) to nginx, verifying its certificate for ``authority``."""
    import grpc
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    options = [("grpc.ssl_target_name_override", authority), ("grpc.default_authority", authority)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        return channel.unary_unary("/demo.Echo/Say")(message, timeout=timeout)


class WebsocketBackend:
    def __init__(self):
        from websockets.asyncio.server import serve
        self.loop = asyncio.new_event_loop()
        self.messages = 0
        ready = threading.Event()

        async def echo(connection):
            async for message in connection:
                self.messages += 1
                await connection.send(message)

        async def main():
            self.server = await serve(echo, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            await self.server.serve_forever()

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        ready.wait(5)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)


class ClientCertTlsBackend:
    """TLS demanding a client certificate from ``ca``; says its name and the client's CN."""

    def __init__(self, name: str, certificate: tuple, ca):
        self.name = name
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*map(str, certificate))
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(ca))
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(connection, server_side=True) as tls:
                    subject = dict(item[0] for item in tls.getpeercert()["subject"])
                    tls.sendall(f"{self.name} for {subject.get('commonName')}\n".encode())
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self.listener.close()


class UdpEcho:
    """Answers every datagram with the same bytes."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.socket.recvfrom(2048)
                self.socket.sendto(data, peer)
            except OSError:
                return

    def close(self) -> None:
        self.socket.close()
