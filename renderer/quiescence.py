"""``--wait MIN:MAX``: render once changes have been quiet for MIN, or MAX after the first.

Pure: the caller passes the time, so tests need no sleeping.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Wait:
    min: float
    max: float

    @property
    def enabled(self) -> bool:
        return self.min > 0


class Quiescence:
    def __init__(self, wait: Wait | None):
        self.wait = wait
        self.first: float | None = None
        self.last: float | None = None

    def changed(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    @property
    def pending(self) -> bool:
        return self.first is not None

    def due_in(self, now: float) -> float | None:
        """Seconds until a render is due (0: now); None when nothing is pending."""
        if self.first is None:
            return None
        if not self.wait or not self.wait.enabled:
            return 0.0
        due = min(self.last + self.wait.min, self.first + self.wait.max)
        return max(0.0, due - now)

    def reset(self) -> None:
        self.first = self.last = None
