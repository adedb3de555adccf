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
import uuid
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


class PrivateDockerEngine:
    """A second dockerd of the test's own: its socket, data, exec root and pid file under one directory.

    For what must not touch the shared engine (restarting it). It gets a
    bridge of its own, made here: dockerd started with ``--bridge none``
    deletes ``docker0`` (the default bridge, the shared engine's) as it
    starts. No iptables rules: the tests use host networking on it.
    """

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen | None = None
        self.client: docker.DockerClient | None = None
        self.bridge = f"dx{uuid.uuid4().hex[:8]}"
        subnet = 100 + uuid.uuid4().int % 150
        subprocess.run(["ip", "link", "add", "name", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"10.254.{subnet}.1/24", "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    def start(self, timeout: float = 60.0) -> "PrivateDockerEngine":
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        # Short paths: the exec root holds unix sockets, whose paths are limited to 108 bytes.
        self.exec_root = Path(tempfile.mkdtemp(prefix="dx-", dir="/run"))
        # containerd takes letters and digits joined by single . _ -: not every temporary name (a trailing or
        # doubled "_" made a container's start fail now and then, after a restart too).
        self.namespace = uuid.uuid4().hex[:12]
        log = open(self.dir / "dockerd.log", "ab")
        self.process = subprocess.Popen(
            [dockerd, "-H", self.url, "--data-root", str(self.dir / "data"), "--exec-root", str(self.exec_root),
             "--pidfile", str(self.dir / "docker.pid"), "--bridge", self.bridge, "--iptables=false",
             "--ip-masq=false", "--shutdown-timeout", "1", "--containerd-namespace", f"test-{self.namespace}",
             "--containerd-plugins-namespace", f"test-plugins-{self.namespace}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client = docker.DockerClient(base_url=self.url, timeout=10)
                self.client.ping()
                return self
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"private dockerd did not start: "
                                       f"{(self.dir / 'dockerd.log').read_text()[-2000:]}") from None
                time.sleep(0.2)

    def restart(self) -> None:
        self._stop_daemon()
        self.start()

    def stop(self) -> None:
        self._stop_daemon()
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)

    def _stop_daemon(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        terminate(self.process, 30)
        self.process = None
        shutil.rmtree(self.exec_root, ignore_errors=True)

    def busybox_image(self) -> str:
        try:
            self.client.images.get(BUSYBOX_IMAGE)
        except docker.errors.ImageNotFound:
            self.client.api.import_image_from_data(
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


class OwnContainers:
    """The containers one test made (named ``<unique>-...``), so it counts only its own.

    A registrar registers every container on the engine, and the engine is
    shared (other tests, a bench, the demo); a test asserting "one service"
    must mean one of its own. A container is the test's once it was added or
    seen with the test's name prefix, and stays so after it is removed.
    """

    def __init__(self, client, prefix: str):
        self.client = client
        self.prefix = f"{prefix}-"
        self.ids: set[str] = set()
        self.others: set[str] = set()

    def add(self, container_id: str) -> None:
        self.ids.add(container_id[:12])

    def __contains__(self, short_id: str) -> bool:
        if short_id in self.ids:
            return True
        if short_id in self.others or not short_id:
            return False
        try:
            name = self.client.containers.get(short_id).name
        except docker.errors.NotFound:
            return False  # gone before we saw it: not known to be ours (not remembered either)
        (self.ids if name.startswith(self.prefix) else self.others).add(short_id)
        return short_id in self.ids
