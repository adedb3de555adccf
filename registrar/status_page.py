"""The registrar's status page (``/``): its containers, the services it made, and why anything was skipped.

Server-rendered HTML (``status_page.html.j2`` next to this module), every
value escaped, readable without JavaScript, refreshing itself.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import jinja2

from .status import RegistrarSnapshot

REFRESH_SECONDS = 5
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent)), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def clock(at: float | None) -> str:
    return "-" if at is None else datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def render(snapshot: RegistrarSnapshot) -> str:
    return _ENV.get_template("status_page.html.j2").render(s=snapshot, refresh=REFRESH_SECONDS, clock=clock)
