"""What the benches share beyond ``renderer_scale``'s helpers.

Statistics, the machine's load, the daemons' log timestamps, Docker clean-up
by label, and the one output format: a table of figures against targets
(PASS/FAIL) and one ``BENCH_JSON {...}`` line that ``bench.all`` collects.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench.renderer_scale import percentile

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REGISTRAR = str(BIN / "registrar")
RENDERER = str(BIN / "renderer")
# Every container a bench starts carries this label (value: the run's id), so
# leftovers of a crashed run are found with `docker ps -a --filter label=...`.
LABEL = "consul-nginx-sync.bench"
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def summarize(values: list[float]) -> dict:
    """median, p90 (nearest rank) and max, rounded to 0.1."""
    if not values:
        return {"median": None, "p90": None, "max": None, "n": 0}
    return {"median": round(statistics.median(values), 1), "p90": round(percentile(values, 0.9), 1),
            "max": round(max(values), 1), "n": len(values)}


def loadavg() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def log_times(text: str, needle: str) -> list[float]:
    """Wall-clock times (time.time() scale, ms resolution) of log lines containing ``needle``.

    agentkit's log format starts with ``%(asctime)s``: local time, milliseconds.
    """
    times = []
    for line in text.splitlines():
        if needle in line:
            match = _LOG_TIME.match(line)
            if match:
                stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                times.append(stamp.timestamp())
    return times


def docker_cli() -> str:
    cli = shutil.which("docker")
    if not cli:
        sys.exit("bench: the docker CLI is needed (apt-get install docker.io)")
    return cli


def remove_labelled(run_id: str) -> int:
    """Remove every container this run labelled; returns how many."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}={run_id}").split()
    for start in range(0, len(ids), 50):
        docker("rm", "-f", *ids[start:start + 50], timeout=300)
    return len(ids)


def check(name: str, value, target: float | None, unit: str = "ms", *, at_most: bool = True) -> dict:
    """One row of the figures table: ``value`` against ``target`` (None: informative only)."""
    ok = None
    if target is not None and value is not None:
        ok = value <= target if at_most else value >= target
    return {"figure": name, "value": value, "target": target, "unit": unit, "pass": ok}


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def print_checks(title: str, rows: list[dict], out=sys.stdout) -> None:
    print(f"\n== {title}", file=out)
    width = max([len(r["figure"]) for r in rows] + [6])
    print(f"{'figure'.ljust(width)} | {'value':>12} | {'target':>12} | verdict", file=out)
    print(f"{'-' * width}-+-{'-' * 12}-+-{'-' * 12}-+--------", file=out)
    for r in rows:
        target = "-" if r["target"] is None else ("<= " if r.get("unit") != "bool" else "") + fmt(r["target"], r["unit"])
        verdict = "-" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        print(f"{r['figure'].ljust(width)} | {fmt(r['value'], r['unit']):>12} | {target:>12} | {verdict}", file=out)


def emit_json(payload: dict) -> None:
    print("BENCH_JSON " + json.dumps(payload, separators=(",", ":")), flush=True)


# ---------------------------------------------------------------- a shared dockerd

# dockerd on this machine is shared: other sessions' test runs start one when
# none answers and stop it when they end, possibly under a running bench.
_DOCKER_GONE = ("Cannot connect to the Docker daemon", "connection refused", "Is the docker daemon running")


class DockerGone(RuntimeError):
    """dockerd stopped answering (most likely stopped by another session)."""


def docker(*args: str, timeout: float = 120) -> str:
    """Run the docker CLI; stdout. DockerGone when no engine answers, RuntimeError otherwise."""
    done = subprocess.run([docker_cli(), *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        if any(marker in done.stderr for marker in _DOCKER_GONE):
            raise DockerGone(f"docker {args[0]}: {done.stderr.strip()[-300:]}")
        raise RuntimeError(f"docker {' '.join(args[:3])} ... exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


class Engines:
    """DockerEngine, started again when it vanishes; stops only the engines it started, at the end."""

    def __init__(self):
        from tests.support.docker_engine import DockerEngine
        self._factory = DockerEngine
        self.engines = [DockerEngine().start()]
        self.restarts = 0

    @property
    def current(self):
        return self.engines[-1]

    def again(self):
        say("[bench] dockerd went away (shared with other sessions); starting or waiting for one")
        self.restarts += 1
        self.engines.append(self._factory().start())
        return self.current

    def remove_labelled(self, run_id: str) -> int:
        """remove_labelled, even when dockerd went away meanwhile: its containers come back (exited)
        with the next dockerd, so wait for (or start) one and remove them then."""
        try:
            return remove_labelled(run_id)
        except DockerGone:
            self.again()
            return remove_labelled(run_id)

    def stop(self) -> None:
        for engine in self.engines:
            engine.stop()
            shutil.rmtree(engine.dir, ignore_errors=True)
