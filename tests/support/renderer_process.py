"""The renderer as operators run it."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from .daemon_process import BIN, DaemonProcess
from .waiting import wait_until

RENDERER = str(BIN / "renderer")


def run_once(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RENDERER, "once", *args], capture_output=True, text=True, timeout=timeout)


_PASS = re.compile(r"pass \d+ done at catalog index (\d+)")


class RendererDaemon(DaemonProcess):
    def __init__(self, *args: str, env: dict | None = None):
        if "--status-address" in args and "--traffic-log" not in args:
            # Counting is on with a status address; a test's traffic goes to a file of its own, not /var/lib.
            self.traffic_log = Path(tempfile.mkdtemp(prefix="renderer-traffic-")) / "traffic.log"
            args = (*args, "--traffic-log", str(self.traffic_log))
        super().__init__([RENDERER, "run", *args], env=env)

    def wait_for_pass_at(self, index: int, timeout: float = 10.0) -> None:
        """Wait until a pass ran on a catalog at ``index`` or later (needs ``--log-level debug``)."""
        wait_until(lambda: any(int(i) >= index for i in _PASS.findall(self.log)) or not self.alive(), timeout,
                   what=f"a render pass at catalog index {index}")
        assert self.alive(), self.log[-3000:]
