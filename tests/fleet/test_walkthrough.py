"""`make fleet` and `make fleet-stop`: the walkthrough runs, says what it measured, and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import requests

from tests.support import require

ROOT = Path(__file__).resolve().parents[2]


def fleet(command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "examples.fleet", command], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_make_fleet_walks_through_the_failures_with_figures_and_make_fleet_stop_removes_it():
    for binary in ("consul", "dockerd", "nginx", "nsenter", "ip", "iptables", "mmdebstrap"):
        require.binary(binary)
    out = ""
    try:
        result = fleet("up")
        out = result.stdout
        assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
        balanced = re.findall(r"on node\d's nginx \(.*?\): node1 x(\d+), node2 x(\d+), node3 x(\d+)", out)
        assert len(balanced) == 2 and all(int(n) > 0 for counts in balanced for n in counts), out
        assert out.count("sent 'hello', got back 'hello'") == 2
        assert re.search(r"httpbackend \(no tag\): HTTP 404 from nginx, not exposed; Consul DNS on node1 answers "
                         r"httpbackend.service.dc1.consul with 10\.199\.\d+\.3, 10\.199\.\d+\.4", out), out
        assert "rendered files on node1 and node2: the same bytes" in out
        election = re.search(r"(node\d) leads ([\d.]+) s later; requests through both nginx every 100 ms "
                             r"meanwhile: 0 of (\d+) failed, 0 of (\d+) failed", out)
        assert election and float(election[2]) < 15, out
        assert re.search(r"a container started on node\d afterwards: routed by both nginx", out), out
        lost = re.search(r"Consul declared node3 failed ([\d.]+) s after it died; its instances left both nginx "
                         r"(\d+) ms later", out)
        assert lost and float(lost[1]) < 30, out
        assert re.search(r"meanwhile \(nginx retried node3's dead instance on the others\): 0 of \d+ failed, "
                         r"0 of \d+ failed", out), out
        assert "its instances are routed by both nginx" in out
        pages = re.search(r"renderer status pages: (http://\S+/), (http://\S+/)", out)
        assert pages and all(requests.get(f"{page}ready", timeout=5).ok for page in pages.groups())
        assert "stop everything: make fleet-stop" in out
    finally:
        stopped = fleet("down")
    assert stopped.returncode == 0 and "fleet: stopped and removed" in stopped.stdout, stopped.stdout
    assert not (ROOT / "run" / "fleet").exists()
    own = re.search(r"network namespaces (\S+), (\S+), (\S+) on bridge (\S+) ", out)
    assert own, out
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout.split()
    assert not set(own.groups()[:3]) & set(left) and own[4] not in links
