"""What nginx did, per route and per instance (pure): the traffic log's lines counted, named by the route table.

With counting on (``--traffic-log``), the default templates mark each
route's locations with ``set $renderer_route <id>`` and give nginx one
buffered access log in the format below, for the http and the stream
block; :mod:`.traffic_log` follows that file and hands its lines here.

Why a buffered access log, and not counters kept inside nginx or a socket
(measured with ``bench/traffic.py``, wrk against nginx on loopback):

* nginx writes the log 64 KiB at a time (``buffer=64k flush=1s``), so a
  request costs it one line formatted into memory; the counting happens in
  the renderer, out of nginx's way. It needs only nginx's stock modules.
* counters in a Lua shared dict (``log_by_lua``) cost every request a few
  locked dict updates inside nginx's workers, and need the Lua module;
* syslog to a unix socket costs a ``sendto`` per request, drops lines
  whenever the reader lags (counts would not be exact), and makes nginx log
  an alert per request while the renderer is down.

Lines, tab-separated (nginx writes ``-`` for an empty value):

    H <route id> <status> <request_time> <upstream_addr> <upstream_status>
      <upstream_connect_time> <upstream_response_time>
    S <server_port> <protocol> <status> <bytes_received> <bytes_sent>
      <upstream_addr> <ssl_preread_server_name>

(A passed-through TLS connection is counted where it reaches its instance,
by its server name; the SNI switch in front logs nothing.)

Only what the current route table knows becomes a label value: a line
whose route id, instance address or listener the table does not hold is not
counted, so nothing a client sends (a path, an unrouted host) can add a
series, and a route or instance that leaves the table leaves the metrics
(:meth:`Traffic.keep`).
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections import Counter
from collections.abc import Iterable

from renderer.routes.model import RouteTable

# Seconds: Prometheus' default buckets, which cover a fast API and a slow upload alike, and two below them
# (a proxied request on a LAN often takes under 5 ms).
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CLASSES = {b"1": "1xx", b"2": "2xx", b"3": "3xx", b"4": "4xx", b"5": "5xx"}
FAILED = "failed"  # an instance nginx could not connect to (or that sent no answer in time)


@dataclasses.dataclass(frozen=True)
class RouteName:
    service: str
    host: str
    path: str


@dataclasses.dataclass(frozen=True)
class Index:
    """What the table names: route ids, instance addresses (with their service and pool), stream listeners."""

    routes: dict[bytes, RouteName]
    instances: dict[tuple[str, str], str]          # (service, "ip:port") -> "stable" | "canary"
    listeners: dict[tuple[bytes, bytes], str]       # (port, b"TCP" | b"UDP") -> service
    passthrough: dict[bytes, str]                   # server name -> service

    @classmethod
    def of(cls, table: RouteTable | None) -> "Index":
        if table is None:
            return cls({}, {}, {}, {})
        routes = {location.id.encode(): RouteName(location.service, host.name, location.path)
                  for host in table.hosts for location in (*host.http, *host.https)}
        instances: dict[tuple[str, str], str] = {}
        for location in table.locations:
            # (An auth service's tries are subrequests, which nginx does not log.)
            for pool, kind in ((location.pool, "stable"), (location.canary, "canary")):
                for server in pool.servers if pool is not None else ():
                    # By the service the request was for: one address may serve two services.
                    instances.setdefault((location.service, server.address), kind)
        listeners = {(str(listener.port).encode(), listener.protocol.upper().encode()): listener.service
                     for listener in table.listeners}
        passthrough = {route.host.encode(): route.service for route in table.passthrough}
        return cls(routes, instances, listeners, passthrough)


@dataclasses.dataclass
class Series:
    """A count with its duration histogram: ``buckets[i]`` counts durations <= ``BOUNDS[i]`` (the last: above)."""

    count: int = 0
    total: float = 0.0
    buckets: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(BOUNDS) + 1))

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.buckets[bisect.bisect_left(BOUNDS, seconds)] += 1

    def copy(self) -> "Series":
        return Series(self.count, self.total, list(self.buckets))

    def minus(self, earlier: "Series | None") -> "Series":
        if earlier is None:
            return self.copy()
        return Series(self.count - earlier.count, self.total - earlier.total,
                      [a - b for a, b in zip(self.buckets, earlier.buckets)])

    def quantile(self, q: float) -> float | None:
        """The q-quantile, interpolated within its bucket as Prometheus' histogram_quantile does."""
        if self.count <= 0:
            return None
        rank, seen, lower = q * self.count, 0, 0.0
        for bound, count in zip((*BOUNDS, float("inf")), self.buckets):
            if seen + count >= rank and count:
                if bound == float("inf"):
                    return BOUNDS[-1]
                return lower + (bound - lower) * (rank - seen) / count
            seen += count
            lower = bound if bound != float("inf") else lower
        return BOUNDS[-1]


@dataclasses.dataclass
class Counts:
    """Everything counted since the start, keyed by raw values from the log (named only when shown)."""

    routes: dict[tuple[bytes, str, str], int] = dataclasses.field(default_factory=Counter)  # (id, pool, class)
    route_times: dict[tuple[bytes, str], Series] = dataclasses.field(default_factory=dict)   # (id, pool)
    # (service, address, pool, class or failed): the instance as the table named it when counted, so an
    # address a new service reuses starts from zero
    upstreams: dict[tuple[str, str, str, str], int] = dataclasses.field(default_factory=Counter)
    upstream_times: dict[tuple[str, str, str], Series] = dataclasses.field(default_factory=dict)
    streams: dict[tuple[bytes, bytes, bytes, str], list[int]] = dataclasses.field(default_factory=dict)
    # ^ (port, protocol, sni, class) -> [connections, bytes received, bytes sent]

    def copy(self) -> "Counts":
        return Counts(Counter(self.routes), {k: s.copy() for k, s in self.route_times.items()},
                      Counter(self.upstreams), {k: s.copy() for k, s in self.upstream_times.items()},
                      {k: list(v) for k, v in self.streams.items()})


def _seconds(text: bytes) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def count_lines(counts: Counts, lines: Iterable[bytes], index: Index) -> int:
    """Add these log lines to ``counts``; those the index does not name are skipped. Returns how many counted."""
    routes, instances = index.routes, index.instances
    counted = 0
    for line in lines:
        fields = line.split(b"\t")
        kind = fields[0]
        if kind == b"H" and len(fields) == 8:
            route = fields[1]
            if route not in routes:
                continue  # the default server, another server, a route that has left the table
            service = routes[route].service
            addresses = fields[4].replace(b" : ", b", ").split(b", ")
            pool = instances.get((service, addresses[-1].decode("ascii", "replace")), "none")  # none: nginx itself
            status = CLASSES.get(fields[2][:1], "other")
            counts.routes[(route, pool, status)] += 1
            series = counts.route_times.get((route, pool))
            if series is None:
                series = counts.route_times[(route, pool)] = Series()
            series.add(_seconds(fields[3]))
            if fields[4] != b"-":
                _count_tries(counts, service, addresses, fields[5], fields[6], fields[7], instances)
            counted += 1
        elif kind == b"S" and len(fields) == 8:
            key = (fields[1], fields[2], fields[7] if fields[7] != b"-" else b"", CLASSES.get(fields[3][:1], "other"))
            if (key[0], key[1]) not in index.listeners and key[2] not in index.passthrough:
                continue
            totals = counts.streams.get(key)
            if totals is None:
                totals = counts.streams[key] = [0, 0, 0]
            totals[0] += 1
            totals[1] += int(fields[4]) if fields[4].isdigit() else 0
            totals[2] += int(fields[5]) if fields[5].isdigit() else 0
            counted += 1
    return counted


def _count_tries(counts: Counts, service: str, addresses: list[bytes], statuses: bytes, connects: bytes,
                 times: bytes, instances: dict) -> None:
    """One outcome per try: nginx lists every instance it tried, in order, with its status and times."""
    statuses_ = statuses.replace(b" : ", b", ").split(b", ")
    connects_ = connects.replace(b" : ", b", ").split(b", ")
    times_ = times.replace(b" : ", b", ").split(b", ")
    for n, raw in enumerate(addresses):
        address = raw.decode("ascii", "replace")
        pool = instances.get((service, address))
        if pool is None:
            continue  # an upstream name ("no live upstreams"), or an instance gone from the table
        connect = connects_[n] if n < len(connects_) else b"-"
        status = statuses_[n] if n < len(statuses_) else b"-"
        # No connect time: nginx never got a connection to it (refused, unreachable, timed out connecting).
        outcome = FAILED if connect == b"-" else CLASSES.get(status[:1], FAILED)
        counts.upstreams[(service, address, pool, outcome)] += 1
        key = (service, address, pool)
        series = counts.upstream_times.get(key)
        if series is None:
            series = counts.upstream_times[key] = Series()
        series.add(_seconds(times_[n]) if n < len(times_) else 0.0)


def keep(counts: Counts, index: Index) -> None:
    """Forget what the index no longer names: a route or instance gone from the table leaves the metrics."""
    def instance(key) -> bool:
        return index.instances.get((key[0], key[1])) == key[2]

    for table, named in ((counts.routes, lambda k: k[0] in index.routes),
                         (counts.route_times, lambda k: k[0] in index.routes),
                         (counts.upstreams, instance), (counts.upstream_times, instance),
                         (counts.streams, lambda k: (k[0], k[1]) in index.listeners or k[2] in index.passthrough)):
        for key in [key for key in table if not named(key)]:
            del table[key]


class Traffic:
    """The counts, shared between the thread that reads the log and those that show them (one lock)."""

    def __init__(self, window: float = 60.0):
        self.lock = threading.Lock()
        self.counts = Counts()
        self.index = Index.of(None)
        self.window = window
        self.history: list[tuple[float, Counts]] = []  # (time, counts then), oldest first, over ``window``
        self.generation = 0  # moves with the history: what the status page shows of the window changed

    def follow(self, table: RouteTable | None) -> None:
        """The route table nginx now runs: what may be counted and named."""
        index = Index.of(table)
        with self.lock:
            self.index = index
            keep(self.counts, index)
            for _, past in self.history:
                keep(past, index)

    def add(self, lines: Iterable[bytes], now: float) -> int:
        with self.lock:
            counted = count_lines(self.counts, lines, self.index)
            if not self.history or now - self.history[-1][0] >= 1.0:
                self.history.append((now, self.counts.copy()))
                self.generation += 1
                while len(self.history) > 2 and now - self.history[1][0] >= self.window:
                    del self.history[0]
            return counted

    def view(self) -> tuple[Index, Counts, tuple[float, Counts] | None]:
        """(index, counts now, (seconds, counts) at the start of the last window) for the page and metrics."""
        with self.lock:
            start = None
            if self.history:
                at, past = self.history[0]
                start = (self.history[-1][0] - at, past)
            return self.index, self.counts.copy(), start


def route_series(index: Index, counts: Counts) -> tuple[dict, dict]:
    """({(service, host, path, pool, status): count}, {(service, host, path, pool): Series}), named by the index."""
    requests: dict[tuple[str, str, str, str, str], int] = {}
    for (route, pool, status), count in counts.routes.items():
        name = index.routes.get(route)
        if name is not None:
            requests[(name.service, name.host, name.path, pool, status)] = count
    times: dict[tuple[str, str, str, str], Series] = {}
    for (route, pool), series in counts.route_times.items():
        name = index.routes.get(route)
        if name is not None:
            times[(name.service, name.host, name.path, pool)] = series
    return requests, times


def upstream_series(index: Index, counts: Counts) -> tuple[dict, dict]:
    """({(service, instance, pool, status): count}, {(service, instance, pool): Series})."""
    return dict(counts.upstreams), dict(counts.upstream_times)


def stream_series(index: Index, counts: Counts) -> tuple[dict, dict]:
    """({(service, status): connections}, {(service, direction): bytes})."""
    connections: dict[tuple[str, str], int] = Counter()
    volume: dict[tuple[str, str], int] = Counter()
    for (port, protocol, name, status), (count, received, sent) in counts.streams.items():
        service = index.passthrough.get(name) or index.listeners.get((port, protocol))
        if service is None:
            continue
        connections[(service, status)] += count
        volume[(service, "received")] += received
        volume[(service, "sent")] += sent
    return connections, volume


def summary(index: Index, counts: Counts, start: tuple[float, Counts] | None) -> dict:
    """The last window, for the status page: per route and per instance, requests a second, the share of 5xx
    (nginx's and the instances' own; for instances, failed connections too), p50 and p99 in seconds."""
    seconds, past = start if start is not None else (0.0, Counts())
    requests_now, times_now = route_series(index, counts)
    requests_then, times_then = route_series(index, past)
    responses_now, upstream_now = upstream_series(index, counts)
    responses_then, upstream_then = upstream_series(index, past)

    def rows(times_now, times_then, counts_now, counts_then, errors):
        shown = []
        for key, series in sorted(times_now.items()):
            window = series.minus(times_then.get(key))
            failed = sum(counts_now.get((*key, status), 0) - counts_then.get((*key, status), 0) for status in errors)
            shown.append({"key": list(key), "requests": window.count,
                          "rate": round(window.count / seconds, 2) if seconds else None,
                          "errors": round(failed / window.count, 4) if window.count else None,
                          "p50": window.quantile(0.5), "p99": window.quantile(0.99)})
        return shown
    return {"window": round(seconds, 1),
            "routes": rows(times_now, times_then, requests_now, requests_then, ("5xx",)),
            "instances": rows(upstream_now, upstream_then, responses_now, responses_then, ("5xx", FAILED))}
