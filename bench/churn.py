"""Churn: registrations and deregistrations at a steady rate; does quiescence coalesce them?

    .venv/bin/python -m bench.churn [--seconds 60] [--rate 50] [--wait 200ms:2s]

A private one-server Consul and nginx; ``renderer run --wait MIN:MAX`` on the
default http template. A stable base (``--services`` services x 3 instances)
is registered first; then, for ``--seconds``, ``--rate`` registrations and
``--rate`` deregistrations per second go straight to Consul's catalog API
(``/v1/catalog/register`` / ``deregister`` on an external node, one call each,
evenly paced): each registration adds a new instance (a dummy port: nothing
needs to answer) to one of the services, each deregistration removes the
oldest churned instance, from a pool of ``--rate`` instances registered
before the start: each lives about a second.

Measured: renders and nginx reloads (the renderer's ``rendered`` and
``nginx reload confirmed`` log lines), the most reloads in any quiescence window
(target: one), the renderer's CPU from /proc (its own and its reaped
children's: ``nginx -t`` and ``nginx -s reload``), and after the last call
the lag until the rendered file holds exactly the final catalog, which must
then still hold after a quiet MAX.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import check, emit_json, loadavg, log_times, print_checks, say, summarize
from bench.renderer_scale import NGINX_BINARY, count_log, cpu_seconds, node_name, production_consul, renderer_args
from tests.support.nginx_server import Nginx
from tests.support.waiting import terminate

UPSTREAM = re.compile(r"^upstream (\S+) \{(.*?)^\}", re.S | re.M)
SERVER = re.compile(r"^\s*server ([0-9.]+:\d+) ", re.M)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="churn duration (default 60)")
    parser.add_argument("--rate", type=int, default=50, help="registrations/s, and as many deregistrations/s")
    parser.add_argument("--wait", default="200ms:2s", help="the renderer's --wait (default 200ms:2s)")
    parser.add_argument("--services", type=int, default=20, help="stable services, 3 instances each (default 20)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record the renderer with py-spy during the churn (raw collapsed stacks in DIR)")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--log-level", default="info", help="the renderer's (debug shows each wake-up)")
    args = parser.parse_args(argv)
    wait_min, wait_max = parse_wait(args.wait)
    load_start = loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-churn-"))
    result: dict = {"bench": "churn", "seconds": args.seconds, "rate_per_s": args.rate, "wait": args.wait,
                    "load_start": load_start, "notes": []}
    services = [f"churn-{s:03d}" for s in range(args.services)]
    expected: set[tuple[str, str]] = set()
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: None if args.keep_logs else subprocess.run(["rm", "-rf", str(workdir)]))
        agent = production_consul().start()
        stack.callback(agent.close)
        nginx = Nginx(NGINX_BINARY).start()
        stack.callback(nginx.close)
        output = nginx.conf_d / "bench.conf"
        session = stack.enter_context(requests.Session())

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
        daemon = subprocess.Popen(renderer_args("run", agent, nginx, output, args.log_level) + ["--wait", args.wait],
                                  stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        stack.callback(terminate, daemon, 10)
        deadline = time.monotonic() + 30
        while rendered_state(output) != expected or "nginx reload confirmed" not in log_path.read_text(errors="replace"):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"renderer did not render the base: {log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        time.sleep(wait_max + 0.5)
        say(f"[churn] renderer up (pid {daemon.pid}, --wait {args.wait}); {len(expected)} instances (incl. a pool of {args.rate} churned ones); "
            f"churning {args.rate} reg/s + {args.rate} dereg/s for {args.seconds:.0f}s; load {load_start}")
        profiler = None
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(daemon.pid), "--rate", "200",
                 "--format", "raw", "--threads", "--output", str(args.profile / "churn-renderer.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(terminate, profiler, 10)
            time.sleep(1.0)

        # Churn: every 1/(2*rate) s alternately one registration and one deregistration.
        log_offset = len(log_path.read_bytes())
        cpu_start, children_start = cpu_seconds(daemon.pid), children_cpu_seconds(daemon.pid)
        started = time.perf_counter()
        step, ops, late = 1.0 / (2 * args.rate), 0, 0
        calls: list[float] = []  # wall-clock end of each call, to explain each reload
        total = int(args.seconds * 2 * args.rate)
        for n in range(total):
            due = started + n * step
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            elif now - due > 0.1:
                late += 1
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
        # Lag of the final state: the file holds exactly the final catalog.
        deadline = last_call + wait_max + 30
        while rendered_state(output) != final:
            if time.perf_counter() > deadline:
                break
            time.sleep(0.001)
        matched_at = time.perf_counter()
        lag_ms = (matched_at - last_call) * 1000 if rendered_state(output) == final else None
        # ...and it stays so (no late pass undoes it).
        time.sleep(wait_max + 1.0)
        still_correct = rendered_state(output) == final
        cpu_used = cpu_seconds(daemon.pid) - cpu_start
        children_used = children_cpu_seconds(daemon.pid) - children_start
        window_wall = time.perf_counter() - started
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait(30)
        catalog = {(s["ServiceName"], f"{s['ServiceAddress']}:{s['ServicePort']}")
                   for name in services for s in agent.get(f"/v1/catalog/service/{name}")}
        log_text = log_path.read_bytes()[log_offset:].decode(errors="replace")
        counts = count_log(log_text)
        reloads = log_times(log_text, "nginx reload confirmed")
        gaps = [(b - a) * 1000 for a, b in zip(reloads, reloads[1:])]
        windows = reloads_per_window(reloads, calls, wait_min, wait_max)
        result.update(
            ops=ops, ops_per_s=round(ops / churn_elapsed, 1), late_calls=late, churn_elapsed_s=round(churn_elapsed, 2),
            renders=counts["rendered"], reloads=counts["reloads"], warnings=counts["warnings"], errors=counts["errors"],
            expected_reloads_max=int(args.seconds / wait_max) + 2,
            max_reloads_per_window=max(windows, default=0), windows=len(windows),
            reload_gap_ms=summarize(gaps), min_reload_gap_ms=round(min(gaps), 1) if gaps else None,
            renderer_cpu_pct=round(100 * cpu_used / window_wall, 2),
            renderer_children_cpu_pct=round(100 * children_used / window_wall, 2),
            final_lag_ms=None if lag_ms is None else round(lag_ms, 1),
            final_correct=still_correct and rendered_state(output) == catalog,
            final_instances=len(final), catalog_matches_expected=catalog == final)
        if catalog != final:
            result["notes"].append(f"Consul holds {len(catalog)} instances, the bench expected {len(final)}")
        result["notes"].extend(line for line in log_text.splitlines() if " WARNING " in line or " ERROR " in line)
        if daemon.poll() is not None:
            result["notes"].append(f"renderer exited {daemon.returncode}")
        if args.keep_logs:
            say(f"[churn] logs kept in {workdir}")
    result["load_end"] = loadavg()
    result["checks"] = [
        check("churn: max reloads per quiescence window", result["max_reloads_per_window"], 1, ""),
        check("churn: final state correct", result["final_correct"], True, "bool", at_most=False),
        check("churn: lag of the final state (last call -> file)", result["final_lag_ms"], None),
        check("churn: renderer CPU (own)", result["renderer_cpu_pct"], None, "%"),
    ]
    print(f"\nload average at start {load_start}, at end {result['load_end']}")
    print(f"churn: {ops} calls in {churn_elapsed:.1f} s ({result['ops_per_s']}/s, {late} more than 100 ms late), "
          f"renderer --wait {args.wait}")
    print(f"renders (\"rendered\" lines) {result['renders']}, reloads {result['reloads']} "
          f"(at most ~{result['expected_reloads_max']} expected: one per {wait_max:g} s of continuous change)")
    print(f"gap between reloads ms: median {result['reload_gap_ms']['median']}, min {result['min_reload_gap_ms']}; "
          f"{result['windows']} quiescence windows (closed by MAX or by MIN of quiet), "
          f"most reloads in one: {result['max_reloads_per_window']}")
    print(f"renderer CPU over {window_wall:.0f} s: own {result['renderer_cpu_pct']} %, "
          f"its children (nginx -t, reload) {result['renderer_children_cpu_pct']} %")
    print(f"final state: {len(final)} instances; file matched {result['final_lag_ms']} ms after the last call; "
          f"still correct {wait_max + 1:g} s later and equal to Consul's catalog: {result['final_correct']}")
    print_checks("churn (issue 6)", result["checks"])
    for note in result["notes"][:10]:
        print(f"  note: {note}")
    emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
