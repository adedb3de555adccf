"""Twenty renderers against the fleet's three Consul servers, ``--consistency default`` vs ``stale``.

The fleet's servers (tests/support/fleet.py, network namespaces on a
bridge) hold a catalog of ``--services`` services x 3; twenty renderers
(``renderer run``, check and reload commands that do nothing: this measures
Consul's side and the renderer's, not nginx's) watch it through the three
agents' HTTP APIs, seven or six each, as renderers on nginx nodes read their
node's agent. Then ``--changes`` catalog changes, one every half second,
first with every renderer on the default consistency, then on ``stale``:

* **RPCs the leader serves** per change (a change is a registration and,
  half a second later, its deregistration; ``consul_rpc_request`` and
  ``consul_rpc_query`` on the leader, from the servers' own Prometheus
  counters): with the default consistency a follower forwards every read
  to the leader; with ``stale`` any server answers from its own state;
* **change -> file**: from the registration returning to each renderer's
  file holding the new instance, over every renderer and change.

    .venv/bin/python -m bench.fleet_consistency [--renderers 20] [--services 200] [--changes 20]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import RENDERER, ROOT, check, emit_json, loadavg, print_checks, say, summarize
from tests.support.fleet import CONSUL_HTTP, Fleet
from tests.support.waiting import terminate, wait_until

TEMPLATE = "{% for s in services() %}{% for i in service(s.name) %}{{ s.name }} {{ i.address }}:{{ i.port }}\n" \
           "{% endfor %}{% endfor %}"
_SAMPLE = re.compile(r"^(consul_rpc_request|consul_rpc_query)(?:\{[^}]*\})? ([0-9.e+]+)$", re.MULTILINE)


def leader_rpcs(node) -> float:
    """The leader's RPC counters, summed (cumulative, from its Prometheus endpoint)."""
    text = requests.get(f"{node.consul_url}/v1/agent/metrics", params={"format": "prometheus"}, timeout=5).text
    return sum(float(value) for _, value in _SAMPLE.findall(text))


def register(node, name: str, port: int) -> None:
    requests.put(f"{node.consul_url}/v1/agent/service/register", timeout=5,
                 json={"Name": name, "ID": f"{name}-{port}", "Port": port, "Address": node.address}).raise_for_status()


def deregister(node, service_id: str) -> None:
    requests.put(f"{node.consul_url}/v1/agent/service/deregister/{service_id}", timeout=5).raise_for_status()


def one_mode(fleet: Fleet, mode: str, renderers: int, changes: int, work: Path) -> dict:
    template = work / "catalog.conf.j2"
    template.write_text(TEMPLATE)
    processes, outputs = [], []
    for index in range(renderers):
        node = fleet.nodes[index % len(fleet.nodes)]
        output = work / f"{mode}-{index}.conf"
        outputs.append(output)
        processes.append(subprocess.Popen(
            [RENDERER, "run", "--consul-addr", f"{node.address}:{CONSUL_HTTP}", "--template", f"{template}:{output}",
             "--check-command", "true", "--reload-command", "true", "--nginx-pid-file", "", "--consistency", mode,
             "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=open(work / f"{mode}-{index}.log", "ab"), env=os.environ))
    try:
        wait_until(lambda: all(path.exists() for path in outputs), 120, interval=0.2,
                   what=f"{renderers} renderers' first files ({mode})")
        leader = fleet.wait_for_leader()
        time.sleep(2)  # let the first passes' reads settle before counting
        before, latencies = leader_rpcs(leader), []
        for change in range(changes):
            marker = 40000 + change
            home = fleet.nodes[change % len(fleet.nodes)]
            started = time.monotonic()
            register(home, f"change-{mode}", marker)
            needle = f":{marker}\n"
            pending = set(outputs)
            while pending and time.monotonic() - started < 30:
                for path in list(pending):
                    if needle in path.read_text():
                        latencies.append((time.monotonic() - started) * 1000)
                        pending.discard(path)
                time.sleep(0.002)
            deregister(home, f"change-{mode}-{marker}")
            time.sleep(0.5)
        rpcs = leader_rpcs(leader) - before
    finally:
        for process in processes:
            terminate(process, 10)
    return {"mode": mode, "leader": leader.name, "leader_rpcs": rpcs, "leader_rpcs_per_change": rpcs / changes,
            "change_to_file_ms": summarize(latencies), "missed": renderers * changes - len(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--renderers", type=int, default=20)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    fleet = Fleet(work / "fleet", log=lambda text: say(f"[fleet] {text}"))
    results = []
    try:
        fleet.start_servers()
        say(f"[fleet] three Consul servers, leader {fleet.wait_for_leader().name}; registering "
            f"{args.services} services x 3")
        for number in range(args.services):
            for port_index, node in enumerate(fleet.nodes):
                register(node, f"svc{number}", 10000 + number * 3 + port_index)
        for mode in ("default", "stale"):
            say(f"[fleet] {args.renderers} renderers, --consistency {mode}, {args.changes} changes")
            results.append(one_mode(fleet, mode, args.renderers, args.changes, work))
            say(f"[fleet] {mode}: {results[-1]}")
    finally:
        fleet.stop()
    default, stale = results
    rows = [
        check("default: RPCs the leader serves per change", round(default["leader_rpcs_per_change"], 1), None, ""),
        check("stale: RPCs the leader serves per change", round(stale["leader_rpcs_per_change"], 1), None, ""),
        check("stale / default leader RPCs", round(stale["leader_rpcs"] / max(default["leader_rpcs"], 1), 2), 0.5,
              "x"),
        check("default: change -> file, median", default["change_to_file_ms"]["median"], None),
        check("stale: change -> file, median", stale["change_to_file_ms"]["median"], None),
        check("default: change -> file, p90", default["change_to_file_ms"]["p90"], None),
        check("stale: change -> file, p90", stale["change_to_file_ms"]["p90"], None),
        check("changes no renderer wrote (both modes)", default["missed"] + stale["missed"], 0, ""),
    ]
    print_checks(f"fleet: {args.renderers} renderers, 3 servers, {args.services} x 3, default vs stale", rows)
    print(f"  leader during default: {default['leader']}, during stale: {stale['leader']}; load "
          f"{load_start} -> {loadavg()}")
    emit_json({"bench": "fleet_consistency", "renderers": args.renderers, "services": args.services,
               "changes": args.changes, "results": results, "checks": rows, "load_start": load_start,
               "load_end": loadavg()})
    return 0 if all(row["pass"] is not False for row in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
