"""The Docker engine for tests, and the images they run (built locally: no registry).

If no engine answers, one ``dockerd`` is started for the session and stopped
at its end. Images are a busybox-static rootfs piped through ``docker import``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from .waiting import terminate

BUSYBOX_IMAGE = "nginx-sync-test/busybox:1"
PID_FILE = Path("/var/run/docker.pid")
BUSYBOX_APPLETS = ("sh", "httpd", "nc", "sleep", "echo", "cat", "hostname", "ls", "wget", "true", "false", "env")


class DockerEngine:
    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="dockerd-test-"))
        self.client: docker.DockerClient | None = None

    def _ping(self) -> bool:
        try:
            client = docker.from_env(timeout=5)
            client.ping()
            self.client = client
            return True
        except Exception:
            return False

    def start(self, timeout: float = 60.0) -> "DockerEngine":
        if self._ping():
            return self
        owner = _pid_file_owner()
        if owner:  # another dockerd is starting (or restarting): wait for it rather than race
            deadline = time.monotonic() + timeout
            while _alive(owner) and time.monotonic() < deadline:
                if self._ping():
                    return self
                time.sleep(0.2)
        PID_FILE.unlink(missing_ok=True)  # stale: its dockerd is gone
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        self.log = open(self.dir / "dockerd.log", "ab")
        self.process = subprocess.Popen([dockerd], stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {(self.dir / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def restart(self) -> None:
        """Restart an engine this session started (the fault tests need it)."""
        assert self.started_here, "only a dockerd started by the tests can be restarted"
        self.stop()
        self.start()

    def stop(self) -> None:
        terminate(self.process, 30)
        self.process = None

    def busybox_image(self) -> str:
        try:
            self.client.images.get(BUSYBOX_IMAGE)
        except docker.errors.ImageNotFound:
            self.client.images.client.api.import_image_from_data(
                busybox_rootfs(), repository=BUSYBOX_IMAGE.split(":")[0], tag=BUSYBOX_IMAGE.split(":")[1])
        return BUSYBOX_IMAGE


def _pid_file_owner() -> int | None:
    try:
        return int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def busybox_rootfs() -> bytes:
    """A tar of a minimal root filesystem: /bin/busybox and its applet links."""
    busybox = Path("/bin/busybox")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp", "www", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        index = b"busybox test image\n"
        info = tarfile.TarInfo("www/index.html")
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))
    return buffer.getvalue()
