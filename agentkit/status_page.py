"""The daemons' status pages share one frame: the ready badge, the facts list, the style (``frame.html.j2``).

Each daemon's page extends it (``{% extends "frame.html.j2" %}``) with its
own ``facts`` and ``body`` blocks. Server-rendered HTML, every value
escaped (catalog values are nginx-safe, not HTML-safe), readable without
JavaScript, refreshing itself every ``REFRESH_SECONDS``.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import jinja2

REFRESH_SECONDS = 5


def clock(at: float | None) -> str:
    """A wall-clock time as the pages show it, local; "-" for none."""
    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def environment(directory: Path) -> jinja2.Environment:
    """Templates of ``directory`` (a daemon's page) over the shared frame."""
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(directory)),
                                    jinja2.FileSystemLoader(str(Path(__file__).parent))]),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(env: jinja2.Environment, name: str, program: str, hostname: str, snapshot, **values) -> str:
    return env.get_template(name).render(program=program, hostname=hostname, s=snapshot, refresh=REFRESH_SECONDS,
                                         clock=clock, **values)
