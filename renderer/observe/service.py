"""The renderer's status endpoint: metrics as the loop decides, snapshots it publishes, the pages it serves.

The loop calls :meth:`StatusService.pass_done` once per pass,
:meth:`StatusService.running` when nginx runs what a pass rendered, and
:meth:`StatusService.publish` whenever what it knows changed; the HTTP
server's thread (``agentkit.status_server.StatusEndpoint``) reads only the
last published snapshot and the metrics registry (itself thread-safe). The
HTML page is rendered at most once per snapshot and kept, so a client
refreshing it costs one string copy.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST

from agentkit.lifecycle import Lifecycle
from agentkit.status_server import Response, StatusEndpoint, package_version

from renderer.catalog.model import Catalog, Instance
from renderer.render.render_pass import PassOutcome
from renderer.routes.model import RouteTable

from . import page as status_page
from .metrics import RendererMetrics
from .certificates import CertificateCollector, ServedCertificates
from .status import LoopState, PassRecord, StatusSnapshot, TemplateStatus, readiness, route_change, route_lines
from .traffic import Traffic, summary
from .traffic_log import Follower, TrafficLog
from .traffic_metrics import TrafficCollector


class StatusService:
    def __init__(self, lifecycle: Lifecycle):
        self.metrics = RendererMetrics()
        self.version = package_version()
        self.hostname = socket.gethostname()
        initial = StatusSnapshot(self.version, time.time(), time.time(), False, "not ready: starting", None, 0, None)
        self.endpoint = StatusEndpoint(
            "renderer", lifecycle, lambda s: status_page.render(s, self.hostname, self._traffic_shown(),
                                                                self.certificates.rows(s.table)),
            self.metrics.text, CONTENT_TYPE_LATEST, initial,
            page_version=lambda: self.traffic.generation if self.traffic is not None else 0)
        self.running_table: RouteTable | None = None   # what nginx runs (None: no template reads routes())
        self.running_catalog: Catalog | None = None
        self.running_lines: set[str] = set()           # ...as route_lines, for the next change's diff
        self.last_change: tuple[tuple[str, ...], float | None] = ((), None)
        self.traffic: Traffic | None = None            # nginx's traffic, when counted (a traffic log)
        self.certificates = ServedCertificates()        # what nginx serves, with their expiry
        self.follower: Follower | None = None

    @property
    def snapshot(self) -> StatusSnapshot:
        return self.endpoint.snapshot

    def serve(self, host: str, port: int, traffic_log: Path | None = None) -> None:
        """The status endpoint; with ``traffic_log``, nginx's traffic counted from it (/metrics, /traffic)."""
        extra = {"/acme-challenges": self.acme_challenges}
        self.metrics.registry.register(CertificateCollector(self.certificates, lambda: self.running_table))
        if traffic_log is not None:
            self.traffic = Traffic()
            self.traffic.follow(self.running_table)
            self.metrics.registry.register(TrafficCollector(self.traffic))
            self.follower = Follower(TrafficLog(traffic_log), self.traffic).start()
            extra["/traffic"] = self.traffic_summary
        self.endpoint.serve(host, port, extra)

    def acme_challenges(self) -> Response:
        """The ACME challenge tokens the configuration nginx runs answers: the fleet's issuer lets the CA
        validate once every renderer's nginx does (renderer.certs.issuer)."""
        tokens = [token for token, _ in self.running_table.challenges] if self.running_table is not None else []
        return Response(200, json.dumps(tokens).encode(), "application/json")

    def _traffic_shown(self) -> dict | None:
        return summary(*self.traffic.view()) if self.traffic is not None else None

    def traffic_summary(self) -> Response:
        """The last minute of traffic per route and instance, as JSON: what the status page shows."""
        return Response(200, json.dumps(self._traffic_shown()).encode(), "application/json")

    def stop(self) -> None:
        self.endpoint.stop()
        if self.follower is not None:
            self.follower.stop()

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
                if result.refused_by_check:
                    m.check_rejections.inc(len(result.refused_by_check))
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

    def running(self, table: RouteTable | None, catalog: Catalog | None) -> None:
        """nginx runs what was rendered from this table and catalog (confirmed, or it needed no change)."""
        if table is self.running_table:
            self.running_catalog = catalog
            return
        if self.traffic is not None:
            self.traffic.follow(table)  # what nginx runs is what may be counted and named
        lines = route_lines(table)
        change = route_change(self.running_lines, lines)
        if change:
            self.last_change = (change, time.time())
        self.running_table, self.running_lines, self.running_catalog = table, lines, catalog

    def publish(self, state: LoopState, pending: dict[str, str], templates: tuple[TemplateStatus, ...],
                held: tuple[Instance, ...] = (), held_until: float | None = None,
                peers: tuple[int | None, str | None, float | None] | None = None,
                excluded: tuple[tuple[str, str, str], ...] = ()) -> None:
        """A snapshot of what the loop knows, for /ready, /metrics' gauges and the status page."""
        ready, reason = readiness(state.first_pass_done, state.consul_reachable, pending, state.running_serial,
                                  state.catalog_index)
        snapshot = StatusSnapshot(
            self.version, state.started, time.time(), ready, reason, state.consul_reachable, state.catalog_index,
            state.running_serial, tuple(reversed(state.passes))[:20], tuple(sorted(pending.items())), templates,
            self.running_table, self.running_catalog, held, held_until, *self.last_change, peers=peers,
            excluded=excluded)
        self.metrics.publish(snapshot)
        self.endpoint.publish(snapshot)
