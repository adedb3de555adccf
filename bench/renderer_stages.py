"""Where one catalog change's time goes, stage by stage, at a given catalog size.

    .venv/bin/python -m bench.renderer_stages [--services 1000,5000] [--changes 6]

No target: the evidence for the renderer's change->file and
change->served figures (``bench.renderer_scale``). On a private Consul agent
with N services x 3 instances (registered as ``renderer_scale`` does), each
change moves one instance, then the renderer's own functions are timed one
after the other, as the daemon chains them on a change:

    Consul serves /v1/internal/ui/nodes -> node_dump.decode -> from_dump.from_node_dump
    -> template render (the default http template) -> file write -> nginx -t

and ``nginx -t`` is timed again on the same vhosts without the per-upstream
``zone`` line, which shows what nginx's own start-up spends on shared zones.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import re
import shlex
import statistics
import subprocess
import time

import requests

from bench.common import emit_json, loadavg, say
from bench.renderer_scale import (DOMAIN, NGINX_BINARY, TEMPLATE, instance_id, node_name,
                                   parse_sizes, production_consul, register_catalog, service_name, txn)
from renderer.catalog.from_dump import from_node_dump
from renderer.catalog import node_dump
from renderer.catalog.fetch import NODE_DUMP
from renderer.wiring import tune_garbage_collector
from renderer.render.api import TemplateData
from renderer.render.loader import TemplateLoader
from tests.support.nginx_server import Nginx

STAGES = ("consul_serves_node_dump", "decode", "from_node_dump", "render", "write", "nginx_t",
          "nginx_t_without_zone_lines")
GC = "gc_during_decode_build_render"  # already inside those three stages, not added to the sum


class CollectorClock:
    """Time Python's cyclic collector spends, through gc.callbacks."""

    def __init__(self):
        self.total, self._started = 0.0, 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


def bench_size(services: int, changes: int) -> dict:
    times: dict[str, list[float]] = {stage: [] for stage in (*STAGES, GC)}
    collector = CollectorClock()
    with contextlib.ExitStack() as stack:
        agent = production_consul().start()
        stack.callback(agent.close)
        nginx = Nginx(NGINX_BINARY, lua=False).start()
        stack.callback(nginx.close)
        register_catalog(agent, services, 3)
        session = stack.enter_context(requests.Session())
        session.headers["Accept-Encoding"] = "identity"  # as the renderer asks its local agent
        loader = TemplateLoader({"domain": DOMAIN, "http_port": str(nginx.http_port), "listen_address": "127.0.0.1"})
        output = nginx.conf_d / "bench.conf"
        check = shlex.split(nginx.check_command)
        previous, size = None, 0
        for k in range(changes + 1):  # change 0 warms up (no previous catalog to reuse) and is not counted
            txn(session, agent, [{"Service": {"Verb": "set", "Node": node_name(1), "Service": {
                "ID": instance_id(1, 1), "Service": service_name(1), "Tags": ["http"],
                "Address": "127.0.0.1", "Port": 30000 + k}}}])
            marks = [time.perf_counter()]
            body = session.get(f"{agent.url}{NODE_DUMP}", timeout=60).content
            marks.append(time.perf_counter())
            collected_before = collector.total
            dump = node_dump.decode(body, previous._parts if previous is not None else ())
            marks.append(time.perf_counter())
            catalog = from_node_dump(dump, previous)
            previous = catalog
            marks.append(time.perf_counter())
            text = loader.render(TEMPLATE, TemplateData(catalog, None)).text
            marks.append(time.perf_counter())
            collected = collector.total - collected_before
            output.write_text(text)
            marks.append(time.perf_counter())
            subprocess.run(check, capture_output=True)
            marks.append(time.perf_counter())
            output.write_text(re.sub(r"^\s*zone .*\n", "", text, flags=re.M))
            started = time.perf_counter()
            subprocess.run(check, capture_output=True)
            marks.append(time.perf_counter() - started + marks[-1])
            size = len(body)
            if k:
                for stage, (a, b) in zip(STAGES, zip(marks, marks[1:])):
                    times[stage].append((b - a) * 1000)
                times[GC].append(collected * 1000)
    medians = {stage: round(statistics.median(values), 1) for stage, values in times.items()}
    return {"services": services, "instances": 3, "node_dump_mb": round(size / 1e6, 2), "median_ms": medians}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=parse_sizes, default=[1000, 5000])
    parser.add_argument("--changes", type=int, default=6)
    args = parser.parse_args(argv)
    tune_garbage_collector()  # as the daemon runs
    load_start = loadavg()
    results = []
    for size in args.services:
        say(f"[stages] {size}x3")
        results.append(bench_size(size, args.changes))
    load_end = loadavg()
    print(f"\nload average at start {load_start}, at end {load_end}")
    print(f"{'stage (median ms)':<31}" + "".join(f"{r['services']:>10}x3" for r in results))
    for stage in (*STAGES, GC):
        print(f"{stage:<31}" + "".join(f"{r['median_ms'][stage]:>12.1f}" for r in results))
    renderer_part = ("decode", "from_node_dump", "render", "write")
    print(f"{'renderer itself (sum)':<31}" + "".join(
        f"{sum(r['median_ms'][s] for s in renderer_part):>12.1f}" for r in results))
    print(f"{'node dump size (MB)':<31}" + "".join(f"{r['node_dump_mb']:>12.1f}" for r in results))
    emit_json({"bench": "renderer_stages", "load_start": load_start, "load_end": load_end, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
