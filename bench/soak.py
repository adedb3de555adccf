"""Soak: containers start and stop at random under both daemons; nginx must never lose the route.

    .venv/bin/python -m bench.soak [--minutes 30] [--containers 12] [--seed N]

Starts a private one-server Consul and a private nginx (tests/support), uses the
running dockerd (or starts one), runs ``registrar run --ip 127.0.0.1 --cleanup``
and ``renderer run`` with the default templates as subprocesses. For the
duration, containers (at most ``--containers`` at once, ports published on
loopback only) are started and stopped, killed or removed at random, under a
few service names, all tagged http. One more container, the anchor, has a
service of its own and is never touched; a probe asks nginx for it every
100 ms, through every reload the churn causes (all services render into one
file). The anchor's service gets no churned instances on purpose: a request
in flight to a container that is being killed fails whatever the proxy does
(the first 30-minute run counted one such ChunkedEncodingError as a lost
route), and the soak measures the loop, not that. Every 10 s the RSS of each
daemon is sampled.

At the end (after letting the loop settle): failed probes of the total,
stale services (in Consul, container not running) and missing ones, stale
upstream servers in the rendered config, each daemon's peak RSS (VmHWM) and
whether its RSS grew (mean of the last third of the samples against the
first third). A table, then one ``BENCH_JSON {...}`` line.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker.errors
import requests

from bench.renderer_scale import production_consul
from tests.support.docker_engine import DockerEngine
from tests.support.nginx_server import Nginx
from tests.support.probe import Probe
from tests.support.registrar_process import RegistrarProcess, owned
from tests.support.renderer_process import RendererDaemon
from tests.support.waiting import wait_until
from tests.support.web_containers import WebContainers

ROOT = Path(__file__).resolve().parents[1]
HTTP_TEMPLATE = ROOT / "templates" / "http" / "services.conf.j2"
STREAM_TEMPLATE = ROOT / "templates" / "stream" / "services.conf.j2"
LABEL = "consul-nginx-sync.bench"  # as the other benches: leftovers found by `docker ps -a --filter label=...`
SAMPLE_EVERY = 10.0
SERVICES = ("a", "b", "c", "d")  # churned
ANCHOR = "anchor"  # one container, never touched, probed
GROWTH_TOLERANCE = 0.10  # +10% and at least 2 MiB between the first and last third counts as growth
GROWTH_FLOOR_KB = 2048


def say(message: str) -> None:
    print(f"{time.strftime('%X')} {message}", file=sys.stderr, flush=True)


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) in kB, from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def grew(samples: list[int]) -> tuple[bool, float, float]:
    """(grew?, mean of the first third, mean of the last third), in kB."""
    if len(samples) < 3:
        return False, float(samples[0]) if samples else 0.0, float(samples[-1]) if samples else 0.0
    third = len(samples) // 3
    first, last = statistics.mean(samples[:third]), statistics.mean(samples[-third:])
    return last > first * (1 + GROWTH_TOLERANCE) and last - first > GROWTH_FLOOR_KB, first, last


def rendered_ports(text: str, names: set[str]) -> dict[str, set[int]]:
    """Upstream servers per service in the rendered http config."""
    ports: dict[str, set[int]] = {}
    for match in re.finditer(r"upstream (\S+) \{(.*?)\}", text, re.S):
        if match.group(1) in names:
            ports[match.group(1)] = {int(p) for p in re.findall(r"server 127\.0\.0\.1:(\d+) ", match.group(2))}
    return ports


class Churn:
    """Starts and stops containers at random, never touching the anchor, never above ``limit``."""

    def __init__(self, web: WebContainers, run_id: str, limit: int, rng: random.Random):
        self.web, self.run_id, self.limit, self.rng = web, run_id, limit, rng
        self.live: dict[str, str] = {}  # container suffix -> service name
        self.counter = 0
        self.counts = {"started": 0, "stop": 0, "kill": 0, "rm": 0, "docker_errors": 0, "port_clashes": 0}

    def service(self, letter: str) -> str:
        return f"{self.run_id}-{letter}"

    def start(self, letter: str, suffix: str | None = None) -> None:
        self.counter += 1
        suffix = suffix or f"{letter}{self.counter}"
        name = self.service(letter)
        for attempt in range(3):
            try:
                self.web.start(suffix, name, body=f"{name} {suffix}", labels={LABEL: self.run_id})
                break
            except docker.errors.APIError as error:
                # Docker's port allocator may pick a loopback port another process holds
                # ("bind: address already in use"); it moves on, so try again.
                if "address already in use" not in str(error) or attempt == 2:
                    raise
                self.counts["port_clashes"] += 1
                self.web.remove(suffix)
        self.live[suffix] = name
        self.counts["started"] += 1

    def step(self) -> None:
        victims = [s for s in self.live if s != "anchor"]
        try:
            if len(self.live) < self.limit and (not victims or self.rng.random() < 0.5):
                self.start(self.rng.choice(SERVICES))
                return
            suffix = self.rng.choice(victims)
            how = self.rng.choice(("stop", "kill", "rm"))
            container = self.web.get(suffix)
            if how == "stop":
                container.stop(timeout=2)
            elif how == "kill":
                container.kill()
            container.remove(force=True)
            del self.live[suffix]
            self.counts[how] += 1
        except (docker.errors.APIError, requests.RequestException) as error:
            self.counts["docker_errors"] += 1
            say(f"docker: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--containers", type=int, default=12, help="at most this many at once (with the anchor)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.containers < 2:
        parser.error("--containers must be at least 2")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    run_id = f"soak{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))

    engine = DockerEngine().start()
    image = engine.busybox_image()
    agent = production_consul().start()
    nginx = Nginx(shutil.which("nginx") or "/usr/sbin/nginx").start()
    web = WebContainers(engine, image, run_id)
    churn = Churn(web, run_id, args.containers, rng)
    domain = "soak.test"
    registrar = renderer = None
    samples: dict[str, list[int]] = {"registrar": [], "renderer": []}
    try:
        renderer = RendererDaemon(
            "--consul-addr", agent.address, "--var", f"domain={domain}", "--var", f"http_port={nginx.http_port}",
            "--var", "listen_address=127.0.0.1", *nginx.renderer_args,
            "--template", f"{HTTP_TEMPLATE}:{nginx.conf_d / 'soak.conf'}",
            "--template", f"{STREAM_TEMPLATE}:{nginx.stream_d / 'soak.conf'}")
        registrar = RegistrarProcess(agent, run_id, ["--ip", "127.0.0.1", "--cleanup", "--resync", "10",
                                                     "--log-level", "info"], workdir / "registrar.log").start()
        daemons = {"registrar": registrar, "renderer": renderer}
        anchor_service = churn.service(ANCHOR)
        churn.start(ANCHOR, "anchor")
        # Ten answers in a row: after `nginx -s reload` old workers answer with the old config for a moment.
        wait_until(lambda: all(nginx.get(f"{anchor_service}.{domain}").status_code == 200 for _ in range(10)), 30,
                   what="anchor routed")
        time.sleep(1)  # and an old worker may still take a new connection with the old config for a moment
        say(f"soak {run_id}: {args.minutes} min, at most {args.containers} containers, seed {seed}, logs in "
            f"{workdir} and {renderer.log_path}")

        started = time.monotonic()
        end = started + args.minutes * 60
        next_sample = started
        with Probe(nginx.http_port, f"{anchor_service}.{domain}", anchor_service) as probe:
            while time.monotonic() < end:
                if time.monotonic() >= next_sample:
                    for name, daemon in daemons.items():
                        if daemon.alive():
                            samples[name].append(memory(daemon.process.pid)["VmRSS"])
                    next_sample += SAMPLE_EVERY
                    if len(samples["registrar"]) % 6 == 1:
                        say(f"{(time.monotonic() - started) / 60:.1f} min: {len(churn.live)} containers, "
                            f"{churn.counts}, probes {len(probe.failures)}/{probe.sent} failed")
                churn.step()
                time.sleep(rng.uniform(0.2, 2.0))
            # Settle: what is running now is what Consul and nginx must end up with.
            settle_started = time.monotonic()
            names = {churn.service(letter) for letter in (ANCHOR, *SERVICES)}

            def ours() -> dict:
                return {sid: s for sid, s in owned(agent, run_id).items() if s["Service"] in names}

            def expected() -> dict[str, tuple[str, int]]:
                return {f"{run_id}:{run_id}-{suffix}:80": (service, web.port(suffix))
                        for suffix, service in churn.live.items()}

            def converged() -> bool:
                want = expected()
                have = {sid: (s["Service"], s["Port"]) for sid, s in ours().items()}
                ports = rendered_ports((nginx.conf_d / "soak.conf").read_text(), names)
                routed = {service: set() for service in names}
                for service, port in want.values():
                    routed[service].add(port)
                return have == want and all(ports.get(n, set()) == routed[n] for n in names if routed[n])

            try:
                wait_until(converged, 30, interval=0.2, what="converged")
            except TimeoutError:
                pass
            settle = time.monotonic() - settle_started
            time.sleep(1)
        want, have = expected(), ours()
        stale = sorted(set(have) - set(want))
        missing = sorted(set(want) - set(have))
        routed_ports = rendered_ports((nginx.conf_d / "soak.conf").read_text(), names)
        live_ports = {port for _, port in want.values()}
        stale_routes = sorted(p for ports in routed_ports.values() for p in ports if p not in live_ports)
        result = {
            "minutes": args.minutes, "max_containers": args.containers, "seed": seed,
            "probes": probe.sent, "failed_probes": len(probe.failures), "failures": probe.failures[:10],
            "containers_started": churn.counts["started"],
            "stopped": churn.counts["stop"], "killed": churn.counts["kill"], "removed": churn.counts["rm"],
            "docker_errors": churn.counts["docker_errors"], "port_clashes": churn.counts["port_clashes"],
            "running_at_end": len(want),
            "stale_services": stale, "missing_services": missing, "stale_routes": stale_routes,
            "settle_s": round(settle, 1),
            "alive": {name: daemon.alive() for name, daemon in daemons.items()},
        }
        for name, daemon in daemons.items():
            peak = memory(daemon.process.pid)["VmHWM"] if daemon.alive() else None
            growth, first, last = grew(samples[name])
            result[name] = {"peak_rss_kb": peak, "rss_first_third_kb": round(first), "rss_last_third_kb": round(last),
                            "rss_grew": growth, "samples": len(samples[name])}
    finally:
        for daemon in (registrar, renderer):
            if daemon is not None:
                daemon.stop()
        web.close()
        nginx.close()
        agent.close()
        engine.stop()  # only stops a dockerd this run started

    rows = [
        ("failed probes", f"{result['failed_probes']} of {result['probes']}"),
        ("containers started / stopped / killed / removed",
         f"{result['containers_started']} / {result['stopped']} / {result['killed']} / {result['removed']}"),
        ("running at the end", result["running_at_end"]),
        ("stale services at the end", len(stale)),
        ("missing services at the end", len(missing)),
        ("stale upstream servers at the end", len(stale_routes)),
        ("settled within", f"{result['settle_s']} s"),
    ]
    for name in ("registrar", "renderer"):
        figures = result[name]
        rows.append((f"{name} peak RSS (VmHWM)", f"{(figures['peak_rss_kb'] or 0) / 1024:.1f} MiB"))
        rows.append((f"{name} RSS first -> last third",
                     f"{figures['rss_first_third_kb'] / 1024:.1f} -> {figures['rss_last_third_kb'] / 1024:.1f} MiB "
                     f"({'GREW' if figures['rss_grew'] else 'flat'}, {figures['samples']} samples)"))
    width = max(len(label) for label, _ in rows)
    print(f"soak {run_id}: {args.minutes} min, seed {seed}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print("BENCH_JSON " + json.dumps({"bench": "soak", **result}, sort_keys=True))
    ok = not (result["failed_probes"] or stale or missing or stale_routes) and all(result["alive"].values())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
