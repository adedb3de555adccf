"""Operator-facing logging: one line per decision, on stderr (journald adds the time)."""

from __future__ import annotations

import logging
import sys

LEVELS = ("debug", "info", "warning", "error")


def configure(level: str, name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries chat at INFO/DEBUG about connections; the operator wants our decisions.
    for noisy in ("urllib3", "docker", "watchdog", "consul", "requests"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
