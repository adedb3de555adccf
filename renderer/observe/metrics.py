"""The renderer's Prometheus metrics (``/metrics``), named ``renderer_*``.

Counters and histograms move as the loop decides (passes, renders, reloads,
``nginx -t`` refusals, durations); gauges are set from each published
snapshot (Consul reachable, catalog index, instances by state, refusals by
reason, failing templates). The registry is the daemon's own, so nothing of
the Python process's default collectors leaks in twice when tests run
several daemons in one interpreter.

For alerting (README): ``renderer_last_apply_timestamp_seconds`` falling
behind while ``renderer_pending_failures`` is non-zero means nginx is stale;
``increase(renderer_reloads_total{outcome="failed"}[10m]) > 0`` means nginx
refused a reload.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .status import StatusSnapshot, instance_counts

SECOND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class RendererMetrics:
    def __init__(self):
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.passes = Counter("renderer_passes", "Render passes, by outcome: complete, incomplete (data or Consul "
                              "missing), failed (a template, file or reload failed)", ["outcome"],
                              registry=registry)
        self.renders = Counter("renderer_renders", "Template renders, by template and outcome (ok, error)",
                               ["template", "outcome"], registry=registry)
        self.reloads = Counter("renderer_reloads", "nginx reloads, by outcome: confirmed (new workers run the "
                               "files), failed (refused or not confirmed)", ["outcome"], registry=registry)
        self.check_rejections = Counter("renderer_nginx_check_rejections",
                                        "Rendered files nginx -t refused (put back, not applied)", registry=registry)
        self.pass_seconds = Histogram("renderer_pass_duration_seconds", "Duration of a render pass, reload included",
                                      buckets=SECOND_BUCKETS, registry=registry)
        self.change_to_reload = Histogram(
            "renderer_change_to_reload_seconds", "From a catalog change reaching the renderer to nginx confirming "
            "the reload (or, with dynamic peers, the peer table) that carries it", buckets=SECOND_BUCKETS,
            registry=registry)
        self.peer_pushes = Counter("renderer_peer_pushes", "Peer tables pushed to nginx's Lua balancer (dynamic "
                                   "peers), by outcome: confirmed, failed", ["outcome"], registry=registry)
        self.peer_version = Gauge("renderer_peer_table_version", "Version of the peer table nginx confirmed "
                                  "holding (dynamic peers)", registry=registry)
        self.last_pass_seconds = Gauge("renderer_last_pass_duration_seconds", "Duration of the last pass",
                                       registry=registry)
        self.last_reload_seconds = Gauge("renderer_last_reload_duration_seconds",
                                         "Signal to confirmation of the last successful reload", registry=registry)
        self.last_apply = Gauge("renderer_last_apply_timestamp_seconds",
                                "When nginx last confirmed running newly applied files (Unix time)",
                                registry=registry)
        self.last_pass = Gauge("renderer_last_pass_timestamp_seconds", "When the last pass ended (Unix time)",
                               registry=registry)
        self.consul_reachable = Gauge("renderer_consul_reachable", "1 when the last request to Consul was answered",
                                      registry=registry)
        self.catalog_index = Gauge("renderer_catalog_index", "Consul's index of the catalog rendered last",
                                   registry=registry)
        self.instances = Gauge("renderer_instances", "Service instances by state: routed (in nginx), not_passing, "
                               "held (kept by the grace hold while Consul looks reset)", ["state"],
                               registry=registry)
        self.refused = Gauge("renderer_instances_rejected", "Catalog entries left out (action=left_out) or with a "
                              "value withheld (action=withheld), by what was unsafe", ["reason", "action"],
                              registry=registry)
        self.template_failing = Gauge("renderer_template_failing", "1 while the template fails to render",
                                      ["template"], registry=registry)
        self.pending_failures = Gauge("renderer_pending_failures", "Things failing now and retried (templates, "
                                      "files, a reload)", registry=registry)
        self.ready = Gauge("renderer_ready", "1 when /ready answers 200", registry=registry)
        self.refused_by_nginx = Gauge("renderer_services_refused_by_nginx", "Services left out because nginx "
                                      "refused the file with them (the rest applied); tried again when their "
                                      "registration changes", registry=registry)
        self.settings_refused = Gauge("renderer_route_settings_refused", "Route settings in Consul KV refused "
                                      "(a bad value, key or path); the value in force before stays",
                                      registry=registry)
        for outcome in ("complete", "incomplete", "failed"):
            self.passes.labels(outcome)
        for outcome in ("confirmed", "failed"):
            self.reloads.labels(outcome)

    def publish(self, snapshot: StatusSnapshot) -> None:
        """Gauges from a snapshot; what it dropped (a template gone, a reason gone) reads 0 or disappears."""
        self.consul_reachable.set(1 if snapshot.consul_reachable else 0)
        self.catalog_index.set(snapshot.catalog_index)
        self.ready.set(1 if snapshot.ready else 0)
        self.pending_failures.set(len(snapshot.pending))
        self.refused_by_nginx.set(len(snapshot.excluded))
        self.settings_refused.set(len(snapshot.table.kv_refused) if snapshot.table is not None else 0)
        for state, count in instance_counts(snapshot.table, snapshot.catalog, len(snapshot.held)).items():
            self.instances.labels(state).set(count)
        counts: dict[tuple[str, str], int] = {}
        for refusal in snapshot.catalog.refused if snapshot.catalog is not None else ():
            key = (refusal.category, "withheld" if refusal.kept else "left_out")
            counts[key] = counts.get(key, 0) + 1
        _replace(self.refused, {key: count for key, count in counts.items()})
        _replace(self.template_failing, {(t.source,): 1 if t.error else 0 for t in snapshot.templates})

    def text(self) -> bytes:
        return generate_latest(self.registry)


def _replace(gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
    """Set these label sets and remove the others, never clearing first (a scrape may come in between)."""
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for sample in list(gauge.collect()[0].samples):
        labels = tuple(sample.labels[name] for name in gauge._labelnames)
        if labels not in values:
            gauge.remove(*labels)
