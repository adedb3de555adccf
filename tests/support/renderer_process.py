"""The renderer as operators run it."""

from __future__ import annotations

import subprocess

from .daemon_process import BIN, DaemonProcess

RENDERER = str(BIN / "renderer")


def run_once(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RENDERER, "once", *args], capture_output=True, text=True, timeout=timeout)


class RendererDaemon(DaemonProcess):
    def __init__(self, *args: str, env: dict | None = None):
        super().__init__([RENDERER, "run", *args], env=env)
