"""nginx's traffic as Prometheus series (``renderer_route_*``, ``renderer_upstream_*``, ``renderer_stream_*``).

A collector, not counters updated as lines arrive: at each scrape the
series are made from the counts :mod:`.traffic` holds, named by the route
table nginx runs, so a route or instance that left the table is simply not
there (no label set to remove, none left behind).
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from .traffic import BOUNDS, Series, Traffic, route_series, stream_series, upstream_series

ROUTE_LABELS = ["service", "host", "path", "pool"]
UPSTREAM_LABELS = ["service", "instance", "pool"]


def _histogram(name: str, documentation: str, labels: list[str], series: dict) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for key, values in sorted(series.items()):
        family.add_metric(list(key), _buckets(values), values.total)
    return family


def _buckets(series: Series) -> list[tuple[str, int]]:
    cumulative, shown = 0, []
    for bound, count in zip((*BOUNDS, float("inf")), series.buckets):
        cumulative += count
        shown.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return shown


class TrafficCollector:
    def __init__(self, traffic: Traffic):
        self.traffic = traffic

    def describe(self):
        return []  # the families depend on what was counted; nothing to check at registration

    def collect(self):
        index, counts, _ = self.traffic.view()
        requests, times = route_series(index, counts)
        family = CounterMetricFamily("renderer_route_requests", "Requests nginx answered, by route (service, host, "
                                     "path), the pool that answered (stable, canary, none) and status class",
                                     labels=[*ROUTE_LABELS, "status"])
        for key, count in sorted(requests.items()):
            family.add_metric(list(key), count)
        yield family
        yield _histogram("renderer_route_request_duration_seconds", "Time nginx spent on a request, by route "
                         "and pool", ROUTE_LABELS, times)
        responses, upstream_times = upstream_series(index, counts)
        family = CounterMetricFamily("renderer_upstream_responses", "Tries nginx sent to an instance, by "
                                     "instance (address:port), pool and outcome: its status class, or failed "
                                     "(no connection)", labels=[*UPSTREAM_LABELS, "status"])
        for key, count in sorted(responses.items()):
            family.add_metric(list(key), count)
        yield family
        yield _histogram("renderer_upstream_response_duration_seconds", "Time an instance took to answer a try",
                         UPSTREAM_LABELS, upstream_times)
        connections, volume = stream_series(index, counts)
        family = CounterMetricFamily("renderer_stream_connections", "tcp/udp sessions through nginx's stream "
                                     "listeners (and passed-through TLS), by service and status class, counted "
                                     "when they end", labels=["service", "status"])
        for key, count in sorted(connections.items()):
            family.add_metric(list(key), count)
        yield family
        family = CounterMetricFamily("renderer_stream_bytes", "Bytes of ended stream sessions, by service and "
                                     "direction (received from clients, sent to them)",
                                     labels=["service", "direction"])
        for key, count in sorted(volume.items()):
            family.add_metric(list(key), count)
        yield family
