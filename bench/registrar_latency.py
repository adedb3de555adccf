"""How long from `docker run -d` returning to the service being in Consul.

    .venv/bin/python -m bench.registrar_latency [--runs 20]

Starts its own Consul dev agent, uses the running dockerd (or starts one),
runs ``registrar run`` as a subprocess, then for each run starts a busybox
container with ``docker run -d -P -l SERVICE_NAME=...`` (the CLI, as an
operator would) and polls the agent every millisecond until the service is
there, then the catalog (what other nodes and the renderer read). Prints a
table, then one JSON line with medians and p90s in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from tests.support.consul_agent import ConsulAgent
from tests.support.docker_engine import DockerEngine

REGISTRAR = str(Path(sys.executable).parent / "registrar")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def wait_for(predicate, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.001)
    raise TimeoutError("service did not appear")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    docker_cli = shutil.which("docker")
    if not docker_cli:
        sys.exit("bench: the docker CLI is needed (apt-get install docker.io)")

    engine = DockerEngine().start()
    image = engine.busybox_image()
    agent = ConsulAgent(shutil.which("consul") or "/usr/local/bin/consul").start()
    host = f"bench{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.mkdtemp(prefix="registrar-bench-"))
    log = open(log_dir / "registrar.log", "wb")
    daemon = subprocess.Popen([REGISTRAR, "run", "--consul-addr", agent.address, "--hostname", host,
                               "--resync", "60", "--log-level", "info"], stdout=log, stderr=subprocess.STDOUT)
    session = requests.Session()
    names: list[str] = []
    rows = []
    try:
        wait_for(lambda: b"started for host" in (log_dir / "registrar.log").read_bytes(), 15)
        time.sleep(0.5)
        for run in range(args.runs + 1):  # run 0 warms caches and is not counted
            name = f"{host}-{run}"
            names.append(name)
            started = time.monotonic()
            subprocess.run([docker_cli, "run", "-d", "--name", name, "-P", "--expose", "80",
                            "-l", f"SERVICE_NAME={name}", image, "httpd", "-f", "-p", "80", "-h", "/www"],
                           check=True, capture_output=True)
            returned = time.monotonic()
            service_id = f"{host}:{name}:80"
            in_agent = wait_for(lambda: service_id in session.get(f"{agent.url}/v1/agent/services").json())
            in_catalog = wait_for(lambda: session.get(f"{agent.url}/v1/catalog/service/{name}").json() != [])
            if run:
                rows.append({"docker_run": (returned - started) * 1000, "agent": (in_agent - returned) * 1000,
                             "catalog": (in_catalog - returned) * 1000})
    finally:
        for name in names:
            subprocess.run([docker_cli, "rm", "-f", name], capture_output=True)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
        agent.close()
        engine.stop()

    print(f"{'run':>6} {'docker run (ms)':>16} {'-> agent (ms)':>14} {'-> catalog (ms)':>16}")
    for index, row in enumerate(rows, 1):
        print(f"{index:>6} {row['docker_run']:>16.1f} {row['agent']:>14.1f} {row['catalog']:>16.1f}")
    summary = {"runs": len(rows)}
    for key in ("docker_run", "agent", "catalog"):
        values = [row[key] for row in rows]
        summary[f"{key}_median_ms"] = round(statistics.median(values), 1)
        summary[f"{key}_p90_ms"] = round(percentile(values, 0.9), 1)
    for label, suffix in (("median", "median_ms"), ("p90", "p90_ms")):
        print(f"{label:>6} {summary['docker_run_' + suffix]:>16.1f} {summary['agent_' + suffix]:>14.1f} "
              f"{summary['catalog_' + suffix]:>16.1f}")
    print(json.dumps({"bench": "registrar_latency", **summary}))


if __name__ == "__main__":
    main()
