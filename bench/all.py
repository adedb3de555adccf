"""Every bench in turn, then one table of every figure against its target.

    .venv/bin/python -m bench            # what `make bench` runs (about 10 min)
    .venv/bin/python -m bench --quick    # fewer sizes, shorter churn and idle (about 5 min)
    .venv/bin/python -m bench --only e2e,churn --profile /tmp/prof

Each bench runs as its own process (``python -m bench.NAME``), so one that
fails leaves the others running and every bench cleans up after itself; its
output passes through, and its ``BENCH_JSON`` line is collected. dockerd is
started once here if nothing answers, and stopped at the end only then.
The summary ends with one combined ``BENCH_JSON {...}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import check, emit_json, loadavg, print_checks, say
from bench.renderer_scale import GENERAL_TARGETS, TARGETS
from tests.support.docker_engine import DockerEngine

BENCHES = ("e2e", "churn", "registrar", "renderer", "change", "routes", "deploy", "stages", "fleet", "traffic")


def plan(args) -> list[tuple[str, list[str]]]:
    profile = (lambda name: ["--profile", str(args.profile)]) if args.profile else (lambda name: [])
    full = {
        "e2e": ["bench.e2e_latency", "--runs", str(args.runs)],
        "churn": ["bench.churn", "--seconds", str(args.churn_seconds or (20 if args.quick else 60))],
        "registrar": ["bench.registrar_latency", "--runs", str(args.runs),
                      "--containers", str(args.containers or (50 if args.quick else 200))],
        "renderer": ["bench.renderer_scale", "--services", args.sizes or ("100,1000" if args.quick else "100,1000,5000")]
                    + (["--quick"] if args.quick else []),
        "change": ["bench.change_cost", "--services", "1000" if args.quick else "1000,5000",
                   "--changes", "3" if args.quick else "5"],
        "routes": ["bench.routed_once", "--services", "1000", "--runs", "1" if args.quick else "3"],
        "deploy": ["bench.rolling_deploy", "--rounds", "1" if args.quick else "2"],
        # No target: where a change's time goes in the renderer, the evidence for renderer's figures.
        "stages": ["bench.renderer_stages", "--services", "1000" if args.quick else "1000,5000"],
        "fleet": ["bench.fleet_consistency", "--changes", "10" if args.quick else "20"],
        "traffic": ["bench.traffic", "--rounds", "2" if args.quick else "3"],
    }
    chosen = args.only.split(",") if args.only else list(BENCHES)
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        sys.exit(f"bench: unknown bench(es) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHES)}")
    return [(name, full[name] + (profile(name) if name not in ("stages", "deploy", "fleet", "traffic", "change")
                                 else []))
            for name in BENCHES
            if name in chosen]


def run_one(name: str, module_args: list[str]) -> tuple[dict | None, int, float]:
    """Run one bench; its stdout passes through; returns its BENCH_JSON payload."""
    say(f"\n######## {name}: python -m {' '.join(module_args)}")
    started = time.perf_counter()
    payload = None
    process = subprocess.Popen([sys.executable, "-m", *module_args], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in process.stdout:
            if line.startswith("BENCH_JSON "):
                payload = json.loads(line[len("BENCH_JSON "):])
                print(line[:300] + (" ...\n" if len(line) > 300 else ""), end="", flush=True)
            else:
                print(line, end="", flush=True)
        code = process.wait()
    except BaseException:
        process.terminate()  # SIGTERM: the bench's own finally blocks clean up
        process.wait(60)
        raise
    return payload, code, time.perf_counter() - started


def renderer_checks(payload: dict) -> list[dict]:
    rows = []
    for r in payload.get("results", []):
        size = f"renderer {r['services']}x{r['instances']}"
        targets = dict(GENERAL_TARGETS)
        if r["instances"] == 3:
            targets.update(TARGETS.get(r["services"], {}))
        units = {"once_wall_s": "s", "once_before_reload_s": "s", "once_peak_rss_mb": "MB",
                 "change_file_median_ms": "ms", "idle_cpu_pct": "%", "consul_conns": ""}
        for key in ("once_wall_s", "once_before_reload_s", "once_peak_rss_mb", "change_file_median_ms",
                    "idle_cpu_pct", "consul_conns"):
            value = r.get(key)
            if isinstance(value, float):
                value = round(value, 3 if key.endswith("_s") else 1)
            rows.append(check(f"{size}: {key}", value, targets.get(key), units[key]))
        served = r.get("change_served_median_ms")
        rows.append(check(f"{size}: change_served_median_ms", None if served is None else round(served, 1), None))
        dynamic = r.get("dynamic_change_served_median_ms")
        if dynamic is not None:
            rows.append(check(f"{size}: dynamic peers change_served_median_ms", round(dynamic, 1),
                              targets.get("dynamic_change_served_median_ms")))
            rows.append(check(f"{size}: dynamic peers reloads during the changes",
                              r.get("dynamic_reloads_during_changes"), 0, ""))
            rows.append(check(f"{size}: nginx -t without / with the Lua module (a route change's check)",
                              f"{r['nginx_check_ms']:.0f} / {r['dynamic_nginx_check_ms']:.0f}", None))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="renderer sizes 100,1000 with 10 s idle; churn 20 s; 50 containers at start-up")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--runs", type=int, default=20, help="e2e and registrar latency runs (default 20)")
    parser.add_argument("--churn-seconds", type=int, default=None)
    parser.add_argument("--containers", type=int, default=None, help="registrar start-up containers (default 200)")
    parser.add_argument("--sizes", default=None, help="renderer catalog sizes (default 100,1000,5000)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="each bench records its daemons with py-spy into DIR")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed or a bench fails")
    args = parser.parse_args(argv)
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    load_start = loadavg()
    started = time.perf_counter()
    results: dict = {}
    failed: list[str] = []
    engine = None
    try:
        if any(name in ("e2e", "registrar", "deploy") for name, _ in plan(args)):
            engine = DockerEngine().start()
            engine.busybox_image()
        for name, module_args in plan(args):
            payload, code, elapsed = run_one(name, module_args)
            if payload is None or code != 0:
                failed.append(f"{name} (exit {code})")
            if payload is not None:
                payload["elapsed_s"] = round(elapsed, 1)
                results[name] = payload
    finally:
        if engine is not None:
            engine.stop()  # only if started here
            shutil.rmtree(engine.dir, ignore_errors=True)
    load_end = loadavg()

    rows: list[dict] = []
    for name in BENCHES:
        payload = results.get(name)
        if payload is None:
            continue
        if name == "renderer":
            rows.extend(renderer_checks(payload))
        elif name == "stages":
            for r in payload["results"]:
                m = r["median_ms"]
                rows.append(check(f"stages {r['services']}x3: Consul dump / decode / build / render / nginx -t (ms)",
                                  f"{m['consul_serves_node_dump']:.0f} / {m['decode']:.0f} / "
                                  f"{m['from_node_dump']:.0f} / {m['render']:.0f} / {m['nginx_t']:.0f}", None, ""))
        else:
            rows.extend(payload.get("checks", []))
    if "e2e" in results:
        e = results["e2e"]
        rows.insert(0, check("e2e: floor (reload + Consul wake + nginx -t), median", e["floor_ms"], None))
        rows.insert(1, check("e2e: docker run -d itself, median", e["stats"]["docker_run_ms"]["median"], None))
        rows.insert(2, check("e2e: docker run -> routed, p90 / max",
                             f"{e['stats']['run_to_routed_ms']['p90']} / {e['stats']['run_to_routed_ms']['max']}",
                             None))
        rows.insert(4, check("e2e: routed median / floor", e["routed_ratio_to_floor"], None, "x"))
        rows.insert(6, check("e2e: unrouted median / floor", e["unrouted_ratio_to_floor"], None, "x"))
    if "churn" in results:
        c = results["churn"]
        rows.append(check(f"churn: renders / reloads in {c['seconds']:g} s", f"{c['renders']} / {c['reloads']}",
                          None, ""))
        d = c.get("modes", {}).get("dynamic")
        if d:
            rows.append(check(f"churn dynamic peers: renders / reloads / pushes in {c['seconds']:g} s",
                              f"{d['renders']} / {d['reloads']} / {d['pushes']}", None, ""))
    total = round(time.perf_counter() - started, 1)
    print(f"\n\n######## summary: every figure against its target ({total:.0f} s; load average at start "
          f"{load_start}, at end {load_end}; {os.cpu_count()} cores)")
    print_checks("all benches", rows)
    for name, payload in results.items():
        load = f"load {payload.get('load_start', '-')} -> {payload.get('load_end', '-')}" if "load_start" in payload else ""
        print(f"  {name}: {payload['elapsed_s']} s {load}")
    for name in failed:
        print(f"  FAILED: {name}: see its output above")
    missed = [r["figure"] for r in rows if r["pass"] is False]
    print(f"  targets missed: {', '.join(missed) if missed else 'none'}")
    emit_json({"bench": "all", "quick": args.quick, "cores": os.cpu_count(), "elapsed_s": total,
               "load_start": load_start, "load_end": load_end, "failed": failed,
               "summary": rows, "results": results})
    return 1 if args.strict and (missed or failed) else 0


if __name__ == "__main__":
    sys.exit(main())
