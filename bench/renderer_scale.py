"""How the renderer scales with the catalog: real Consul, real nginx, loopback only.

    .venv/bin/python -m bench.renderer_scale [--services 100,1000,5000] [--instances 3] [--quick]

For each size: a fresh private one-server Consul and nginx; N services tagged
``http`` x M instances registered in bulk through ``/v1/txn``; then

1. ``renderer once`` on an empty output: wall time and peak RSS (``os.wait4``);
2. ``renderer once`` again with nothing changed (the no-op path);
3. ``renderer run``: for each of K changes (one instance moved to a new port,
   which is a live HTTP server of ours answering a unique body), the time from
   the Consul write returning to the file holding the change, and to nginx
   serving it;
4. the daemon's idle CPU with no changes, and its connections to Consul;
   then the same changes with ``--check-before-reload`` (nginx -t before
   every reload, the previous way), side by side with the default (the
   reload validates; nginx -t only once a reload is refused).

Prints a table, the targets, and one ``BENCH_JSON {...}`` line.

Instances are registered on external nodes (``bench-node-1`` ...), not on the
agent's own node: the agent's anti-entropy deletes catalog services on its
own node that it does not know locally, which would empty the catalog under
the benchmark within a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from tests.support.consul_agent import ConsulAgent
from tests.support.waiting import terminate
from tests.support.nginx_server import Nginx, lua_available

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates/http/services.conf.j2"
RENDERER = Path(sys.executable).parent / "renderer"
CONSUL_BINARY = "/usr/local/bin/consul"
NGINX_BINARY = "/usr/sbin/nginx"
DOMAIN = "bench.test"
TXN_MAX_OPS = 64          # Consul rejects a transaction with more operations
BACKEND_PORT_BASE = 10000  # below the ephemeral range (32768+), where our live servers land
CHANGE_TIMEOUT = 60.0

# The speed and memory targets, keyed by the size they apply to. `once` returns once nginx confirms it runs the
# new files (new workers), which at 5,000 services is nginx's own ~2 s of parsing the configuration
# again after `nginx -t` did: the 5,000 target applies to the pass up to the reload signal, as it did
# when `once` returned at the signal (`once_before_reload_s`: wall minus the confirmed reload).
TARGETS = {
    1000: {"once_wall_s": 1.0, "once_peak_rss_mb": 80.0, "change_file_median_ms": 50.0,
           "idle_cpu_pct": 0.5, "consul_conns": 4, "dynamic_change_served_median_ms": 40.0},
    5000: {"once_before_reload_s": 4.0, "change_file_median_ms": 200.0, "dynamic_change_served_median_ms": 150.0},
}
AT_MOST = ("consul_conns", "dynamic_change_served_median_ms")  # targets met at the limit itself
_RELOAD_MS = re.compile(r"nginx reload confirmed in (\d+) ms")
# Size-independent targets also checked at every size.
GENERAL_TARGETS = {"idle_cpu_pct": 0.5, "consul_conns": 4}


# ---------------------------------------------------------------- registration

def production_consul() -> ConsulAgent:
    """The Consul every bench measures against: a one-server cluster, as a node runs, not a dev agent.

    A dev agent pretty-prints every response (the node dump of 1,000 x 3 is
    1.97 MB and 21 ms there, 0.76 MB and 13 ms on a server), so a figure taken
    on it would overstate what a production node spends waiting for Consul.
    """
    return ConsulAgent(CONSUL_BINARY, dev=False)


def register_catalog(agent: ConsulAgent, services: int, instances: int, meta=lambda s, i: {}) -> float:
    """Register ``services`` x ``instances`` through /v1/txn; return seconds taken.

    ``meta(s, i)`` gives instance i of service s its service meta (route keys).
    """
    ops = [{"Node": {"Verb": "set", "Node": {"Node": node_name(i), "Address": "127.0.0.1"}}}
           for i in range(1, instances + 1)]
    for s in range(1, services + 1):
        for i in range(1, instances + 1):
            ops.append({"Service": {"Verb": "set", "Node": node_name(i), "Service": {
                "ID": instance_id(s, i), "Service": service_name(s), "Tags": ["http"],
                "Address": "127.0.0.1", "Port": backend_port(s, i, instances), "Meta": meta(s, i)}}})
    started = time.perf_counter()
    with requests.Session() as session:
        for start in range(0, len(ops), TXN_MAX_OPS):
            txn(session, agent, ops[start:start + TXN_MAX_OPS])
    elapsed = time.perf_counter() - started
    registered = agent.get("/v1/catalog/services")
    count = sum(1 for tags in registered.values() if "http" in tags)
    if count != services:
        raise RuntimeError(f"registered {services} services, the catalog lists {count}")
    return elapsed


def txn(session: requests.Session, agent: ConsulAgent, ops: list) -> None:
    response = session.put(f"{agent.url}/v1/txn", json=ops, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"txn failed ({response.status_code}): {response.text[:500]}")


def node_name(i: int) -> str:
    return f"bench-node-{i}"


def service_name(s: int) -> str:
    return f"svc-{s:05d}"


def instance_id(s: int, i: int) -> str:
    return f"{service_name(s)}-{i}"


def backend_port(s: int, i: int, instances: int) -> int:
    return BACKEND_PORT_BASE + (s - 1) * instances + (i - 1)


# ---------------------------------------------------------------- processes

def renderer_args(command: str, agent: ConsulAgent, nginx: Nginx, output: Path, log_level: str) -> list[str]:
    return [str(RENDERER), command,
            "--consul-addr", agent.address,
            "--template", f"{TEMPLATE}:{output}",
            "--var", f"domain={DOMAIN}", "--var", f"http_port={nginx.http_port}",
            "--var", "listen_address=127.0.0.1",
            *nginx.renderer_args,
            "--log-level", log_level]


def run_measured(args: list[str], log_path: Path) -> dict:
    """Run to completion; wall time, peak RSS from wait4, and the process's own VmHWM.

    wait4's ru_maxrss is the largest of the child and the children it waited
    for (nginx -t, nginx -s reload), so VmHWM of the renderer alone is sampled
    too; it only grows, so the last sample is the peak up to a few ms before exit.
    """
    with open(log_path, "wb") as log_file:
        started = time.perf_counter()
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        own_hwm_kb = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                value = vm_hwm_kb(process.pid)
                if value:
                    own_hwm_kb[0] = max(own_hwm_kb[0], value)
                done.wait(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # Sampling stops before the reap, so /proc/PID is never a recycled pid.
        _, status, usage = _wait4(process, done)
        elapsed = time.perf_counter() - started
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": elapsed, "maxrss_mb": usage.ru_maxrss / 1024, "own_hwm_mb": own_hwm_kb[0] / 1024,
            "returncode": process.returncode, "log": log_path.read_text(errors="replace")}


def _wait4(process: subprocess.Popen, done: threading.Event):
    # waitid(WNOWAIT) tells us the child exited without reaping it; stop the
    # sampler, then reap with wait4 for the rusage.
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    done.set()
    return os.wait4(process.pid, 0)


def vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (not its children)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # Fields after the command: state is field 3, utime 14, stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def consul_connections(pid: int, consul_port: int) -> int:
    """Established TCP connections from ``pid`` to the Consul HTTP port."""
    if shutil.which("ss"):
        result = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{consul_port} )"],
                                capture_output=True, text=True)
        if result.returncode == 0:
            return sum(1 for line in result.stdout.splitlines() if f"pid={pid}," in line)
    return _proc_connections(pid, consul_port)


def _proc_connections(pid: int, consul_port: int) -> int:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == consul_port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


class LiveBackend:
    """A tiny HTTP server on loopback answering one unique body."""

    def __init__(self, body: str):
        self.body = body.encode()
        body_bytes = self.body

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body_bytes)))
                self.end_headers()
                self.wfile.write(body_bytes)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def nginx_body(port: int, host: str) -> bytes | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        body = response.read()
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


# ---------------------------------------------------------------- one size

def file_state(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def wait_for_content(path: Path, marker: str, timeout: float, poll: float = 0.001) -> float:
    """Poll ``path`` until it holds ``marker``; return the time.perf_counter() it was seen."""
    deadline = time.perf_counter() + timeout
    last = None
    while True:
        state = file_state(path)
        if state is not None and state != last:
            last = state
            with contextlib.suppress(FileNotFoundError):
                if marker in path.read_text():
                    return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{path} did not get {marker!r} within {timeout}s")
        time.sleep(poll)


def count_log(text: str) -> dict:
    return {"reloads": len(re.findall(r"nginx reload confirmed", text)),
            "rendered": len(re.findall(r" rendered /", text)),
            "warnings": len(re.findall(r" WARNING ", text)),
            "errors": len(re.findall(r" (?:ERROR|CRITICAL) |Traceback", text))}


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def bench_size(services: int, instances: int, changes: int, served: int, idle_seconds: float,
               workdir: Path, say, profile_dir: Path | None = None, dynamic: bool = True) -> dict:
    result: dict = {"services": services, "instances": instances, "notes": []}
    with contextlib.ExitStack() as stack:
        say(f"[{services}x{instances}] starting consul and nginx")
        agent = production_consul()
        stack.callback(agent.close)
        agent.start()
        # Reload mode as on a node without the Lua module: Debian's (0.10.23) makes an SSL context for every
        # server and location, which alone makes `nginx -t` about 4x slower (lua-nginx-module #1005).
        nginx = Nginx(NGINX_BINARY, lua=False)
        stack.callback(nginx.close)
        nginx.start()
        output = nginx.conf_d / "bench.conf"

        result["register_s"] = register_catalog(agent, services, instances)
        say(f"[{services}x{instances}] registered {services * instances} instances in {result['register_s']:.2f}s")

        # 1. once on an empty output: it must write, check and reload.
        output.unlink(missing_ok=True)
        once = run_measured(renderer_args("once", agent, nginx, output, "info"), workdir / f"once-{services}.log")
        if once["returncode"] != 0 or not output.exists():
            raise RuntimeError(f"renderer once failed ({once['returncode']}): {once['log'][-2000:]}")
        text = output.read_text()
        upstreams = text.count("\nupstream ") - text.count("\nupstream _renderer_zone ")  # the block sizing the zone
        if upstreams != services:
            result["notes"].append(f"once wrote {upstreams} upstreams for {services} services")
        reload_ms = sum(int(ms) for ms in _RELOAD_MS.findall(once["log"]))
        result.update(once_wall_s=once["wall_s"], once_before_reload_s=once["wall_s"] - reload_ms / 1000,
                      once_reload_confirmed_ms=reload_ms, once_peak_rss_mb=once["maxrss_mb"],
                      once_renderer_hwm_mb=once["own_hwm_mb"], output_bytes=len(text.encode()),
                      once_log=count_log(once["log"]))
        say(f"[{services}x{instances}] once: {once['wall_s']:.2f}s (of which {reload_ms} ms waiting for nginx to "
            f"confirm the reload), peak RSS {once['maxrss_mb']:.1f} MB "
            f"(renderer alone {once['own_hwm_mb']:.1f} MB), {len(text.encode())} bytes")
        # nginx -t alone on this config: part of change->served, which the renderer cannot shorten.
        result["nginx_check_ms"], result["nginx_check_warnings"] = nginx_check_ms(nginx)
        sample = nginx_body(nginx.http_port, f"{service_name(1)}.{DOMAIN}")
        status = _status(nginx.http_port, f"{service_name(1)}.{DOMAIN}")
        if status != 502:  # backends do not listen: 502 proves the vhost is loaded
            result["notes"].append(f"after once, {service_name(1)}.{DOMAIN} answered {status} (expected 502), body {sample!r}")

        # 2. once again with nothing changed: nothing written, no reload.
        before = file_state(output)
        noop = run_measured(renderer_args("once", agent, nginx, output, "info"), workdir / f"noop-{services}.log")
        result.update(noop_wall_s=noop["wall_s"], noop_peak_rss_mb=noop["maxrss_mb"],
                      noop_wrote=file_state(output) != before, noop_log=count_log(noop["log"]))
        if noop["returncode"] != 0:
            result["notes"].append(f"no-op once exited {noop['returncode']}: {noop['log'][-500:]}")
        say(f"[{services}x{instances}] no-op once: {noop['wall_s']:.2f}s, wrote={result['noop_wrote']}, "
            f"reloads={result['noop_log']['reloads']}")

        # 3. the daemon: first render, then timed changes.
        output.unlink()
        daemon_log_path = workdir / f"daemon-{services}.log"
        daemon_log = stack.enter_context(open(daemon_log_path, "wb"))
        started = time.perf_counter()
        daemon = subprocess.Popen(renderer_args("run", agent, nginx, output, "info"), stdout=daemon_log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        stack.callback(terminate, daemon, 10)
        last_vhost = f"server_name {service_name(services)}.{DOMAIN};"
        seen = wait_for_content(output, last_vhost, 120)
        result["daemon_first_file_s"] = seen - started
        # The file is staged before the reload; a change arriving meanwhile waits for the whole pass
        # (seconds at 5,000 services), so start the timed changes once the first reload is done.
        wait_for_log(daemon_log_path, "nginx reload confirmed", daemon, 120, "renderer run did not reload nginx")
        result["daemon_first_reload_s"] = time.perf_counter() - started
        time.sleep(0.5)  # the catalog watch starts after the first pass
        if daemon.poll() is not None:
            raise RuntimeError(f"renderer run exited: {daemon_log_path.read_text()[-2000:]}")
        say(f"[{services}x{instances}] daemon wrote the file {result['daemon_first_file_s']:.2f}s after start")

        file_ms, served_ms, conns = [], [], []
        profiler = None
        if profile_dir is not None:
            # Samples of the daemon during the changes only (collapsed stacks, one line each).
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(daemon.pid), "--rate", "500",
                 "--format", "raw", "--threads", "--output", str(profile_dir / f"daemon-{services}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(terminate, profiler, 10)
            time.sleep(1.0)
        file_ms, served_ms, conns = timed_changes(agent, nginx, output, services, instances, changes, served, stack,
                                                  daemon)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        say(f"[{services}x{instances}] change->file ms: {', '.join(f'{v:.0f}' for v in file_ms)}")
        say(f"[{services}x{instances}] change->served ms: {', '.join(f'{v:.0f}' for v in served_ms)}")
        result.update(change_file_ms=file_ms, change_file_median_ms=statistics.median(file_ms),
                      change_file_p90_ms=percentile(file_ms, 0.9), change_served_ms=served_ms,
                      change_served_median_ms=statistics.median(served_ms) if served_ms else None,
                      consul_conns_during_changes=max(conns) if conns else None)

        # 4. idle: no changes at all.
        time.sleep(1.0)
        log_before = daemon_log_path.read_text(errors="replace")
        cpu_start, wall_start = cpu_seconds(daemon.pid), time.perf_counter()
        time.sleep(idle_seconds)
        cpu_used, wall = cpu_seconds(daemon.pid) - cpu_start, time.perf_counter() - wall_start
        result["idle_cpu_pct"] = 100 * cpu_used / wall
        result["idle_seconds"] = wall
        result["consul_conns"] = consul_connections(daemon.pid, agent.http_port)
        result["daemon_rss_mb"] = _vm_rss_kb(daemon.pid) / 1024
        idle_log = daemon_log_path.read_text(errors="replace")[len(log_before):]
        result["idle_log"] = count_log(idle_log)
        say(f"[{services}x{instances}] idle CPU {result['idle_cpu_pct']:.3f}% over {wall:.0f}s, "
            f"{result['consul_conns']} connection(s) to Consul")

        terminate(daemon, 10)
        result["daemon_exit"] = daemon.returncode
        daemon_text = daemon_log_path.read_text(errors="replace")
        result["daemon_log"] = count_log(daemon_text)
        result["daemon_log_sample"] = [line for line in daemon_text.splitlines()
                                       if " WARNING " in line or " ERROR " in line][:5]

        # 4b. the same changes the previous way: nginx -t before every reload (--check-before-reload), where
        #     the default lets the reload validate and runs nginx -t only once a reload was refused.
        checked_log_path = workdir / f"daemon-check-first-{services}.log"
        checked_log = stack.enter_context(open(checked_log_path, "wb"))
        daemon = subprocess.Popen(renderer_args("run", agent, nginx, output, "debug") + ["--check-before-reload"],
                                  stdout=checked_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        stack.callback(terminate, daemon, 10)
        wait_for_log(checked_log_path, "pass 1 done", daemon, 120, "renderer --check-before-reload did not start")
        time.sleep(0.5)  # the catalog watch starts after the first pass
        _, checked_served, _ = timed_changes(agent, nginx, output, services, instances, changes, changes, stack,
                                             daemon, file_too=False)
        result.update(check_first_served_ms=checked_served,
                      check_first_served_median_ms=statistics.median(checked_served))
        say(f"[{services}x{instances}] nginx -t before every reload: change->served ms: "
            f"{', '.join(f'{v:.0f}' for v in checked_served)}")
        terminate(daemon, 10)

        # 5. the same changes with --dynamic-peers, on an nginx with the Lua module: served through its
        #    balancer, no reload.
        if dynamic and lua_available():
            nginx.stop()
            nginx = Nginx(NGINX_BINARY, lua=True)
            stack.callback(nginx.close)
            nginx.start()
            output = nginx.conf_d / "bench.conf"
            dynamic_log_path = workdir / f"daemon-dynamic-{services}.log"
            dynamic_log = stack.enter_context(open(dynamic_log_path, "wb"))
            daemon = subprocess.Popen(renderer_args("run", agent, nginx, output, "info") + [
                "--dynamic-peers", "--peers-dir", str(workdir / f"peers-{services}"),
                "--var", f"socket_dir={nginx.prefix}"], stdout=dynamic_log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
            stack.callback(terminate, daemon, 10)
            wait_for_log(dynamic_log_path, "nginx took peer table", daemon, 120, "renderer --dynamic-peers did not push")
            time.sleep(0.5)
            # What a route change costs here: nginx -t with the Lua module and the dynamic template.
            result["dynamic_nginx_check_ms"] = nginx_check_ms(nginx)[0]
            before = count_log(dynamic_log_path.read_text(errors="replace"))["reloads"]
            workers = nginx_workers(nginx)
            _, dynamic_served, _ = timed_changes(agent, nginx, output, services, instances, changes, changes, stack,
                                                 daemon, file_too=False)
            text = dynamic_log_path.read_text(errors="replace")
            result.update(dynamic_change_served_ms=dynamic_served,
                          dynamic_change_served_median_ms=statistics.median(dynamic_served),
                          dynamic_reloads_during_changes=count_log(text)["reloads"] - before,
                          dynamic_workers_unchanged=nginx_workers(nginx) == workers,
                          dynamic_pushes=text.count("nginx took peer table"))
            say(f"[{services}x{instances}] dynamic peers: change->served ms: "
                f"{', '.join(f'{v:.0f}' for v in dynamic_served)}; reloads during the changes "
                f"{result['dynamic_reloads_during_changes']}")
            terminate(daemon, 10)
        elif dynamic:
            result["notes"].append("dynamic peers not measured: nginx has no Lua module (make deps)")
    return result


def wait_for_log(path: Path, needle: str, daemon: subprocess.Popen, timeout: float, what: str) -> None:
    """Until the daemon's log at ``path`` holds ``needle``; RuntimeError with its tail when it exits or times out."""
    deadline = time.perf_counter() + timeout
    while needle not in path.read_text(errors="replace"):
        if daemon.poll() is not None or time.perf_counter() > deadline:
            raise RuntimeError(f"{what}: {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.01)


def nginx_check_ms(nginx: Nginx) -> tuple[float, list[str]]:
    """``nginx -t`` on this nginx's configuration: median ms of 3, and its warnings."""
    check_ms = []
    for _ in range(3):
        check_started = time.perf_counter()
        check = subprocess.run(shlex.split(nginx.check_command.replace(" -q", "")), capture_output=True, text=True)
        check_ms.append((time.perf_counter() - check_started) * 1000)
    return statistics.median(check_ms), [line for line in check.stderr.splitlines() if "[warn]" in line]


def nginx_workers(nginx: Nginx) -> set[int]:
    from renderer.apply.nginx_master import children
    return set(children(nginx.pid()))


def timed_changes(agent, nginx, output: Path, services: int, instances: int, changes: int, served: int, stack,
                  daemon, file_too: bool = True) -> tuple[list[float], list[float], list[int]]:
    """Move one instance of ``changes`` services to a live backend each; times to the file and to nginx serving it."""
    file_ms, served_ms, conns = [], [], []
    picks = sorted({1 + (k * services) // changes for k in range(changes)})
    with requests.Session() as session:
        for k, s in enumerate(picks):
            backend = LiveBackend(f"bench-change-{k}-{os.urandom(6).hex()}\n")
            stack.callback(backend.close)
            marker = f"server 127.0.0.1:{backend.port} "
            if file_too and marker in output.read_text():
                raise RuntimeError(f"port {backend.port} already in the output")
            host = f"{service_name(s)}.{DOMAIN}"
            op = {"Service": {"Verb": "set", "Node": node_name(1), "Service": {
                "ID": instance_id(s, 1), "Service": service_name(s), "Tags": ["http"],
                "Address": "127.0.0.1", "Port": backend.port}}}
            txn(session, agent, [op])
            written = time.perf_counter()
            if file_too:
                in_file = wait_for_content(output, marker, CHANGE_TIMEOUT)
                file_ms.append((in_file - written) * 1000)
            if k < served:
                deadline = time.perf_counter() + CHANGE_TIMEOUT
                while nginx_body(nginx.http_port, host) != backend.body:
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"nginx did not serve {host} from port {backend.port}")
                    time.sleep(0.001)
                served_ms.append((time.perf_counter() - written) * 1000)
            conns.append(consul_connections(daemon.pid, agent.http_port))
            time.sleep(0.3)  # the reload settles before the next change
    return file_ms, served_ms, conns


def _status(port: int, host: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def _vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- report

def target_checks(result: dict) -> dict[str, bool]:
    """Which targets apply to this size, and whether they were met."""
    targets = dict(GENERAL_TARGETS)
    targets.update(TARGETS.get(result["services"], {}) if result["instances"] == 3 else {})
    checks = {}
    for key, limit in targets.items():
        value = result.get(key)
        if value is not None:
            checks[f"{key}<={limit}" if key in AT_MOST else f"{key}<{limit}"] = (
                value <= limit if key in AT_MOST else value < limit)
    return checks


def print_table(results: list[dict]) -> None:
    headers = ["services x inst", "once wall", "once peak RSS", "no-op once", "change->file median/p90",
               "change->served median: reload (nginx -t first) / dynamic peers", "idle CPU", "consul conns"]
    rows = []
    for r in results:
        served = "-" if r.get("change_served_median_ms") is None else f"{r['change_served_median_ms']:.0f} ms"
        checked = r.get("check_first_served_median_ms")
        served += "" if checked is None else f" ({checked:.0f} ms)"
        dynamic = r.get("dynamic_change_served_median_ms")
        served += " / " + ("-" if dynamic is None else f"{dynamic:.0f} ms ({r['dynamic_reloads_during_changes']} "
                                                       "reloads)")
        rows.append([f"{r['services']} x {r['instances']}", f"{r['once_wall_s']:.2f} s",
                     f"{r['once_peak_rss_mb']:.1f} MB", f"{r['noop_wall_s']:.2f} s",
                     f"{r['change_file_median_ms']:.0f} / {r['change_file_p90_ms']:.0f} ms", served,
                     f"{r['idle_cpu_pct']:.2f} %", str(r["consul_conns"])])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    print()
    print("Targets: 1,000x3 once < 1 s and < 80 MB RSS; change->file < 50 ms median; "
          "idle CPU < 0.5%; <= 4 connections to Consul; 5,000x3 once up to the reload signal < 4 s, "
          "change->file < 200 ms. Dynamic peers: change->served <= 40 ms at 1,000x3, <= 150 ms at "
          "5,000x3, no reload.")
    for r in results:
        checks = target_checks(r)
        verdicts = ", ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in checks.items())
        print(f"  {r['services']} x {r['instances']}: {verdicts}")
        lua_check = r.get("dynamic_nginx_check_ms")
        lua_check = "" if lua_check is None else f" ({lua_check:.0f} ms with the Lua module and dynamic peers)"
        print(f"    register {r['register_s']:.2f} s; output {r['output_bytes'] / 1024:.0f} KiB; "
              f"renderer alone peak {r['once_renderer_hwm_mb']:.1f} MB; daemon first file {r['daemon_first_file_s']:.2f} s "
              f"(reloaded {r['daemon_first_reload_s']:.2f} s); "
              f"daemon RSS idle {r['daemon_rss_mb']:.1f} MB; nginx -t {r['nginx_check_ms']:.0f} ms"
              f"{lua_check}; reloads in daemon log {r['daemon_log']['reloads']} "
              f"(idle {r['idle_log']['reloads']}); warnings {r['daemon_log']['warnings']}, errors {r['daemon_log']['errors']}")
        for warning in r["nginx_check_warnings"][:3]:
            print(f"    nginx -t: {warning}")
        for note in r["notes"]:
            print(f"    note: {note}")


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--services {text!r}: expected numbers like 100,1000,5000") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("--services: sizes must be positive")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=parse_sizes, default=[1000], help="sizes, e.g. 100,1000,5000")
    parser.add_argument("--instances", type=int, default=3, help="instances per service (default 3)")
    parser.add_argument("--changes", type=int, default=10, help="timed changes per size (default 10)")
    parser.add_argument("--served", type=int, default=None,
                        help="of those, how many are also timed to nginx serving them (default: all)")
    parser.add_argument("--quick", action="store_true", help="10 s of idle CPU instead of 30 s")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record the daemon with py-spy during the changes (collapsed stacks in DIR)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the renderer logs and print where")
    parser.add_argument("--no-dynamic", action="store_true", help="skip the --dynamic-peers measurement")
    args = parser.parse_args(argv)
    for binary in (CONSUL_BINARY, NGINX_BINARY, str(RENDERER)):
        if not os.access(binary, os.X_OK):
            parser.error(f"{binary} is missing")
    if args.profile is not None:
        if not os.access(Path(sys.executable).parent / "py-spy", os.X_OK):
            parser.error("--profile needs py-spy in the virtualenv (pip install py-spy)")
        args.profile.mkdir(parents=True, exist_ok=True)
    served = args.changes if args.served is None else min(args.served, args.changes)
    idle = 10.0 if args.quick else 30.0

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench-renderer-"))
    results = []
    try:
        for size in args.services:
            results.append(bench_size(size, args.instances, min(args.changes, size), served, idle, workdir, say,
                                       args.profile, dynamic=not args.no_dynamic))
    finally:
        if args.keep_logs:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    for r in results:
        r["targets"] = target_checks(r)
    print("BENCH_JSON " + json.dumps({"bench": "renderer_scale", "quick": args.quick, "cores": os.cpu_count(),
                                      "results": results}, separators=(",", ":")))
    missed = any(not all(r["targets"].values()) for r in results)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
