"""The registrar's Prometheus metrics (``/metrics``), named ``registrar_*``.

Counters move as the loop acts (Docker events, registrations,
deregistrations, drains); the reconciliation histogram times full
reconciliations; gauges are set from each published snapshot.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .status import RegistrarSnapshot

SECOND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RegistrarMetrics:
    def __init__(self):
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.docker_events = Counter("registrar_docker_events", "Docker container events handled, by action",
                                     ["action"], registry=registry)
        self.registrations = Counter("registrar_registrations", "Service registrations, by outcome (ok, refused)",
                                     ["outcome"], registry=registry)
        self.deregistrations = Counter("registrar_deregistrations",
                                       "Service deregistrations, by outcome (ok, refused)", ["outcome"],
                                       registry=registry)
        self.drains = Counter("registrar_drains", "Containers drained at their stop signal", registry=registry)
        self.reconcile_seconds = Histogram("registrar_reconcile_duration_seconds",
                                           "Duration of a full reconciliation (Docker and Consul read, "
                                           "differences written)", buckets=SECOND_BUCKETS, registry=registry)
        self.services_owned = Gauge("registrar_services_owned",
                                    "This host's registrar-made services in the local Consul agent", registry=registry)
        self.containers = Gauge("registrar_containers", "Containers Docker knows, by state (running, stopped, "
                                "stopping: drained until they exit)", ["state"], registry=registry)
        self.skipped = Gauge("registrar_warnings", "Current warnings about containers' settings (a skipped "
                             "service or a dropped key each)", registry=registry)
        self.docker_reachable = Gauge("registrar_docker_reachable", "1 when Docker answered last",
                                      registry=registry)
        self.consul_reachable = Gauge("registrar_consul_reachable", "1 when Consul answered last",
                                      registry=registry)
        self.ready = Gauge("registrar_ready", "1 when /ready answers 200", registry=registry)
        for outcome in ("ok", "refused"):
            self.registrations.labels(outcome)
            self.deregistrations.labels(outcome)

    def publish(self, snapshot: RegistrarSnapshot) -> None:
        self.services_owned.set(snapshot.services_owned)
        self.docker_reachable.set(1 if snapshot.docker_reachable else 0)
        self.consul_reachable.set(1 if snapshot.consul_reachable else 0)
        self.ready.set(1 if snapshot.ready else 0)
        self.skipped.set(len(snapshot.warnings))
        counts = {"running": 0, "stopped": 0, "stopping": 0}
        for container in snapshot.containers:
            counts["stopping" if container.stopping else "running" if container.running else "stopped"] += 1
        for state, count in counts.items():
            self.containers.labels(state).set(count)

    def text(self) -> bytes:
        return generate_latest(self.registry)
