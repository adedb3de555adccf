"""systemd's notify protocol, spoken directly: one datagram to $NOTIFY_SOCKET.

Used for ``Type=notify`` units: READY=1 once the first full render (renderer)
or reconciliation (registrar) is done, STOPPING=1 on shutdown. Without
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
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True
