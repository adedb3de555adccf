"""The blocking-query loop: one thread per distinct query, one stop event each.

Consul's rules (its docs, and consul-template's ``watch/view.go``): send the
last index; a response with the same index is a timeout, not a change; an
index that goes *backwards* means the server's state was reset (a restarted
dev agent, a snapshot restore), so start again from 0 and say so; back off on
errors and reset the backoff on success. After an error the next query is
not blocking (index 0): a Consul that came back with a lower index would
otherwise hold a query carrying the old, higher index for the whole wait.
Identical data wakes nobody: the receiver compares values, the loop only
filters unchanged indexes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from agentkit.backoff import Backoff, consul_agent_backoff
from agentkit.errors import AgentError

log = logging.getLogger("renderer.watch")


@dataclasses.dataclass(frozen=True)
class Update:
    """A watch's news for the main loop."""

    source: str          # "catalog" or "kv"
    data: object = None  # Catalog / KvSnapshot, or None with an error
    index: int = 0
    reset: bool = False  # the index went backwards
    error: str | None = None


class BlockingWatch:
    def __init__(self, source: str, fetch: Callable[[int, float], tuple[int, object]],
                 deliver: Callable[[Update], None], wait: float, start_index: int = 0,
                 backoff: Backoff | None = None):
        self.source, self.fetch, self.deliver, self.wait = source, fetch, deliver, wait
        self.index = start_index
        self.backoff = backoff or consul_agent_backoff()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"watch-{source}", daemon=True)

    def start(self) -> "BlockingWatch":
        self.thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the loop to end; a query in flight ends by itself (daemon thread)."""
        self.stop_event.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _loop(self) -> None:
        resync = False
        while not self.stop_event.is_set():
            try:
                index, data = self.fetch(0 if resync else self.index, self.wait)
            except AgentError as error:
                delay = self.backoff.next()
                if self.backoff.worth_saying:
                    log.warning("%s watch: %s; keeping the last good config, retrying", self.source, error)
                else:
                    log.debug("%s watch: still failing (try %d): %s; next try in %.1fs", self.source,
                              self.backoff.failures, error, delay)
                self.deliver(Update(self.source, error=str(error)))
                resync = True
                self.stop_event.wait(delay)
                continue
            except Exception:  # a bug must not silently end the watch
                log.exception("%s watch: unexpected error", self.source)
                resync = True
                self.stop_event.wait(self.backoff.next())
                continue
            resync = False
            if self.backoff.failures:
                log.info("%s watch: Consul answers again", self.source)
                self.backoff.reset()
            if self.stop_event.is_set():
                return
            if index == self.index:
                continue
            reset = index < self.index
            self.index = max(index, 1)
            self.deliver(Update(self.source, data, index, reset))
