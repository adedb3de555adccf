"""What routes declared by meta cost a pass: `renderer once` with 1,000 services using the keys.

    .venv/bin/python -m bench.routed_once [--services 1000] [--instances 3] [--runs 3]

One private one-server Consul and one nginx. The same N services x M
instances are registered twice: first with no route key (the default
NAME.DOMAIN route, what a pass cost before routes existed), then with a mix
of every kind of key, as a fleet that uses them would carry:

* every service: its host named (``svc-NNNNN.bench.test``) and a path
  (``/api``);
* one in 4 TLS-terminated (a wildcard ``_.bench.test`` certificate), one in 9
  re-encrypting to an HTTPS backend; one in 11 strips its prefix;
* one in 5 rate-limited with a burst, one in 7 allow-listed, one in 3 with a
  body limit and a timeout; one in 10 with a canary instance at 10 %; one in 13
  behind an auth service.

For each, ``renderer once`` on an empty output, ``--runs`` times (median):
wall time, and the renderer's own share of it: the wall time minus nginx's
own work, its ``nginx -t`` and the reload it confirms (both from the
renderer's log). Target (the routes issue): with keys, at most 1.5 x without.
It applies to the renderer's share: nginx's own time grows with what the
keys ask of it, above all one certificate load per TLS server (about 0.9 ms
each, in every check and every reload, with nginx 1.22), which a
hand-written configuration with the same TLS servers pays alike. Both ratios
are printed. Prints one ``BENCH_JSON {...}`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import check, emit_json, loadavg, print_checks
from bench.renderer_scale import (DOMAIN, NGINX_BINARY, RENDERER, TEMPLATE, production_consul, register_catalog,
                                  run_measured, service_name)
from tests.support.nginx_server import Nginx
from tests.support.ports import free_port

TARGET_RATIO = 1.5
_RELOAD_MS = re.compile(r"nginx reload confirmed in (\d+) ms")
_CHECK_MS = re.compile(r"nginx config check took (\d+) ms")


def route_meta(s: int, i: int) -> dict:
    name = service_name(s)
    meta = {"hosts": f"{name}.{DOMAIN}", "path": "/api"}
    if s % 4 == 0:
        meta["tls"] = "terminate"
    if s % 9 == 0:
        meta.update(tls="terminate", backend="https")
    if s % 11 == 0:
        meta["strip_path"] = "true"
    if s % 5 == 0:
        meta.update(rate_limit="50r/s", rate_burst="10")
    if s % 7 == 0:
        meta["allow"] = "10.0.0.0/8,127.0.0.1"
    if s % 3 == 0:
        meta.update(max_body="10m", timeout="120s")
    if s % 10 == 0:
        meta["canary_percent"] = "10"
        if i == 3:
            meta["canary"] = "true"
    if s % 13 == 0 and s != 1:
        meta["auth"] = f"service:{service_name(1)}/verify"
    return meta


def wildcard_certificate(directory: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    f"/CN=*.{DOMAIN}", "-keyout", str(directory / f"_.{DOMAIN}.key"),
                    "-out", str(directory / f"_.{DOMAIN}.crt")], check=True, capture_output=True)


def measure(services: int, instances: int, runs: int, routed: bool, workdir: Path, say) -> dict:
    with contextlib.ExitStack() as stack:
        agent = production_consul()
        stack.callback(agent.close)
        agent.start()
        nginx = Nginx(NGINX_BINARY, lua=False)
        stack.callback(nginx.close)
        nginx.start()
        certs = workdir / "certs"
        certs.mkdir(exist_ok=True)
        wildcard_certificate(certs)
        register_catalog(agent, services, instances, route_meta if routed else (lambda s, i: {}))
        output = nginx.conf_d / "bench.conf"
        args = [str(RENDERER), "once", "--consul-addr", agent.address, "--template", f"{TEMPLATE}:{output}",
                "--var", f"domain={DOMAIN}", "--var", f"http_port={nginx.http_port}",
                "--var", f"https_port={free_port()}", "--var", "listen_address=127.0.0.1",
                "--var", f"cert_dir={certs}", *nginx.renderer_args, "--log-level", "debug"]
        walls, renderer_share, nginx_share, sizes = [], [], [], []
        for run in range(runs):
            output.unlink(missing_ok=True)
            nginx.reload()
            nginx.settled()
            once = run_measured(args, workdir / f"once-{'routed' if routed else 'plain'}-{run}.log")
            if once["returncode"] != 0:
                raise RuntimeError(f"renderer once failed: {once['log'][-2000:]}")
            nginx_ms = sum(int(ms) for ms in _RELOAD_MS.findall(once["log"]) + _CHECK_MS.findall(once["log"]))
            walls.append(once["wall_s"])
            nginx_share.append(nginx_ms / 1000)
            renderer_share.append(once["wall_s"] - nginx_ms / 1000)
            sizes.append(output.stat().st_size)
        kind = "routed" if routed else "plain"
        say(f"[{kind}] once: {', '.join(f'{w:.2f}' for w in walls)} s, of which nginx (check and reload) "
            f"{', '.join(f'{w:.2f}' for w in nginx_share)} s; output {sizes[-1] / 1024:.0f} KiB")
        return {"once_wall_s": statistics.median(walls), "renderer_share_s": statistics.median(renderer_share),
                "nginx_share_s": statistics.median(nginx_share), "output_bytes": sizes[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    load_start = loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-routed-"))
    try:
        plain = measure(args.services, args.instances, args.runs, False, workdir, say)
        routed = measure(args.services, args.instances, args.runs, True, workdir, say)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = routed["renderer_share_s"] / plain["renderer_share_s"]
    wall_ratio = routed["once_wall_s"] / plain["once_wall_s"]
    size = f"{args.services}x{args.instances}"
    checks = [
        check(f"routes {size}: once without keys / with keys", f"{plain['once_wall_s']:.2f} / "
              f"{routed['once_wall_s']:.2f}", None, "s"),
        check(f"routes {size}: of which nginx's check and reload", f"{plain['nginx_share_s']:.2f} / "
              f"{routed['nginx_share_s']:.2f}", None, "s"),
        check(f"routes {size}: whole once, with keys / without", round(wall_ratio, 2), None, "x"),
        check(f"routes {size}: renderer's share, with keys / without", round(ratio, 2), TARGET_RATIO, "x"),
    ]
    print_checks("routes (renderer once with route keys)", checks)
    emit_json({"bench": "routed_once", "services": args.services, "instances": args.instances,
               "plain": plain, "routed": routed, "ratio": ratio, "wall_ratio": wall_ratio,
               "load_start": load_start, "load_end": loadavg(),
               "checks": checks})
    return 0 if all(c["pass"] is not False for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
