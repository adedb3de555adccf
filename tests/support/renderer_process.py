"""The renderer as operators run it: a real process, its log in a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .waiting import wait_until

RENDERER = str(Path(sys.executable).with_name("renderer"))


def run_once(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RENDERER, "once", *args], capture_output=True, text=True, timeout=timeout)


class RendererDaemon:
    def __init__(self, *args: str, env: dict | None = None):
        self.log_path = Path(tempfile.mkstemp(prefix="renderer-", suffix=".log")[1])
        self.log_file = open(self.log_path, "w")
        self.process = subprocess.Popen([RENDERER, "run", *args], stdout=self.log_file, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.log or self.process.poll() is not None, timeout, what=f"log line {text!r}")
        assert text in self.log, f"renderer exited ({self.process.returncode}) without logging {text!r}:\n{self.log}"

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode
