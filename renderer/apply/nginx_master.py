"""Did nginx take the new configuration? Its master, its worker generation, its error log.

``nginx -s reload`` only sends SIGHUP to the master and returns; whether the
master then loads the configuration is decided later, inside nginx. A
configuration that ``nginx -t`` accepts can still be refused there: a listen
port another process holds (``bind() ... failed``), a file removed between
the check and the reload. nginx then logs the reason and keeps running the
previous configuration with its previous workers.

So a reload counts as taken only when the master has started a new
generation of worker processes and every worker of the previous generation
has gone or is shutting down (a worker restarted after a crash runs the old
configuration, and the old ones would not be shutting down). It counts as
refused as soon as the master's error log gets an ``[emerg]``, ``[alert]``
or ``[crit]`` line after the signal, and that line is what the operator
reads; or when neither happens within the timeout.

Where the master and its log are: ``nginx_pid_file`` and ``nginx_error_log``
(Debian's defaults: ``/run/nginx.pid``, ``/var/log/nginx/error.log``).
Knowing the master, the renderer also sends the reload signal itself unless
a ``reload_command`` is set (:meth:`NginxMaster.signal_reload`).
An empty ``nginx_pid_file`` turns the confirmation off (nginx in a container
whose PIDs this host does not see): the reload command's success is then
all the renderer knows, and it says so.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
from pathlib import Path

from agentkit.lifecycle import Lifecycle

from renderer.errors import ReloadNotTaken
from .commands import nginx_line

_FATAL = ("[emerg]", "[alert]", "[crit]")
POLL = 0.005


@dataclasses.dataclass(frozen=True)
class Generation:
    """What the master ran just before the reload signal."""

    master: int
    children: frozenset[int]
    workers: frozenset[int]
    log_offset: int


class NginxMaster:
    def __init__(self, pid_file: Path, error_log: Path | None, timeout: float = 30.0,
                 lifecycle: Lifecycle | None = None):
        self.pid_file = Path(pid_file)
        self.error_log = Path(error_log) if error_log else None
        self.timeout = timeout
        self.lifecycle = lifecycle or Lifecycle()

    def before(self) -> Generation | None:
        """The current generation, or None when no running master can be found (yet)."""
        master = self._master()
        if master is None:
            return None
        running = children(master)
        return Generation(master, frozenset(running), frozenset(p for p in running if _is_worker(p)),
                          self._log_size())

    def signal_reload(self, before: Generation | None) -> None:
        """SIGHUP to the master: what ``nginx -s reload`` does, without that command's first step, which
        parses the whole configuration only to find the pid file (a second full parse per reload: a second
        at 5,000 services)."""
        if before is None:
            raise ReloadNotTaken(f"no running nginx master in {self.pid_file}: nothing to reload (nginx not "
                                 "started yet, or nginx_pid_file is not its pid file)")
        try:
            os.kill(before.master, signal.SIGHUP)
        except ProcessLookupError:
            raise ReloadNotTaken(f"nginx's master (pid {before.master}) exited before the reload") from None

    def confirm(self, before: Generation | None) -> None:
        """Return once nginx runs a new worker generation; raise ReloadNotTaken otherwise."""
        if before is None:
            before = self._started_meanwhile()
        clock = self.lifecycle.clock
        deadline = clock() + self.timeout
        offset = before.log_offset
        while True:
            fatal, offset = self._fatal_line(offset)
            if fatal:
                raise ReloadNotTaken(f"nginx refused the new configuration: {fatal}")
            if not _alive(before.master):
                raise ReloadNotTaken(f"nginx's master (pid {before.master}) exited during the reload")
            running = children(before.master)
            if running - before.children and all(
                    p not in running or _shutting_down(p) for p in before.workers):
                return
            if clock() >= deadline:
                raise ReloadNotTaken(f"nginx did not start new workers within {self.timeout:g}s of the reload "
                                     f"signal (master pid {before.master}){self._hint()}")
            self.lifecycle.wait_slice(POLL)

    def _started_meanwhile(self) -> Generation:
        master = self._master()
        if master is None:
            raise ReloadNotTaken(f"cannot confirm the reload: no running nginx master in {self.pid_file} "
                                 "(set nginx_pid_file to nginx's pid file, or to \"\" to skip the confirmation)")
        # nginx started between our look and the signal: whatever runs now read the files on disk.
        return Generation(master, frozenset(), frozenset(), self._log_size())

    def _master(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and _alive(int(text)) else None

    def _log_size(self) -> int:
        if self.error_log is None:
            return 0
        try:
            return self.error_log.stat().st_size
        except OSError:
            return 0

    def _fatal_line(self, offset: int) -> tuple[str | None, int]:
        """The first fatal line logged since ``offset``, and the offset to read from next."""
        if self.error_log is None:
            return None, offset
        try:
            with open(self.error_log, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < offset:  # rotated: read the new file from its start
                    offset = 0
                handle.seek(offset)
                chunk = handle.read()
        except OSError:
            return None, offset
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written is read next time
        for raw in complete.decode("utf-8", errors="replace").splitlines():
            if any(level in raw for level in _FATAL):
                return nginx_line(raw), offset + len(complete)
        return None, offset + len(complete)

    def _hint(self) -> str:
        if self.error_log is None or not self.error_log.exists():
            return f"; its error log {self.error_log} could not be read, which would say why" \
                if self.error_log else ""
        return ""


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan every process's parent
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if stat.rsplit(")", 1)[1].split()[1] == str(pid):
                    found.add(int(entry))
        return found


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_worker(pid: int) -> bool:
    return "worker process" in process_title(pid)


def _shutting_down(pid: int) -> bool:
    return "shutting down" in process_title(pid) or not _alive(pid)


_BIND = re.compile(r"bind\(\) to (\S*):(\d+) failed")


def unbindable(detail: str) -> tuple[str, int] | None:
    """The (address, port) nginx's refusal says it could not bind, if that is what it says."""
    match = _BIND.search(detail)
    if not match:
        return None
    return match[1].strip("[]"), int(match[2])


def port_is_free(address: str, port: int) -> bool:
    """Could nginx bind ``address:port`` now? (A listener of nginx's own counts as taken.)"""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        return True
    except OSError:
        return False
