"""Churn: registrations and deregistrations at a steady rate, in reload mode and with dynamic peers.

    .venv/bin/python -m bench.churn [--seconds 60] [--rate 50] [--wait 200ms:2s] [--modes reload,dynamic]

For each mode, a private one-server Consul and nginx; ``renderer run --wait
MIN:MAX`` on the default http template (``--dynamic-peers`` in dynamic mode).
A stable base (``--services`` services x 3 instances) is registered first;
then, for ``--seconds``, ``--rate`` registrations and ``--rate``
deregistrations per second go straight to Consul's catalog API
(``/v1/catalog/register`` / ``deregister`` on an external node, one call each,
evenly paced): each registration adds a new instance (a dummy port: nothing
needs to answer) to one of the services, each deregistration removes the
oldest churned instance, from a pool of ``--rate`` instances registered
before the start: each lives about a second.

Long-lived connections are what makes reloads expensive: every two seconds of
the churn a client opens a streaming request through nginx to a live backend
and keeps it open to the end (as websockets, gRPC streams and long polls do).
A reload's old workers live until their connections end, so in reload mode
the worker generations pile up; with dynamic peers there should be one.

Measured per mode: renders and nginx reloads (the renderer's ``rendered`` and
``nginx reload confirmed`` log lines), peer-table pushes (``nginx took peer
table``), the most reloads in any quiescence window (target: one), nginx's
worker processes started during the churn and the most alive at once (its
master's children sampled every 100 ms), nginx's RSS and PSS (master and
every worker) at the end of the churn with the long connections still open,
the renderer's CPU from /proc (its own and its reaped children's: ``nginx -t``
and ``nginx -s reload``), and after the last call the lag until nginx's view
holds exactly the final catalog (the rendered file in reload mode; in dynamic
mode the peer table file, which nginx must confirm holding), which must then
still hold after a quiet MAX.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.common import check, emit_json, loadavg, log_times, print_checks, say, summarize
from bench.renderer_scale import (NGINX_BINARY, count_log, cpu_seconds, node_name, production_consul,
                                  renderer_args)
from renderer.apply.nginx_master import children
from renderer.peers.sync import PeerSync
from tests.support.nginx_server import Nginx, lua_available
from tests.support.waiting import terminate

UPSTREAM = re.compile(r"^upstream (\S+) \{(.*?)^\}", re.S | re.M)
SERVER = re.compile(r"^\s*server ([0-9.]+:\d+) ", re.M)
POOL = re.compile(r"^pool (\S+)\n((?:peer .*\n)*)", re.M)
PEER = re.compile(r"^peer (\S+) (\d+) \d+$", re.M)
CHURN_PORT_BASE = 20000


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (500ms, 2s, 1m)")
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


def parse_wait(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    minimum = parse_duration(low)
    return minimum, parse_duration(high) if high else 4 * minimum


def rendered_state(path: Path) -> set[tuple[str, str]] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return {(name, server) for name, body in UPSTREAM.findall(text) for server in SERVER.findall(body)}


def children_cpu_seconds(pid: int) -> float:
    """cutime + cstime: CPU of the children ``pid`` waited for (nginx -t, nginx -s reload)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def reloads_per_window(reloads: list[float], calls: list[float], wait_min: float, wait_max: float) -> list[int]:
    """How many reloads each quiescence window ended with (1 each when quiescence works).

    A window opens with the first change after a pass and closes, with one
    reload, once changes were quiet for MIN or MAX after it opened. So a reload
    that follows the previous one by MAX or more, or the last call by MIN or
    more, closes a window of its own; any other is a second reload in the same
    window. 5% slack: the log line comes after the pass, a few ms late.
    """
    counts: list[int] = []
    previous = None
    for reload in sorted(reloads):
        before = bisect.bisect_left(calls, reload)
        quiet = before == 0 or reload - calls[before - 1] >= 0.95 * wait_min
        long = previous is None or reload - previous >= 0.95 * wait_max
        if quiet or long or not counts:
            counts.append(1)
        else:
            counts[-1] += 1
        previous = reload
    return counts


def peer_state(directory: Path) -> set[tuple[str, str]] | None:
    """The peer table file as (pool, ip:port) pairs: what nginx loads and was pushed (dynamic mode)."""
    try:
        text = (directory / "peers.txt").read_text()
    except FileNotFoundError:
        return None
    return {(name, f"{ip}:{port}") for name, body in POOL.findall(text) for ip, port in PEER.findall(body)}


def nginx_holds_file(directory: Path, socket_path: Path) -> bool:
    """nginx's shared dict holds the table in the file (same digest)."""
    try:
        first = (directory / "peers.txt").read_text().split("\n", 1)[0].split()
        return PeerSync(directory, socket_path).held().digest == first[3]
    except Exception:  # noqa: BLE001 - not yet: the caller polls
        return False


def memory_kb(pids: set[int]) -> tuple[int, int]:
    """Summed VmRSS and Pss (kB) of these processes; PSS shares the master's pages out fairly."""
    rss = pss = 0
    for pid in pids:
        try:
            rss += int(re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1))
            pss += int(re.search(r"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M).group(1))
        except (OSError, AttributeError):
            pass  # exited meanwhile
    return rss, pss


class WorkerSampler:
    """nginx's master's children every 100 ms: workers started, most alive at once."""

    def __init__(self, master: int):
        self.master, self.seen, self.most = master, set(children(master)), 0
        self.initial = set(self.seen)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            alive = children(self.master)
            self.seen |= alive
            self.most = max(self.most, len(alive))

    def close(self) -> dict:
        self.stop.set()
        self.thread.join()
        alive = children(self.master)
        return {"workers_started": len(self.seen - self.initial), "most_workers_alive": self.most,
                "workers_alive_at_end": len(alive), "alive": alive}


class StreamingBackend:
    """Answers every request with a line every half second until the client goes: a long-lived connection."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
                while not self.closing.wait(0.5):
                    connection.sendall(b"tick\n")
            except OSError:
                return

    def close(self) -> None:
        self.closing.set()
        self.listener.close()


class LongClients:
    """Clients of long-lived requests through nginx, each read to the end on its own thread."""

    def __init__(self, port: int, host: str):
        self.port, self.host, self.sockets, self.broken, self.ended = port, host, [], 0, 0
        self.lock = threading.Lock()

    def open(self) -> None:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        client.sendall(f"GET /stream HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        self.sockets.append(client)
        threading.Thread(target=self._drain, args=(client,), daemon=True).start()

    def _drain(self, client: socket.socket) -> None:
        first = True
        client.settimeout(None)
        try:
            while chunk := client.recv(65536):
                if first and not chunk.startswith(b"HTTP/1.1 200"):
                    self.broken += 1
                first = False
        except OSError:
            pass
        with self.lock:
            self.ended += 1

    def still_open(self) -> int:
        """Requests nginx has not ended (their reader saw no end of stream yet)."""
        with self.lock:
            return len(self.sockets) - self.ended

    def close(self) -> None:
        for client in self.sockets:
            client.close()


def run_mode(args, mode: str, wait_min: float, wait_max: float) -> dict:
    """One churn run with its own Consul, nginx and renderer; ``mode`` is ``reload`` or ``dynamic``."""
    dynamic = mode == "dynamic"
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-churn-{mode}-"))
    result: dict = {"mode": mode, "notes": []}
    services = [f"churn-{s:03d}" for s in range(args.services)]
    expected: set[tuple[str, str]] = set()
    peers_dir = workdir / "peers"
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: None if args.keep_logs else subprocess.run(["rm", "-rf", str(workdir)]))
        agent = production_consul().start()
        stack.callback(agent.close)
        nginx = Nginx(NGINX_BINARY, lua=dynamic).start()  # reload mode as on a node without the Lua module
        stack.callback(nginx.close)
        output = nginx.conf_d / "bench.conf"
        socket_path = nginx.prefix / "nginx-renderer-peers.sock"
        session = stack.enter_context(requests.Session())

        def observed() -> set[tuple[str, str]] | None:
            """What nginx routes, as far as files tell: the rendered upstreams, or the peer table."""
            if not dynamic:
                return rendered_state(output)
            return peer_state(peers_dir) if nginx_holds_file(peers_dir, socket_path) else None

        def register(service: str, sid: str, port: int) -> None:
            session.put(f"{agent.url}/v1/catalog/register", timeout=10, json={
                "Node": node_name(1), "Address": "127.0.0.1",
                "Service": {"ID": sid, "Service": service, "Tags": ["http"], "Address": "127.0.0.1", "Port": port},
            }).raise_for_status()
            expected.add((service, f"127.0.0.1:{port}"))

        def deregister(service: str, sid: str, port: int) -> None:
            session.put(f"{agent.url}/v1/catalog/deregister", timeout=10,
                        json={"Node": node_name(1), "ServiceID": sid}).raise_for_status()
            expected.discard((service, f"127.0.0.1:{port}"))

        for s, service in enumerate(services):  # the stable base
            for i in range(3):
                register(service, f"{service}-base-{i}", 10000 + 3 * s + i)
        streaming = StreamingBackend()
        stack.callback(streaming.close)
        register("churn-stream", "churn-stream-1", streaming.port)
        # A pool of ``rate`` churned instances, so each lives about a second and
        # every pass sees a different set (one alternating instance would often
        # leave the file unchanged and hide passes).
        live: collections.deque = collections.deque()
        for n in range(args.rate):
            entry = (services[n % len(services)], f"churn-pool-{n}", CHURN_PORT_BASE + 30000 + n)
            register(*entry)
            live.append(entry)
        log_path = workdir / "renderer.log"
        log_file = stack.enter_context(open(log_path, "wb"))
        extra = ["--dynamic-peers", "--peers-dir", str(peers_dir), "--var", f"socket_dir={nginx.prefix}"] \
            if dynamic else []
        daemon = subprocess.Popen(renderer_args("run", agent, nginx, output, args.log_level) + ["--wait", args.wait]
                                  + extra, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        stack.callback(terminate, daemon, 10)
        deadline = time.monotonic() + 30
        while observed() != expected or "nginx reload confirmed" not in log_path.read_text(errors="replace"):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"renderer did not render the base: {log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        time.sleep(wait_max + 0.5)
        nginx.settled(30)
        say(f"[churn {mode}] renderer up (pid {daemon.pid}, --wait {args.wait}); {len(expected)} instances (incl. a "
            f"pool of {args.rate} churned ones); churning {args.rate} reg/s + {args.rate} dereg/s for "
            f"{args.seconds:.0f}s, a long-lived request opened every 2 s; load {loadavg()}")
        profiler = None
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(daemon.pid), "--rate", "200",
                 "--format", "raw", "--threads", "--output", str(args.profile / f"churn-{mode}-renderer.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(terminate, profiler, 10)
            time.sleep(1.0)

        # Churn: every 1/(2*rate) s alternately one registration and one deregistration.
        log_offset = len(log_path.read_bytes())
        long_clients = LongClients(nginx.http_port, "churn-stream.bench.test")
        stack.callback(long_clients.close)
        sampler = WorkerSampler(nginx.pid())
        cpu_start, children_start = cpu_seconds(daemon.pid), children_cpu_seconds(daemon.pid)
        started = time.perf_counter()
        step, ops, late = 1.0 / (2 * args.rate), 0, 0
        every = max(1, int(2.0 / step))  # one long-lived request per 2 s
        calls: list[float] = []  # wall-clock end of each call, to explain each reload
        total = int(args.seconds * 2 * args.rate)
        for n in range(total):
            due = started + n * step
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            elif now - due > 0.1:
                late += 1
            if n % every == 0:
                long_clients.open()
            if n % 2 == 0 or not live:
                port = CHURN_PORT_BASE + (n // 2) % 30000
                entry = (services[(n // 2) % len(services)], f"churn-{n}", port)
                register(*entry)
                live.append(entry)
            else:
                deregister(*live.popleft())
            calls.append(time.time())
            ops += 1
        last_call = time.perf_counter()
        churn_elapsed = last_call - started
        final = set(expected)
        # Lag of the final state: nginx's view holds exactly the final catalog.
        deadline = last_call + wait_max + 30
        while observed() != final:
            if time.perf_counter() > deadline:
                break
            time.sleep(0.001)
        matched_at = time.perf_counter()
        lag_ms = (matched_at - last_call) * 1000 if observed() == final else None
        # ...and it stays so (no late pass undoes it).
        time.sleep(wait_max + 1.0)
        still_correct = observed() == final
        cpu_used = cpu_seconds(daemon.pid) - cpu_start
        children_used = children_cpu_seconds(daemon.pid) - children_start
        window_wall = time.perf_counter() - started
        workers = sampler.close()
        rss_kb, pss_kb = memory_kb({nginx.pid(), *workers.pop("alive")})
        long_open = long_clients.still_open()
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait(30)
        catalog = {(s["ServiceName"], f"{s['ServiceAddress']}:{s['ServicePort']}")
                   for name in [*services, "churn-stream"] for s in agent.get(f"/v1/catalog/service/{name}")}
        log_text = log_path.read_bytes()[log_offset:].decode(errors="replace")
        counts = count_log(log_text)
        reloads = log_times(log_text, "nginx reload confirmed")
        gaps = [(b - a) * 1000 for a, b in zip(reloads, reloads[1:])]
        windows = reloads_per_window(reloads, calls, wait_min, wait_max)
        result.update(
            ops=ops, ops_per_s=round(ops / churn_elapsed, 1), late_calls=late, churn_elapsed_s=round(churn_elapsed, 2),
            renders=counts["rendered"], reloads=counts["reloads"], warnings=counts["warnings"], errors=counts["errors"],
            pushes=log_text.count("nginx took peer table"),
            expected_reloads_max=int(args.seconds / wait_max) + 2,
            max_reloads_per_window=max(windows, default=0), windows=len(windows),
            reload_gap_ms=summarize(gaps), min_reload_gap_ms=round(min(gaps), 1) if gaps else None,
            renderer_cpu_pct=round(100 * cpu_used / window_wall, 2),
            renderer_children_cpu_pct=round(100 * children_used / window_wall, 2),
            final_lag_ms=None if lag_ms is None else round(lag_ms, 1),
            final_correct=still_correct and observed() == catalog,
            final_instances=len(final), catalog_matches_expected=catalog == final,
            long_requests=len(long_clients.sockets), long_requests_open=long_open,
            long_requests_broken=long_clients.broken,
            nginx_rss_mb=round(rss_kb / 1024, 1), nginx_pss_mb=round(pss_kb / 1024, 1), **workers)
        if catalog != final:
            result["notes"].append(f"Consul holds {len(catalog)} instances, the bench expected {len(final)}")
        result["notes"].extend(line for line in log_text.splitlines() if " WARNING " in line or " ERROR " in line)
        if daemon.poll() is not None:
            result["notes"].append(f"renderer exited {daemon.returncode}")
        if args.keep_logs:
            say(f"[churn {mode}] logs kept in {workdir}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="churn duration per mode (default 60)")
    parser.add_argument("--rate", type=int, default=50, help="registrations/s, and as many deregistrations/s")
    parser.add_argument("--wait", default="200ms:2s", help="the renderer's --wait (default 200ms:2s)")
    parser.add_argument("--services", type=int, default=20, help="stable services, 3 instances each (default 20)")
    parser.add_argument("--modes", default="reload,dynamic",
                        help="reload, dynamic (--dynamic-peers) or both, in this order (default both)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record the renderer with py-spy during the churn (raw collapsed stacks in DIR)")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--log-level", default="info", help="the renderer's (debug shows each wake-up)")
    args = parser.parse_args(argv)
    wait_min, wait_max = parse_wait(args.wait)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"reload", "dynamic"}:
        parser.error(f"--modes: reload and/or dynamic, not {args.modes!r}")
    load_start = loadavg()
    result: dict = {"bench": "churn", "seconds": args.seconds, "rate_per_s": args.rate, "wait": args.wait,
                    "load_start": load_start, "notes": []}
    runs: dict[str, dict] = {}
    for mode in modes:
        if mode == "dynamic" and not lua_available():
            result["notes"].append("dynamic mode not measured: nginx has no Lua module (make deps)")
            continue
        runs[mode] = run_mode(args, mode, wait_min, wait_max)
    result["load_end"] = loadavg()
    result["modes"] = runs
    # The reload mode's figures stay at the top level, where bench.all and older runs read them.
    result.update({key: value for key, value in runs.get("reload", {}).items() if key not in ("mode", "notes")})
    checks = []
    if "reload" in runs:
        r = runs["reload"]
        checks += [
            check("churn: max reloads per quiescence window", r["max_reloads_per_window"], 1, ""),
            check("churn: final state correct", r["final_correct"], True, "bool", at_most=False),
            check("churn: lag of the final state (last call -> file)", r["final_lag_ms"], None),
            check("churn: renderer CPU (own)", r["renderer_cpu_pct"], None, "%"),
        ]
    if "dynamic" in runs:
        d = runs["dynamic"]
        checks += [
            check("churn dynamic peers: reloads", d["reloads"], 0, ""),
            check("churn dynamic peers: final state correct (peer table nginx confirmed)", d["final_correct"], True,
                  "bool", at_most=False),
            check("churn dynamic peers: lag of the final state (last call -> nginx holds it)", d["final_lag_ms"],
                  None),
            check("churn dynamic peers: renderer CPU (own)", d["renderer_cpu_pct"], None, "%"),
        ]
    for mode, r in runs.items():
        checks += [
            check(f"churn {mode}: nginx worker processes started / most alive at once",
                  f"{r['workers_started']} / {r['most_workers_alive']}", None, ""),
            check(f"churn {mode}: nginx RSS / PSS at the end (master + workers)",
                  f"{r['nginx_rss_mb']} / {r['nginx_pss_mb']}", None, "MB"),
        ]
    result["checks"] = checks
    print(f"\nload average at start {load_start}, at end {result['load_end']}")
    print(f"churn: {args.rate} registrations/s and as many deregistrations for {args.seconds:g} s per mode, "
          f"renderer --wait {args.wait}, one long-lived request opened every 2 s and held to the end")
    print_modes(runs, wait_max)
    print_checks("churn", checks)
    for mode, r in runs.items():
        for note in r["notes"][:10]:
            print(f"  note ({mode}): {note}")
    for note in result["notes"]:
        print(f"  note: {note}")
    emit_json(result)
    return 0


def print_modes(runs: dict[str, dict], wait_max: float) -> None:
    """One column per mode, side by side."""
    rows = [
        ("calls (per s; > 100 ms late)", lambda r: f"{r['ops']} ({r['ops_per_s']}/s; {r['late_calls']})"),
        ("renders / nginx reloads", lambda r: f"{r['renders']} / {r['reloads']}"),
        ("peer table pushes (no reload)", lambda r: str(r["pushes"])),
        ("most reloads in one quiescence window", lambda r: str(r["max_reloads_per_window"])),
        ("nginx workers started during the churn", lambda r: str(r["workers_started"])),
        ("nginx workers alive: most at once / at the end", lambda r: f"{r['most_workers_alive']} / "
                                                                      f"{r['workers_alive_at_end']}"),
        ("nginx RSS / PSS at the end", lambda r: f"{r['nginx_rss_mb']} / {r['nginx_pss_mb']} MB"),
        ("long-lived requests still open / broken", lambda r: f"{r['long_requests_open']} of {r['long_requests']} "
                                                              f"/ {r['long_requests_broken']}"),
        ("renderer CPU own / its children", lambda r: f"{r['renderer_cpu_pct']} / {r['renderer_children_cpu_pct']} %"),
        ("final state: lag after the last call", lambda r: f"{r['final_lag_ms']} ms"),
        (f"final state still correct {wait_max + 1:g} s later", lambda r: str(r["final_correct"])),
    ]
    modes = list(runs)
    width = max(len(label) for label, _ in rows)
    cells = {mode: [value(runs[mode]) for _, value in rows] for mode in modes}
    widths = {mode: max(len(mode), *(len(c) for c in cells[mode])) for mode in modes}
    print(f"{'':{width}}  " + "  ".join(f"{mode:>{widths[mode]}}" for mode in modes))
    for i, (label, _) in enumerate(rows):
        print(f"{label:{width}}  " + "  ".join(f"{cells[mode][i]:>{widths[mode]}}" for mode in modes))


if __name__ == "__main__":
    raise SystemExit(main())
