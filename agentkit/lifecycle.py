"""A daemon's stop request and liveness, shared by every wait inside its main loop.

The main loop of each daemon blocks in a few bounded places: a render
running in a child process, ``nginx -t``, waiting for nginx to confirm a
reload, a retry delay. Each of those waits in short slices through
:meth:`Lifecycle.wait_slice`, which

* returns at once (raising :class:`Stopping`) once SIGTERM asked the daemon
  to stop, so a stop is never held up by whatever the loop is doing, and
* pings systemd's watchdog, because a bounded wait is progress; only a loop
  frozen outside such a wait stops the pings and gets restarted.

Signal handlers only call :meth:`request_stop` (sets an Event: no lock, no
queue), which is safe from any point of the interrupted main thread.
"""

from __future__ import annotations

import threading
import time

from .notify import Watchdog


class Stopping(Exception):
    """The daemon was asked to stop while the loop was waiting on something."""


class Lifecycle:
    def __init__(self, watchdog: Watchdog | None = None, clock=time.monotonic):
        self.stop_event = threading.Event()
        self.watchdog = watchdog or Watchdog(None)
        self.clock = clock
        self._wakers: list = []

    def request_stop(self) -> None:
        self.stop_event.set()
        for wake in list(self._wakers):
            wake()

    def on_stop(self, wake) -> None:
        """Call ``wake()`` when a stop is requested (say, to unblock a queue wait)."""
        self._wakers.append(wake)

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def check(self) -> None:
        """Raise :class:`Stopping` if a stop was requested; ping the watchdog otherwise."""
        if self.stop_event.is_set():
            raise Stopping()
        self.watchdog.ping(self.clock())

    def wait_slice(self, seconds: float) -> None:
        """Wait at most ``seconds`` (bounded by 0.1 s), then :meth:`check`."""
        self.stop_event.wait(max(0.0, min(seconds, 0.1)))
        self.check()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` in slices; raises :class:`Stopping` as soon as a stop is requested."""
        deadline = self.clock() + seconds
        while (remaining := deadline - self.clock()) > 0:
            self.wait_slice(remaining)
        self.check()
