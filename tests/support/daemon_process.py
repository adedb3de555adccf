"""A daemon run as operators run it: a real process, its log in a file, SIGTERM to stop."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .waiting import terminate, wait_until

BIN = Path(sys.executable).parent


class DaemonProcess:
    def __init__(self, argv: list[str], log_path: Path | None = None, env: dict | None = None):
        self.argv = argv
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="daemon-", suffix=".log")[1])
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.log or self.process.poll() is not None, timeout, what=f"log line {text!r}")
        assert text in self.log, f"{self.argv[0]} exited ({self.process.returncode}) without logging {text!r}:\n" \
                                 f"{self.log[-3000:]}"

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, SIGKILL after ``timeout``; the exit code (-9 when SIGTERM was ignored).

        It never raises, so a teardown stopping several daemons stops them all;
        callers assert the code (0 for a clean stop).
        """
        terminate(self.process, timeout)
        self.log_file.close()
        return self.process.returncode
