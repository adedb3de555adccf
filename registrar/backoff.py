"""Capped exponential backoff (pure: the caller sleeps, on its own stop event)."""

from __future__ import annotations


class Backoff:
    def __init__(self, initial: float = 0.5, cap: float = 10.0, factor: float = 2.0):
        self.initial, self.cap, self.factor = initial, cap, factor
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt after one more failure."""
        delay = min(self.cap, self.initial * self.factor ** self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
