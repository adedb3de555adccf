"""Capped exponential backoff with jitter, for loops that retry forever.

(tenacity covers bounded retries of one call; a watch loop that must never
give up only needs the next delay, which is this.)
"""

from __future__ import annotations

import random

SAY_EVERY = 10  # a failure that lasts is told at its first try, then every SAY_EVERY-th


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

    @property
    def worth_saying(self) -> bool:
        """Tell the failure just counted? The first of a run, then every ``SAY_EVERY``-th: an outage that
        lasts is said again now and then, never once per retry."""
        return self.failures == 1 or self.failures % SAY_EVERY == 0


def consul_agent_backoff() -> Backoff:
    """How both daemons retry their Consul agent: quickly, and never more than 2 s apart.

    The agent is local (or at least near), a failed request costs it nothing,
    and every second between its return and our next try is a second nginx
    or the catalog lags behind the containers. consul-template's minute-long
    cap suits a remote server farm, not an agent on the same host.
    """
    return Backoff(initial=0.25, cap=2.0)


def failure_backoff() -> Backoff:
    """How a failed template, destination or reload is retried: soon at first, then every 30 s.

    Level-triggered: whatever made it fail (a key written again, a directory
    made writable, a certificate that appeared, nginx restarted) is noticed
    by trying again, not by waiting for an unrelated change. The cap keeps a
    permanent failure cheap: one render, or one ``nginx -t``, per 30 s.
    """
    return Backoff(initial=1.0, cap=30.0)


class Retry:
    """Something that failed, and when to try it again."""

    def __init__(self, backoff: Backoff | None = None):
        self.backoff = backoff or failure_backoff()
        self.at: float | None = None

    @property
    def pending(self) -> bool:
        return self.at is not None

    def failed(self, now: float) -> float:
        """Count one more failure; return the delay until the next try."""
        delay = self.backoff.next()
        self.at = now + delay
        return delay

    def succeeded(self) -> None:
        self.backoff.reset()
        self.at = None

    def due(self, now: float) -> bool:
        return self.at is not None and now >= self.at
