"""Following nginx's traffic log (the I/O edge of :mod:`.traffic`): the lines nginx appends, the disk given back.

nginx appends to the file (``O_APPEND``, whole buffers of whole lines) and
never truncates it; the renderer reads from where it stopped and punches
out what it has read (``fallocate(PUNCH_HOLE)``, through ctypes: Python
has no binding), so the file takes no more disk than the lines not yet read
and nginx never has to be signalled, nor a line lost to a truncation racing
a write. Its apparent size grows; at a start, when that passes
``RESTART_SIZE``, the file is truncated (counts start from zero anyway).
A file system without hole punching gets a truncation once read past
``TRUNCATE_AT``, which may lose the lines nginx writes in between.

While the renderer is stopped nginx keeps appending, about 100 bytes a
request; the next start skips them (counts start when the renderer does).
A file replaced under it (removed, moved by logrotate) is followed to the
new one once the old is read out: nginx writes there after its next reload.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("renderer")

CHUNK = 1 << 20
RESTART_SIZE = 1 << 30
TRUNCATE_AT = 64 << 20
_PUNCH_HOLE, _KEEP_SIZE = 0x02, 0x01
_BLOCK = 1 << 16  # holes are punched in whole blocks behind what was read

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


def _punch(fd: int, start: int, end: int) -> bool:
    """Give back the disk of bytes [start, end) without changing the file's size; False if unsupported."""
    if _libc.fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, start, end - start) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(error, os.strerror(error))


class TrafficLog:
    def __init__(self, path: Path):
        self.path = path
        self.file = None
        self.offset = 0
        self.punched = 0
        self.partial = b""
        self.can_punch = True

    def open(self) -> None:
        """Start counting from now: at the end of what nginx wrote so far (the file made if missing)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        if size > RESTART_SIZE:
            os.ftruncate(fd, 0)  # nginx appends: its next line goes to the new end
            size = 0
        self.file = os.fdopen(fd, "r+b", buffering=0)
        self.file.seek(size)
        self.offset, self.punched, self.partial = size, 0, b""  # what nginx wrote before is given back unread

    def read(self) -> list[bytes]:
        """The complete lines nginx appended since the last read."""
        if self.file is None:
            self.open()
        lines: list[bytes] = []
        while True:
            chunk = self.file.read(CHUNK)
            if not chunk:
                break
            self.offset += len(chunk)
            data = self.partial + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                self.partial = data
                continue
            lines += data[:cut].split(b"\n")
            self.partial = data[cut + 1:]
        self._give_back()
        if self._replaced():
            self._reopen()
        return lines

    def _give_back(self) -> None:
        fd = self.file.fileno()
        if self.can_punch:
            end = self.offset - self.offset % _BLOCK
            if end > self.punched:
                if _punch(fd, self.punched, end):
                    self.punched = end
                else:
                    self.can_punch = False
                    log.warning("traffic log %s: its file system cannot punch holes; it is truncated every %d MiB "
                                "instead, which may lose a few lines to nginx's writes in between", self.path,
                                TRUNCATE_AT >> 20)
        if not self.can_punch and self.offset >= TRUNCATE_AT and not self.partial:
            os.ftruncate(fd, 0)
            self.file.seek(0)
            self.offset = 0

    def _replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(self.file.fileno()).st_ino
        except FileNotFoundError:
            return False  # nginx makes it again at its next reload; keep reading the old one meanwhile

    def _reopen(self) -> None:
        """The path holds another file now: what nginx writes after its reload is there, from its start."""
        self.file.close()
        self.file = open(self.path, "r+b", buffering=0)
        self.offset = self.punched = 0
        self.partial = b""

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class Follower:
    """Reads the log into a :class:`renderer.observe.traffic.Traffic` every ``interval`` seconds, in a thread,
    until stopped; a read that fails is said once and tried again (the file opened anew) the next time."""

    def __init__(self, traffic_log: TrafficLog, traffic, clock=time.monotonic, interval: float = 1.0):
        self.log, self.traffic, self.clock, self.interval = traffic_log, traffic, clock, interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="traffic-log", daemon=True)
        self.failing: str | None = None

    def start(self) -> "Follower":
        self.step()  # counting starts now: the end of what nginx wrote so far
        self.thread.start()
        return self

    def step(self) -> None:
        try:
            self.traffic.add(self.log.read(), self.clock())
        except OSError as error:
            self.log.close()
            if self.failing != str(error):
                log.warning("traffic log %s: %s; counting resumes once it can be read", self.log.path, error)
            self.failing = str(error)
            return
        if self.failing is not None:
            log.info("traffic log %s read again; counting resumed", self.log.path)
            self.failing = None

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.step()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.log.close()
