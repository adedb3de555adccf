"""A rolling deploy under load, with the registrar's drain off and on, side by side.

    .venv/bin/python -m bench.rolling_deploy [--rounds 1] [--instances 3] [--drain-seconds 3]

Both daemons run as operators run them (a private one-server Consul and
nginx, the machine's dockerd). The app keeps serving for ``--drain-seconds``
after SIGTERM, as a graceful app does, and answers ``POST /cgi-bin/slow``
after 300 ms. Under a steady load of POSTs (which nginx never retries on
another upstream once sent) and GETs through nginx, its instances are
replaced one by one, as a deploy tool does: start the new one, wait until
nginx routes to it, ``docker stop`` the old one.

Per mode it prints the requests, the failed ones (by method), and for each
stop the time from the stop signal to "unrouted": nginx confirmed the reload
that left the instance out (the renderer's "nginx reload confirmed" after the
registrar's "drained" or "deregistered" line). With the drain off that is
after the process exited; with it on it must be well inside the drain period.
Target: no failed request with the drain on.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.common import (LABEL, REGISTRAR, RENDERER, ROOT, Engines, check, docker, emit_json, loadavg, log_times,
                          print_checks, say, summarize)
from bench.renderer_scale import NGINX_BINARY, production_consul
from tests.support.daemon_process import DaemonProcess
from tests.support.nginx_server import Nginx
from tests.support.web_containers import WEB_COMMAND

DOMAIN = "bench.test"
TIMEOUT = 30.0


class Load:
    """Client threads through nginx, each request on a new connection; counts answers and failures."""

    def __init__(self, port: int, host: str, expect: bytes, posters: int = 4, getters: int = 2):
        self.port, self.host, self.expect = port, host, expect
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = {"POST": 0, "GET": 0}
        self.failed = {"POST": 0, "GET": 0}
        self.samples: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=("POST", "/cgi-bin/slow", 0.0), daemon=True)
                        for _ in range(posters)]
        self.threads += [threading.Thread(target=self._run, args=("GET", "/", 0.02), daemon=True)
                         for _ in range(getters)]

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self, method: str, path: str, pause: float) -> None:
        while not self.stop.is_set():
            problem = None
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request(method, path, body=b"order=1" if method == "POST" else None,
                                   headers={"Host": self.host, "Connection": "close"})
                response = connection.getresponse()
                body = response.read()
                connection.close()
                if response.status != 200 or not body.startswith(self.expect):
                    problem = f"HTTP {response.status} {body[:40]!r}"
            except (OSError, http.client.HTTPException) as error:
                problem = type(error).__name__
            with self.lock:
                self.sent[method] += 1
                if problem:
                    self.failed[method] += 1
                    if len(self.samples) < 10:
                        self.samples.append(f"{time.strftime('%X')} {method} {problem}")
            if pause:
                self.stop.wait(pause)


def bodies(port: int, host: str, count: int = 12) -> set[str]:
    seen = set()
    for _ in range(count):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/", headers={"Host": host, "Connection": "close"})
            response = connection.getresponse()
            seen.add(response.read().decode(errors="replace").strip())
            connection.close()
        except (OSError, http.client.HTTPException):
            seen.add("(error)")
    return seen


def wait(predicate, what: str, timeout: float = TIMEOUT, interval: float = 0.01) -> float:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        time.sleep(interval)
    return time.perf_counter()


def start_instance(image: str, run_id: str, name: str, service: str, drain: float) -> None:
    docker("run", "-d", "--name", name, "-l", f"{LABEL}={run_id}", "-l", f"SERVICE_NAME={service}",
           "-l", "SERVICE_TAGS=http", "-p", "127.0.0.1::80", "--stop-timeout", str(int(drain) + 10), image,
           "sh", "-c", WEB_COMMAND.format(body=name, on_term=f"sleep {drain}; "))


def one_mode(mode: str, args, image: str, run_id: str, agent, nginx: Nginx, workdir: Path) -> dict:
    service = f"{run_id}-{mode}"
    host = f"{service}.{DOMAIN}"
    registrar = DaemonProcess([REGISTRAR, "run", "--consul-addr", agent.address, "--hostname", run_id,
                               "--ip", "127.0.0.1", "--drain", mode, "--log-level", "info"],
                              workdir / f"registrar-{mode}.log")
    try:
        registrar.wait_for_log("started for host", 20)
        names = [f"{service}-{i}" for i in range(args.instances)]
        for name in names:
            start_instance(image, run_id, name, service, args.drain_seconds)
        wait(lambda: bodies(nginx.http_port, host, 4 * len(names)) == set(names), f"{service}: all routed")
        load = Load(nginx.http_port, host, service.encode()).start()
        time.sleep(1.0)  # steady load before the first stop
        stops = []
        generation = 0
        for _ in range(args.rounds):
            for index in range(len(names)):
                generation += 1
                old, new = names[index], f"{service}-g{generation}"
                start_instance(image, run_id, new, service, args.drain_seconds)
                wait(lambda: new in bodies(nginx.http_port, host, 4 * len(names)), f"{new} routed")
                signalled = time.time()
                docker("stop", old, timeout=120)  # returns once it exited (after its drain)
                exited = time.time()
                stops.append({"name": old, "signalled": signalled, "exited": exited})
                docker("rm", old)
                names[index] = new
        time.sleep(1.0)
        load.finish()
        for name in names:
            docker("rm", "-f", name)
        wait(lambda: service not in agent_services(agent), f"{service} deregistered", 30, 0.1)
        reloads = log_times(renderer_log(workdir), "nginx reload confirmed")
        word = "drained" if mode == "on" else "deregistered"
        for stop in stops:
            # The registrar's line for this container ("drained" at the signal, "deregistered" at the exit),
            # then the first reload nginx confirmed after it: from then on new requests miss the instance.
            own = "\n".join(line for line in registrar.log.splitlines() if f"{stop['name']}:" in line)
            acted = [t for t in log_times(own, f"{word} {service} ") if t >= stop["signalled"] - 0.01]
            if acted:
                confirmed = [t for t in reloads if t >= acted[0]]
                if confirmed:
                    stop["signal_to_unrouted_ms"] = (confirmed[0] - stop["signalled"]) * 1000
            stop["signal_to_exit_ms"] = (stop["exited"] - stop["signalled"]) * 1000
        return {"mode": mode, "sent": dict(load.sent), "failed": dict(load.failed), "samples": load.samples,
                "requests": sum(load.sent.values()), "failures": sum(load.failed.values()),
                "signal_to_unrouted_ms": summarize([s["signal_to_unrouted_ms"] for s in stops
                                                    if "signal_to_unrouted_ms" in s]),
                "signal_to_exit_ms": summarize([s["signal_to_exit_ms"] for s in stops])}
    finally:
        registrar.stop()


def agent_services(agent) -> set[str]:
    return {entry["Service"] for entry in agent.get("/v1/agent/services").values()}


def renderer_log(workdir: Path) -> str:
    return (workdir / "renderer.log").read_text(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="times every instance is replaced (default 1)")
    parser.add_argument("--drain-seconds", type=float, default=3.0, help="the app's drain period (default 3)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    load_start = loadavg()
    run_id = f"rd{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    result: dict = {"bench": "rolling_deploy", "run_id": run_id, "load_start": load_start,
                    "drain_seconds": args.drain_seconds, "notes": []}
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: None if args.keep_logs else __import__("shutil").rmtree(workdir, True))
        engines = Engines()
        stack.callback(engines.stop)
        image = engines.current.busybox_image()
        agent = production_consul().start()
        stack.callback(agent.close)
        nginx = Nginx(NGINX_BINARY, lua=False).start()
        stack.callback(nginx.close)
        stack.callback(engines.remove_labelled, run_id)
        renderer = DaemonProcess([RENDERER, "run", "--consul-addr", agent.address,
                                  "--template-dir", f"{ROOT}/templates/http:{nginx.conf_d}",
                                  "--template-dir", f"{ROOT}/templates/stream:{nginx.stream_d}",
                                  "--var", f"domain={DOMAIN}", "--var", f"http_port={nginx.http_port}",
                                  "--var", "listen_address=127.0.0.1", *nginx.renderer_args, "--log-level", "info"],
                                 workdir / "renderer.log")
        stack.callback(renderer.stop)
        renderer.wait_for_log("watching", 20)
        modes = []
        for mode in ("off", "on"):
            say(f"[deploy] drain {mode}: {args.instances} instances, each replaced {args.rounds} time(s), "
                f"{args.drain_seconds:g} s drain, POST + GET load")
            row = one_mode(mode, args, image, run_id, agent, nginx, workdir)
            modes.append(row)
            say(f"[deploy] drain {mode}: {row['failures']} of {row['requests']} requests failed "
                f"({row['failed']}); signal -> unrouted median {row['signal_to_unrouted_ms']['median']} ms, "
                f"signal -> exit median {row['signal_to_exit_ms']['median']} ms")
            for sample in row["samples"]:
                say(f"    {sample}")
        if not renderer.alive():
            result["notes"].append(f"renderer exited {renderer.process.returncode}")
        if args.keep_logs:
            say(f"[deploy] logs kept in {workdir}")
    result["load_end"] = loadavg()
    result["modes"] = modes
    on = next(m for m in modes if m["mode"] == "on")
    result["checks"] = [
        check("deploy drain off: failed requests", next(m for m in modes if m["mode"] == "off")["failures"], None, ""),
        check("deploy drain on: failed requests", on["failures"], 0, ""),
        check("deploy drain on: stop signal -> unrouted, median", on["signal_to_unrouted_ms"]["median"], None),
    ]
    print(f"\nload average at start {load_start}, at end {result['load_end']}")
    print(f"{'drain':<6} {'requests':>9} {'failed':>7} {'POST failed':>12} {'GET failed':>11} "
          f"{'signal->unrouted median/max':>28} {'signal->exit median':>20}")
    for m in modes:
        unrouted = m["signal_to_unrouted_ms"]
        print(f"{m['mode']:<6} {m['requests']:>9} {m['failures']:>7} {m['failed']['POST']:>12} "
              f"{m['failed']['GET']:>11} {str(unrouted['median']) + ' / ' + str(unrouted['max']) + ' ms':>28} "
              f"{str(m['signal_to_exit_ms']['median']) + ' ms':>20}")
    print_checks("rolling deploy (drain on stop)", result["checks"])
    for note in result["notes"]:
        print(f"  note: {note}")
    emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
