"""End to end: `docker run` -> routed by nginx, and `docker rm -f` -> no longer routed.

    .venv/bin/python -m bench.e2e_latency [--runs 20] [--floor-samples 10]

Both daemons run as operators run them, on a private one-server Consul and a
private nginx: ``registrar run --ip 127.0.0.1`` on the machine's dockerd, and
``renderer run`` on the default templates (``templates/http``, ``templates/stream``).

Each run starts a busybox httpd container answering a body of its own
(``-l SERVICE_NAME=<unique> -l SERVICE_TAGS=http --expose 80 -P``) and times,
from ``docker run -d`` returning, the first request through nginx (Host
NAME.bench.test) answered with that body. Then it times, from ``docker rm -f``
returning, until the upstream's server line is gone from the rendered file
and nginx answers that Host with 404 from the default server the http
template renders, which only the reloaded config does: a dead container
alone gives 502.

The floor is measured in the same run: (a) ``nginx -s reload`` -> the new
config answering, (b) a Consul agent registration -> a blocking query on
``/v1/internal/ui/nodes`` (the renderer's) returning, (c) ``nginx -t`` on the
rendered config. floor = a + b + c (medians).

The daemons' log lines (``registered``, ``deregistered``, ``nginx reload confirmed``)
give each run's breakdown: registrar, then renderer pass, then nginx.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from bench.common import (LABEL, REGISTRAR, RENDERER, ROOT, DockerGone, Engines, check, docker, emit_json, loadavg,
                          log_times, print_checks, say, summarize)
from bench.renderer_scale import NGINX_BINARY, count_log, nginx_body, production_consul
from tests.support.consul_agent import ConsulAgent
from tests.support.daemon_process import DaemonProcess
from tests.support.nginx_server import Nginx

DOMAIN = "bench.test"
TIMEOUT = 30.0


def status_body(port: int, host: str) -> tuple[int | None, bytes | None]:
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None, None
    finally:
        connection.close()


def poll(predicate, what: str, timeout: float = TIMEOUT, interval: float = 0.001) -> float:
    """Poll until ``predicate()``; return the time.perf_counter() it held."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(interval)
    return time.perf_counter()


# ---------------------------------------------------------------- the floor

def floor_reload(nginx: Nginx, samples: int) -> list[float]:
    """ms from `nginx -s reload` starting to a changed trivial vhost answering its new body."""
    conf = nginx.conf_d / "zz-bench-floor.conf"
    host = f"floor.{DOMAIN}"
    template = ("server {{ listen 127.0.0.1:{port}; server_name {host}; "
                "location / {{ return 200 \"floor-{n}\\n\"; }} }}\n")
    times = []
    try:
        for n in range(samples + 1):  # n = 0 installs the vhost, not timed
            conf.write_text(template.format(port=nginx.http_port, host=host, n=n))
            started = time.perf_counter()
            subprocess.run(shlex.split(nginx.reload_command), check=True, capture_output=True)
            answered = poll(lambda: nginx_body(nginx.http_port, host) == f"floor-{n}\n".encode(), "floor reload")
            if n:
                times.append((answered - started) * 1000)
            time.sleep(0.2)  # old workers finish before the next reload
    finally:
        conf.unlink(missing_ok=True)
        subprocess.run(shlex.split(nginx.reload_command), capture_output=True)
    return times


def floor_consul_wake(agent: ConsulAgent, samples: int) -> list[float]:
    """ms from an agent registration starting to a blocking node-dump query returning."""
    times = []
    with requests.Session() as session, requests.Session() as writer:
        for n in range(samples):
            index = session.get(f"{agent.url}/v1/internal/ui/nodes", timeout=10).headers["X-Consul-Index"]
            returned = {}

            def block():
                session.get(f"{agent.url}/v1/internal/ui/nodes", params={"index": index, "wait": "10s"}, timeout=15)
                returned["at"] = time.perf_counter()

            waiter = threading.Thread(target=block)
            waiter.start()
            time.sleep(0.05)  # the query is parked in Consul
            started = time.perf_counter()
            writer.put(f"{agent.url}/v1/agent/service/register",
                       json={"Name": "bench-floor", "ID": f"bench-floor-{n}", "Port": 9}, timeout=10).raise_for_status()
            waiter.join(15)
            if "at" in returned:
                times.append((returned["at"] - started) * 1000)
            writer.put(f"{agent.url}/v1/agent/service/deregister/bench-floor-{n}", timeout=10)
            time.sleep(0.05)
    return times


def floor_check(nginx: Nginx, samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        subprocess.run(shlex.split(nginx.check_command), check=True, capture_output=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


# ---------------------------------------------------------------- the runs

def one_run(image: str, run_id: str, name: str, nginx: Nginx, output: Path) -> dict:
    body = f"{name}-{os.urandom(4).hex()}"
    host = f"{name}.{DOMAIN}"
    # busybox httpd serves /tmp/index.html, which holds this run's own body.
    command = ["run", "-d", "--name", name, "-l", f"{LABEL}={run_id}", "-l", f"SERVICE_NAME={name}",
               "-l", "SERVICE_TAGS=http", "--expose", "80", "-P", image,
               "sh", "-c", f"echo {body} > /tmp/index.html && exec httpd -f -p 80 -h /tmp"]
    started = time.perf_counter()
    docker(*command)
    returned, returned_wall = time.perf_counter(), time.time()
    routed = poll(lambda: nginx_body(nginx.http_port, host) == f"{body}\n".encode(), f"{name} routed")
    ports = docker("port", name, "80/tcp")
    port = int(ports.split()[0].rsplit(":", 1)[1])
    marker = f"server 127.0.0.1:{port} "
    if marker not in output.read_text():
        raise RuntimeError(f"{name} answers but {marker!r} is not in {output}")
    time.sleep(0.3)  # let the pass settle before the removal

    rm_started = time.perf_counter()
    docker("rm", "-f", name)
    rm_returned, rm_returned_wall = time.perf_counter(), time.time()
    file_gone = poll(lambda: marker not in output.read_text(), f"{name} out of the file")
    # The reloaded config has no vhost for this name: the default server answers.
    unrouted = poll(lambda: status_body(nginx.http_port, host)[0] == 404, f"{name} unrouted")
    return {"name": name, "port": port,
            "docker_run_ms": (returned - started) * 1000,
            "run_to_routed_ms": (routed - returned) * 1000,
            "docker_rm_ms": (rm_returned - rm_started) * 1000,
            "rm_to_file_ms": (file_gone - rm_returned) * 1000,
            "rm_to_unrouted_ms": (max(unrouted, file_gone) - rm_returned) * 1000,
            "rm_start_to_unrouted_ms": (max(unrouted, file_gone) - rm_started) * 1000,
            "_returned_wall": returned_wall, "_rm_returned_wall": rm_returned_wall}


def breakdown(rows: list[dict], registrar_log: str, renderer_log: str) -> None:
    """From the daemons' logs (ms resolution): when the registrar acted and nginx reloaded."""
    reloads = log_times(renderer_log, "nginx reload confirmed")
    for row in rows:
        registered = log_times(registrar_log, f"registered {row['name']} ")
        deregistered = log_times(registrar_log, f"deregistered {row['name']} ")
        if registered:
            row["run_to_registered_ms"] = (registered[0] - row["_returned_wall"]) * 1000
            after = [t for t in reloads if t >= registered[0]]
            if after:
                row["registered_to_reload_ok_ms"] = (after[0] - registered[0]) * 1000
        if deregistered:
            row["rm_to_deregistered_ms"] = (deregistered[0] - row["_rm_returned_wall"]) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed runs (one more warms up; default 20)")
    parser.add_argument("--floor-samples", type=int, default=10)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record both daemons with py-spy during the runs (raw collapsed stacks in DIR)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    load_start = loadavg()
    run_id = f"e2e{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    rows: list[dict] = []
    result: dict = {"bench": "e2e_latency", "run_id": run_id, "load_start": load_start, "notes": []}
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: None if args.keep_logs else subprocess.run(["rm", "-rf", str(workdir)]))
        engines = Engines()
        stack.callback(engines.stop)  # stops dockerd only if this bench started it
        image = engines.current.busybox_image()
        agent = production_consul().start()
        stack.callback(agent.close)
        nginx = Nginx(NGINX_BINARY, lua=False).start()
        stack.callback(nginx.close)
        stack.callback(engines.remove_labelled, run_id)
        output = nginx.conf_d / "services.conf"

        registrar = DaemonProcess([REGISTRAR, "run", "--consul-addr", agent.address, "--hostname", run_id,
                                   "--ip", "127.0.0.1", "--resync", "60", "--log-level", "info"],
                                  workdir / "registrar.log")
        stack.callback(registrar.stop)
        renderer = DaemonProcess([RENDERER, "run", "--consul-addr", agent.address,
                                  "--template-dir", f"{ROOT}/templates/http:{nginx.conf_d}",
                                  "--template-dir", f"{ROOT}/templates/stream:{nginx.stream_d}",
                                  "--var", f"domain={DOMAIN}", "--var", f"http_port={nginx.http_port}",
                                  "--var", "listen_address=127.0.0.1",
                                  *nginx.renderer_args,
                                  "--log-level", "info"], workdir / "renderer.log")
        stack.callback(renderer.stop)
        registrar.wait_for_log("started for host", 20)
        renderer.wait_for_log("watching", 20)
        time.sleep(1.0)  # first passes of both daemons done; watches parked
        say(f"[e2e] daemons up (registrar pid {registrar.process.pid}, renderer pid {renderer.process.pid}); "
            f"load {load_start}")
        profilers = []
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for label, daemon in (("registrar", registrar), ("renderer", renderer)):
                profiler = subprocess.Popen(
                    [str(Path(REGISTRAR).parent / "py-spy"), "record", "--pid", str(daemon.process.pid),
                     "--rate", "500", "--format", "raw", "--threads", "--idle",
                     "--output", str(args.profile / f"e2e-{label}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                profilers.append(profiler)
                stack.callback(lambda p=profiler: p.poll() is None and (p.kill(), p.wait()))
            time.sleep(1.0)

        n, attempt = 0, 0
        while n <= args.runs:  # run 0 warms caches and is not counted
            attempt += 1
            try:
                row = one_run(image, run_id, f"{run_id}-{attempt}", nginx, output)
            except DockerGone as error:
                if engines.restarts >= 3:
                    raise
                result["notes"].append(f"run {n}: {error}; run again once dockerd answered and the registrar reconnected")
                before = registrar.log.count("reconnected")
                engines.again()
                with contextlib.suppress(TimeoutError):
                    poll(lambda: registrar.log.count("reconnected") > before, "registrar reconnect", 60, 0.05)
                time.sleep(1.0)
                continue
            if n:
                rows.append(row)
            say(f"[e2e] run {n}: docker run {row['docker_run_ms']:.0f} ms, ->routed {row['run_to_routed_ms']:.0f} ms; "
                f"rm -f {row['docker_rm_ms']:.0f} ms, ->unrouted {row['rm_to_unrouted_ms']:.0f} ms")
            time.sleep(0.3)
            n += 1
        for profiler in profilers:
            profiler.send_signal(2)
            profiler.wait(30)

        say("[e2e] measuring the floor")
        reload_ms = floor_reload(nginx, args.floor_samples)
        wake_ms = floor_consul_wake(agent, args.floor_samples)
        check_ms = floor_check(nginx, args.floor_samples)
        breakdown(rows, registrar.log, renderer.log)
        result["registrar_log"] = count_log(registrar.log)
        result["renderer_log"] = count_log(renderer.log)
        for daemon, label in ((registrar, "registrar"), (renderer, "renderer")):
            if not daemon.alive():
                result["notes"].append(f"{label} exited {daemon.process.returncode}")
            odd = [line for line in daemon.log.splitlines() if " WARNING " in line or " ERROR " in line]
            result["notes"].extend(f"{label}: {line}" for line in odd[:5])
        if args.keep_logs:
            say(f"[e2e] logs kept in {workdir}")

    result["load_end"] = loadavg()
    stats = {key: summarize([row[key] for row in rows if key in row])
             for key in ("docker_run_ms", "run_to_routed_ms", "docker_rm_ms", "rm_to_file_ms", "rm_to_unrouted_ms",
                         "rm_start_to_unrouted_ms", "run_to_registered_ms", "registered_to_reload_ok_ms",
                         "rm_to_deregistered_ms")}
    floor_parts = {"nginx_reload_ms": summarize(reload_ms), "consul_wake_ms": summarize(wake_ms),
                   "nginx_check_ms": summarize(check_ms)}
    floor = sum(part["median"] for part in floor_parts.values())
    routed, unrouted = stats["run_to_routed_ms"]["median"], stats["rm_to_unrouted_ms"]["median"]
    docker_run = stats["docker_run_ms"]["median"]
    result.update(runs=len(rows), stats=stats, floor_parts=floor_parts, floor_ms=round(floor, 1),
                  routed_ratio_to_floor=round(routed / floor, 2), unrouted_ratio_to_floor=round(unrouted / floor, 2),
                  rows=[{k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items() if not k.startswith("_")}
                        for row in rows])
    result["checks"] = [
        check("docker run -> routed, median", routed, round(1.5 * floor + docker_run, 1)),
        check("docker rm -f -> unrouted, median", unrouted, round(1.5 * floor, 1)),
    ]

    print(f"\nload average at start {load_start}, at end {result['load_end']} (2 cores: other work disturbs figures)")
    print(f"{'figure (ms, over ' + str(len(rows)) + ' runs)':<44} {'median':>8} {'p90':>8} {'max':>8}")
    for key, label in (("docker_run_ms", "docker run -d (itself)"), ("run_to_routed_ms", "docker run returned -> routed"),
                       ("run_to_registered_ms", "  of which -> registered (registrar log)"),
                       ("registered_to_reload_ok_ms", "  registered -> nginx reload confirmed (renderer log)"),
                       ("docker_rm_ms", "docker rm -f (itself)"), ("rm_to_file_ms", "docker rm -f returned -> out of file"),
                       ("rm_to_unrouted_ms", "docker rm -f returned -> unrouted"),
                       ("rm_start_to_unrouted_ms", "docker rm -f started -> unrouted"),
                       ("rm_to_deregistered_ms", "  rm returned -> deregistered (registrar log)")):
        s = stats[key]
        print(f"{label:<44} {s['median'] or 0:>8.1f} {s['p90'] or 0:>8.1f} {s['max'] or 0:>8.1f}")
    for key, label in (("nginx_reload_ms", "floor (a) nginx -s reload -> new config answering"),
                       ("consul_wake_ms", "floor (b) Consul register -> node-dump query returns"),
                       ("nginx_check_ms", "floor (c) nginx -t")):
        s = floor_parts[key]
        print(f"{label:<56} median {s['median']:>6.1f}  p90 {s['p90']:>6.1f}  max {s['max']:>6.1f}")
    print(f"floor = a + b + c = {floor:.1f} ms; routed median / floor = {result['routed_ratio_to_floor']}, "
          f"unrouted median / floor = {result['unrouted_ratio_to_floor']}")
    print_checks("e2e latency", result["checks"])
    for note in result["notes"]:
        print(f"  note: {note}")
    emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
