"""What one change costs at fleet size: real Consul, real nginx, loopback only.

    .venv/bin/python -m bench.change_cost [--services 1000,5000] [--changes 5]

For each size, N services tagged ``http`` x 3 instances on a private
one-server Consul (as ``renderer_scale`` registers them), side by side:

* **instance swap -> served, with dynamic peers** (``--dynamic-peers``, nginx
  with the Lua module): one instance of a service moved to a live backend of
  ours, from the Consul write returning to nginx answering from it. No
  reload: the peer table takes it (a patch of the changed pools).
* **new service -> served, in reload mode**: a service registered with one
  live instance, from the Consul write to nginx answering on its host: the
  render, the files, nginx's reload (which validates), its new workers.
  Three ways: the default on an nginx without the Lua module; the previous
  order (``--check-before-reload``: ``nginx -t`` before every reload) on the
  same nginx; and the default on an nginx that loads the Lua module (whose
  0.10.23 makes an SSL context for every location: lua-nginx-module fixed it
  in 0.10.25, "Optimized use of SSL contexts").
* **the renderer's CPU time per change** in each of those (``/proc`` utime +
  stime over the changes, divided by their number).

Targets (medians, this 2-core machine): swap -> served <= 40 ms at 1,000 x 3
and <= 150 ms at 5,000 x 3; new service -> served <= 1.5 s at 5,000 x 3
without the Lua module. Prints a table and one ``BENCH_JSON {...}`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import check, emit_json, loadavg, print_checks, say
from bench.renderer_scale import (CHANGE_TIMEOUT, DOMAIN, NGINX_BINARY, LiveBackend, cpu_seconds, nginx_body,
                                  node_name, parse_sizes, production_consul, register_catalog, renderer_args,
                                  timed_changes, txn, wait_for_log)
from tests.support.nginx_server import Nginx, lua_available
from tests.support.waiting import terminate

TARGETS = {1000: {"swap_dynamic": 40.0}, 5000: {"swap_dynamic": 150.0, "new_reload": 1500.0}}
WAYS = {  # name -> (what it is, nginx with the Lua module, renderer arguments)
    "new_reload": ("new service -> served, reload mode", False, []),
    "new_check_first": ("new service -> served, nginx -t before every reload (previous order)", False,
                        ["--check-before-reload"]),
    "new_reload_lua": ("new service -> served, reload mode, nginx with the Lua module", True, []),
    "swap_dynamic": ("instance swap -> served, dynamic peers", True, ["--dynamic-peers"]),
}


def new_services(agent, nginx: Nginx, count: int, stack) -> list[float]:
    """Register ``count`` new services, one live instance each; ms from the Consul write to nginx serving it."""
    served = []
    with requests.Session() as session:
        for k in range(count):
            backend = LiveBackend(f"bench-new-{k}-{os.urandom(6).hex()}\n")
            stack.callback(backend.close)
            name = f"new-{os.urandom(4).hex()}"
            txn(session, agent, [{"Service": {"Verb": "set", "Node": node_name(1), "Service": {
                "ID": f"{name}-1", "Service": name, "Tags": ["http"], "Address": "127.0.0.1",
                "Port": backend.port}}}])
            written = time.perf_counter()
            deadline = written + CHANGE_TIMEOUT
            while nginx_body(nginx.http_port, f"{name}.{DOMAIN}") != backend.body:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"nginx did not serve the new service {name}")
                time.sleep(0.002)
            served.append((time.perf_counter() - written) * 1000)
            time.sleep(0.5)  # the reload's old workers leave before the next change
    return served


def start_daemon(agent, nginx: Nginx, extra: list[str], log_path: Path, workdir: Path, stack):
    output = nginx.conf_d / "bench.conf"
    output.unlink(missing_ok=True)
    args = renderer_args("run", agent, nginx, output, "info") + extra
    if "--dynamic-peers" in extra:
        args += ["--peers-dir", str(workdir / "peers"), "--var", f"socket_dir={nginx.prefix}"]
    log = stack.enter_context(open(log_path, "wb"))
    daemon = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    stack.callback(terminate, daemon, 10)
    wait_for_log(log_path, "nginx reload confirmed", daemon, 180, f"renderer {' '.join(extra)} did not start")
    time.sleep(1.0)  # the catalog watch starts after the first pass; the first reload's old workers leave
    return daemon


def bench_size(services: int, changes: int, workdir: Path) -> dict:
    result: dict = {"services": services, "instances": 3, "ways": {}}
    with contextlib.ExitStack() as stack:
        agent = production_consul()
        stack.callback(agent.close)
        agent.start()
        register_catalog(agent, services, 3)
        nginx = None
        for way, (what, lua, extra) in WAYS.items():
            if lua and not lua_available():
                result["ways"][way] = {"skipped": "nginx has no Lua module (make deps)"}
                continue
            if nginx is None or nginx.lua != lua:
                if nginx is not None:
                    nginx.close()
                nginx = Nginx(NGINX_BINARY, lua=lua)
                stack.callback(nginx.close)
                nginx.start()
            say(f"[{services}x3] {what}")
            with contextlib.ExitStack() as daemon_stack:
                log_path = workdir / f"{way}-{services}.log"
                daemon = start_daemon(agent, nginx, extra, log_path, workdir / way, daemon_stack)
                reloads = log_path.read_text(errors="replace").count("nginx reload confirmed")
                cpu = cpu_seconds(daemon.pid)
                if way == "swap_dynamic":
                    _, served, _ = timed_changes(agent, nginx, nginx.conf_d / "bench.conf", services, 3, changes,
                                                 changes, daemon_stack, daemon, file_too=False)
                else:
                    served = new_services(agent, nginx, changes, daemon_stack)
                cpu_ms = (cpu_seconds(daemon.pid) - cpu) * 1000 / changes
                text = log_path.read_text(errors="replace")
                result["ways"][way] = {"served_ms": [round(v, 1) for v in served],
                                       "served_median_ms": round(statistics.median(served), 1),
                                       "cpu_ms_per_change": round(cpu_ms, 1),
                                       "reloads": text.count("nginx reload confirmed") - reloads,
                                       "errors": text.count(" ERROR ")}
                say(f"[{services}x3]   served ms: {', '.join(f'{v:.0f}' for v in served)}; renderer CPU "
                    f"{cpu_ms:.0f} ms per change; reloads {result['ways'][way]['reloads']}")
    return result


def rows_of(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        size = f"{r['services']}x3"
        for way, (what, _, _) in WAYS.items():
            figures = r["ways"].get(way, {})
            if "skipped" in figures:
                rows.append(check(f"{size}: {what}", figures["skipped"], None, ""))
                continue
            rows.append(check(f"{size}: {what}, median", figures.get("served_median_ms"),
                              TARGETS.get(r["services"], {}).get(way)))
            rows.append(check(f"{size}:   renderer CPU per change / reloads", f"{figures.get('cpu_ms_per_change')} ms"
                              f" / {figures.get('reloads')}", None, ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=parse_sizes, default=[1000, 5000], help="sizes (default 1000,5000)")
    parser.add_argument("--changes", type=int, default=5, help="timed changes per way and size (default 5)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    load_start = loadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-change-") as workdir:
        for size in args.services:
            results.append(bench_size(size, args.changes, Path(workdir)))
    rows = rows_of(results)
    print_checks(f"what one change costs (load average at start {load_start}, at end {loadavg()})", rows)
    emit_json({"bench": "change_cost", "load_start": load_start, "load_end": loadavg(), "results": results,
               "checks": rows})
    missed = [row for row in rows if row["pass"] is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
