"""Small real backends on loopback: HTTP servers that answer their own name, a TCP echo."""

from __future__ import annotations

import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
from pathlib import Path

from .ports import free_port, wait_for_port


class HttpBackend:
    """``busybox httpd`` answering ``name`` on a free loopback port."""

    def __init__(self, name: str):
        self.name = name
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="backend-"))
        (self.root / "index.html").write_text(f"{name}\n")
        busybox = shutil.which("busybox") or "/bin/busybox"
        self.process = subprocess.Popen([busybox, "httpd", "-f", "-p", f"127.0.0.1:{self.port}", "-h", str(self.root)])
        wait_for_port(self.port)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(4096):
            self.request.sendall(data)


class TcpEcho:
    def __init__(self):
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tcp_roundtrip(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    """Send ``payload`` and read until as many bytes came back.

    No half-close: nginx's stream proxy (proxy_half_close off) ends the
    whole session when the client shuts its write side.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return received
