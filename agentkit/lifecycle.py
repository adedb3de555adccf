"""A daemon's stop request and liveness, shared by every wait inside its main loop.

The main loop of each daemon blocks in a few bounded places: a render
running in a child process, ``nginx -t``, waiting for nginx to confirm a
reload, a retry delay. Each of those waits in short slices through
:meth:`Lifecycle.wait_slice`, which

* returns at once (raising :class:`Stopping`) once SIGTERM asked the daemon
  to stop, so a stop is never held up by whatever the loop is doing, and
* pings systemd's watchdog, because a bounded wait is progress; only a loop
  frozen outside such a wait stops the pings and gets restarted.

The stop path is the same for both daemons and safe in a signal handler.
Python runs a handler in the main thread between two bytecodes, which may be
inside ``threading`` code holding a lock (``Event.wait`` holds its
condition's plain, non-reentrant lock around its checks), so a handler that
takes any lock can deadlock the daemon it is asked to stop. The handler
installed by :meth:`Lifecycle.stop_on` therefore only stores an attribute
and calls the wakers registered with :meth:`on_stop`, each of which must be
reentrant (``queue.SimpleQueue.put`` is; ``queue.Queue.put`` and
``Event.set`` are not). The ``stop_event`` other threads wait on is set
later, from ordinary code: by :meth:`check` (every wait slice) or by
:attr:`stopping`.
"""

from __future__ import annotations

import signal
import threading
import time

from .notify import Watchdog


TICK_EVERY = 5.0      # an idle loop still turns this often, so /health can tell idle from stuck
STUCK_AFTER = 30.0    # a loop that has not turned for this long is reported unhealthy


class Stopping(Exception):
    """The daemon was asked to stop while the loop was waiting on something."""


class Lifecycle:
    def __init__(self, watchdog: Watchdog | None = None, clock=time.monotonic):
        self.stop_event = threading.Event()
        self.watchdog = watchdog or Watchdog(None)
        self.clock = clock
        self.stop_reason = ""
        self.last_tick = clock()  # when the loop last made progress: /health reads it
        self._requested = False  # set by request_stop: a plain store, safe in a signal handler
        self._wakers: list = []

    def request_stop(self, reason: str = "asked to stop") -> None:
        """Ask the loop to stop. Safe in a signal handler: no lock is taken here."""
        if not self._requested:
            self.stop_reason = reason
        self._requested = True
        for wake in tuple(self._wakers):
            wake()

    def stop_on(self, *signals: signal.Signals) -> None:
        """Install the handler for ``signals`` (the main thread only): each asks the loop to stop."""
        for number in signals:
            signal.signal(number, self._on_signal)

    def _on_signal(self, number, _frame) -> None:
        self.request_stop(f"received {signal.Signals(number).name}")  # the loop logs it, not the handler

    def on_stop(self, wake) -> None:
        """Call ``wake()`` when a stop is requested; it runs in a signal handler, so it must be reentrant."""
        self._wakers.append(wake)

    @property
    def stopping(self) -> bool:
        if self._requested and not self.stop_event.is_set():
            self.stop_event.set()  # ordinary code: now the threads waiting on it may learn it
        return self._requested

    def tick_due_in(self, now: float) -> float:
        """Seconds until an idle loop should turn anyway (TICK_EVERY after the last tick)."""
        return max(0.0, self.last_tick + TICK_EVERY - now)

    def health(self) -> tuple[bool, str]:
        """``/health``: does the loop run? (an idle one turns every TICK_EVERY seconds)."""
        age = self.clock() - self.last_tick
        if age > STUCK_AFTER:
            return False, f"unhealthy: the loop has not turned for {age:.0f}s"
        return True, f"ok: the loop turned {age:.1f}s ago"

    def tick(self) -> None:
        """The loop made progress: say so to systemd's watchdog and to ``/health``."""
        self.last_tick = now = self.clock()
        self.watchdog.ping(now)

    def check(self) -> None:
        """Raise :class:`Stopping` if a stop was requested; tick otherwise (a bounded wait is progress)."""
        if self.stopping:
            raise Stopping()
        self.tick()

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
