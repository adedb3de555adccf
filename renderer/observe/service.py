"""The renderer's status endpoint: metrics as the loop decides, snapshots it publishes, the pages it serves.

The loop calls :meth:`StatusService.pass_done` and :meth:`publish` once per
pass; the HTTP server's thread (``agentkit.status_server.StatusEndpoint``)
reads only the last published snapshot and the metrics registry (itself
thread-safe). The HTML page is rendered at most once per snapshot and kept,
so a client refreshing it costs one string copy.
"""

from __future__ import annotations

import socket
import time

from prometheus_client import CONTENT_TYPE_LATEST

from agentkit.lifecycle import Lifecycle
from agentkit.status_server import StatusEndpoint, package_version

from renderer.loop_state import PassRecord
from renderer.render.render_pass import PassOutcome
from . import page as status_page
from .metrics import RendererMetrics
from .status import StatusSnapshot

class StatusService:
    def __init__(self, lifecycle: Lifecycle):
        self.metrics = RendererMetrics()
        self.version = package_version()
        self.hostname = socket.gethostname()
        initial = StatusSnapshot(self.version, time.time(), time.time(), False, "not ready: starting", None, 0, None)
        self.endpoint = StatusEndpoint("renderer", lifecycle, lambda s: status_page.render(s, self.hostname),
                                       self.metrics.text, CONTENT_TYPE_LATEST, initial)

    @property
    def snapshot(self) -> StatusSnapshot:
        return self.endpoint.snapshot

    def serve(self, host: str, port: int) -> None:
        self.endpoint.serve(host, port)

    def stop(self) -> None:
        self.endpoint.stop()

    def pass_done(self, outcome: PassOutcome | None, record: PassRecord, change_seen: float | None,
                  now: float) -> None:
        """Counters and histograms for one pass; ``change_seen``: when the change it carries arrived."""
        m = self.metrics
        if outcome is None:
            m.passes.labels("incomplete").inc()
        else:
            m.passes.labels("incomplete" if outcome.missing else "failed" if outcome.failed else "complete").inc()
            for template, result in outcome.renders.items():
                m.renders.labels(template, result).inc()
            result = outcome.result
            if result is not None:
                if result.rejected:
                    m.check_rejections.inc(len(result.rejected))
                if result.reload_error:
                    m.reloads.labels("failed").inc()
                elif result.confirmed:
                    m.reloads.labels("confirmed").inc()
                    m.last_reload_seconds.set(result.reload_ms / 1000)
                    m.last_apply.set(record.at + record.seconds)
                    if change_seen is not None:
                        m.change_to_reload.observe(max(0.0, now - change_seen))
        m.pass_seconds.observe(record.seconds)
        m.last_pass_seconds.set(record.seconds)
        m.last_pass.set(record.at + record.seconds)

    def publish(self, snapshot: StatusSnapshot) -> None:
        self.metrics.publish(snapshot)
        self.endpoint.publish(snapshot)
