"""Capped exponential backoff with jitter, for loops that retry forever.

(tenacity covers bounded retries of one call; a watch loop that must never
give up only needs the next delay, which is this.)
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float = 0.25, cap: float = 10.0, factor: float = 2.0, jitter: float = 0.2,
                 rng=random.random):
        self.initial, self.cap, self.factor, self.jitter, self.rng = initial, cap, factor, jitter, rng
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        delay = min(self.cap, self.initial * self.factor ** self.failures)
        self.failures += 1
        return delay * (1 - self.jitter + 2 * self.jitter * self.rng())

    def reset(self) -> None:
        self.failures = 0


def consul_agent_backoff() -> Backoff:
    """How both daemons retry their Consul agent: quickly, and never more than 2 s apart.

    The agent is local (or at least near), a failed request costs it nothing,
    and every second between its return and our next try is a second nginx
    or the catalog lags behind the containers. consul-template's minute-long
    cap suits a remote server farm, not an agent on the same host.
    """
    return Backoff(initial=0.25, cap=2.0)
