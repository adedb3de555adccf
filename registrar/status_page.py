"""The registrar's status page (``/``): its containers, the services it made, and why anything was skipped.

``status_page.html.j2`` next to this module, over the daemons' shared frame
(:mod:`agentkit.status_page`).
"""

from __future__ import annotations

from pathlib import Path

from agentkit import status_page

from .status import RegistrarSnapshot

_ENV = status_page.environment(Path(__file__).parent)


def render(snapshot: RegistrarSnapshot) -> str:
    return status_page.render(_ENV, "status_page.html.j2", "registrar", snapshot.hostname, snapshot)
