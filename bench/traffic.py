"""What counting nginx's traffic costs it: wrk through nginx with the renderer's counting on and off, in one run.

One nginx (one worker, as the tests run it) proxies a route the renderer
rendered from the catalog to a small backend (a ``return 200`` server in
the same nginx, which logs nothing of its own); Debian's ``wrk`` drives it
on loopback. The renderer runs ``--status-address`` with its traffic log
(counting on) or ``--traffic-log ""`` (off), everything else the same; the
modes alternate ``--rounds`` times and the medians are compared:

* requests a second and p99 latency (wrk's), on and off side by side;
* the loss: 1 - on/off; target under 5 %;
* counted vs sent: what ``renderer_route_requests_total`` says against
  what wrk completed (exact, give or take the requests in flight when wrk
  stops).

    .venv/bin/python -m bench.traffic [--seconds 10] [--rounds 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import RENDERER, ROOT, check, emit_json, loadavg, print_checks, say
from bench.renderer_scale import production_consul
from tests.support.nginx_server import Nginx
from tests.support.ports import free_port
from tests.support.waiting import terminate, wait_until

BACKEND = """server {{
    listen 127.0.0.1:{port};
    access_log off;
    location / {{ return 200 "ok\\n"; }}
}}
"""
_COMPLETED = re.compile(r"(\d+) requests in")
_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_P99 = re.compile(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
_COUNTED = re.compile(r'^renderer_route_requests_total\{[^}]*service="bench"[^}]*\} ([0-9.e+]+)$', re.MULTILINE)


def wrk(url: str, host: str, seconds: int, connections: int) -> tuple[float, float, int]:
    """(requests a second, p99 in ms, requests completed)."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {host}", url],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    value, unit = _P99.search(out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return float(_RATE.search(out).group(1)), p99, int(_COMPLETED.search(out).group(1))


def counted(status: int) -> int:
    text = requests.get(f"http://127.0.0.1:{status}/metrics", timeout=5).text
    return int(sum(float(value) for value in _COUNTED.findall(text)))


def settled_count(status: int) -> int:
    """The count once nginx's buffer (flushed every second) and the renderer's read (every second) are through."""
    last = -1
    while True:
        now = counted(status)
        if now == last:
            return now
        last = now
        time.sleep(2.5)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(nginx: Nginx, consul, counting: bool, args, work: Path) -> dict:
    status = free_port()
    host = "bench.bench.test"
    output = nginx.conf_d / "bench.conf"
    command = [RENDERER, "run", "--consul-addr", consul.address, "--var", "domain=bench.test",
               "--var", f"http_port={nginx.http_port}", "--var", "listen_address=127.0.0.1", *nginx.renderer_args,
               "--template", f"{ROOT / 'templates' / 'http' / 'services.conf.j2'}:{output}",
               "--status-address", f"127.0.0.1:{status}", "--kv-prefix", "",
               "--traffic-log", str(work / "traffic.log") if counting else ""]
    log = open(work / f"renderer-{'on' if counting else 'off'}.log", "ab")
    renderer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{nginx.http_port}/"
        marker = "set $renderer_route" if counting else "proxy_pass http://bench;"

        def serving() -> bool:
            text = output.read_text() if output.exists() else ""
            return marker in text and (counting or "renderer_route" not in text) and requests.get(
                url, headers={"Host": host}, timeout=2).status_code == 200
        wait_until(serving, 30, what=f"the route served with counting {'on' if counting else 'off'}")
        nginx.settled()
        wrk(url, host, 2, args.connections)  # warm up: connections, caches
        before = settled_count(status) if counting else 0
        cpu = cpu_seconds(renderer.pid)
        rate, p99, completed = wrk(url, host, args.seconds, args.connections)
        cpu = cpu_seconds(renderer.pid) - cpu
        seen = settled_count(status) - before if counting else None
        return {"rate": rate, "p99": p99, "completed": completed, "counted": seen,
                "renderer_cpu_ms_per_1000": round(1000 * cpu / completed * 1000, 1)}
    finally:
        terminate(renderer, 10)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench: wrk is needed (apt-get install wrk; make deps installs it)")
    say(f"load average at start: {loadavg()}")
    work = Path(tempfile.mkdtemp(prefix="bench-traffic-"))
    consul = production_consul().start()
    nginx = Nginx(shutil.which("nginx") or "/usr/sbin/nginx", lua=False).start()
    backend = free_port()
    try:
        (nginx.conf_d / "backend.conf").write_text(BACKEND.format(port=backend))
        subprocess.run(nginx.reload_command.split(), check=True)
        nginx.settled()
        consul.register("bench", "bench-1", backend, tags=["http"])
        rounds = {True: [], False: []}
        for n in range(args.rounds):
            for counting in (False, True) if n % 2 == 0 else (True, False):
                result = one_round(nginx, consul, counting, args, work)
                rounds[counting].append(result)
                say(f"round {n + 1}, counting {'on ' if counting else 'off'}: {result['rate']:.0f} req/s, "
                    f"p99 {result['p99']:.2f} ms, renderer CPU {result['renderer_cpu_ms_per_1000']} ms per 1,000"
                    + (f", counted {result['counted']} of {result['completed']}" if counting else ""))
    finally:
        subprocess.run(f"{nginx.base_command} -s quit".split(), capture_output=True)
        consul.close()
        shutil.rmtree(work, ignore_errors=True)
    on_rate = statistics.median(r["rate"] for r in rounds[True])
    off_rate = statistics.median(r["rate"] for r in rounds[False])
    on_p99 = statistics.median(r["p99"] for r in rounds[True])
    off_p99 = statistics.median(r["p99"] for r in rounds[False])
    loss = round(100 * (1 - on_rate / off_rate), 1)
    exact = all(r["completed"] <= r["counted"] <= r["completed"] + args.connections for r in rounds[True])
    print(f"\n{'':24} {'counting off':>14} {'counting on':>14}")
    print(f"{'requests/s (median)':24} {off_rate:>14.0f} {on_rate:>14.0f}")
    print(f"{'p99 ms (median)':24} {off_p99:>14.2f} {on_p99:>14.2f}")
    rows = [check("throughput lost to counting", loss, 5.0, "%"),
            check("requests/s, counting off", round(off_rate), None, "/s"),
            check("requests/s, counting on", round(on_rate), None, "/s"),
            check("p99, counting off", round(off_p99, 2), None),
            check("p99, counting on", round(on_p99, 2), None),
            check("renderer CPU per 1,000 requests, counting on",
                  statistics.median(r["renderer_cpu_ms_per_1000"] for r in rounds[True]), None),
            check("every request counted (of wrk's)", exact, True, "bool", at_most=False)]
    print_checks("traffic counting: wrk through nginx", rows)
    say(f"load average at end: {loadavg()}")
    emit_json({"bench": "traffic", "checks": rows, "rounds": {"on": rounds[True], "off": rounds[False]}})


if __name__ == "__main__":
    main()
