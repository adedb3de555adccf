"""Operator-facing logging: one line per decision, on stderr (journald adds the time).

Two formats (``--log-format``):

* ``text`` (default): ``TIME PROGRAM LEVEL message``;
* ``json``: one object per line, for Loki or ELK: ``time`` (ISO 8601, local,
  with its offset), ``level``, ``logger``, ``message``, and the decision's
  structured fields when the line has them (``STRUCTURED``: the service, its
  instance, the container, the template, the file, a duration ...), plus
  ``error`` with the traceback of an unexpected failure.

A structured field is passed as ``log.info(..., extra={"service": name})``;
the text format shows only the message, which already names it.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
STRUCTURED = ("service", "service_id", "instance", "node", "container", "container_id", "template", "file",
              "duration_ms", "signal", "reason", "status", "serial", "catalog_index", "host", "path")


class JsonFormatter(logging.Formatter):
    def __init__(self, program: str):
        super().__init__()
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "program": self.program,
            "message": record.getMessage(),
        }
        for key in STRUCTURED:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, name: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(name))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries chat at INFO/DEBUG about connections; the operator wants our decisions.
    for noisy in ("urllib3", "docker", "watchdog", "consul", "requests", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
