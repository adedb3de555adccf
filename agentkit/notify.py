"""systemd's notify protocol, spoken directly: one datagram to $NOTIFY_SOCKET.

Used for ``Type=notify`` units: READY=1 once the daemon does its job (the
first full render or reconciliation, or the decision to keep what is there
while Consul is unreachable), STATUS= lines for ``systemctl status``,
STOPPING=1 on shutdown, and WATCHDOG=1 pings from the main loop. Without
NOTIFY_SOCKET (not under systemd) it does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(message: str, environ=os.environ) -> bool:
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:  # systemd gone (shutdown) or a stale variable: nobody to tell
        return False
    return True


class Watchdog:
    """``WatchdogSec=``: ping systemd from the main loop, at half the interval it expects.

    systemd sets WATCHDOG_USEC (and WATCHDOG_PID, the process meant) when the
    unit has ``WatchdogSec``; a loop that stops pinging is killed and
    restarted. Only the main loop and the bounded waits inside it call
    :meth:`ping`, so a frozen loop stops the pings, never a helper thread.
    """

    def __init__(self, interval: float | None, send=notify):
        self.interval = interval
        self.send = send
        self.last: float | None = None

    @classmethod
    def from_environ(cls, environ=os.environ, send=notify) -> "Watchdog":
        usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
        if not usec or not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
            return cls(None, send)
        return cls(int(usec) / 1e6 / 2, lambda message: send(message, environ))

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def due_in(self, now: float) -> float | None:
        if self.interval is None:
            return None
        return 0.0 if self.last is None else max(0.0, self.last + self.interval - now)

    def ping(self, now: float) -> None:
        if self.interval is not None and (self.last is None or now - self.last >= self.interval):
            self.send("WATCHDOG=1")
            self.last = now
