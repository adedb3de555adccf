"""`make demo` and `make demo-stop` work, twice in a row, and leave nothing behind."""

import re
import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[3]


def demo(command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "examples.demo", command], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)


def test_demo_shows_balancing_echo_and_removal_then_cleans_up(docker_engine, busybox_image, consul_agent, nginx):
    try:
        run_twice()
    finally:
        demo("down")  # whatever happened: its containers must not stay on the shared engine
    leftovers = docker_engine.client.containers.list(all=True, filters={"label": "consul-nginx-sync-demo"})
    assert leftovers == [] and not (ROOT / "run" / "demo").exists()


def run_twice():
    for _ in range(2):
        result = demo("up")
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        for name in ("httpfront-1", "httpfront-2", "httpfront-3"):
            assert f"    {name}:" in out and f"    {name}:  0 of 30" not in out
        assert "HTTP 404 from nginx, not exposed" in out
        assert "got back 'hello through nginx'" in out
        assert "from nginx's config and reloaded" in out
        assert "/      -> 'shop' (TLS at nginx" in out and "/api/  -> 'api' (another service" in out
        assert "-> 308 to https://shop.demo.test:" in out
        canary = int(out.split("cart-v2 (canary, 20 %) x")[1].split(";")[0])
        assert 20 <= canary <= 60, out  # 20 % of 200 clients
        assert "httpfront-2 x" not in out.split("Stopping httpfront-2")[1]
        # The status pages it names answer, and say the loop converged.
        pages = re.search(r"status pages: (http://127\.0\.0\.1:\d+/) .*?(http://127\.0\.0\.1:\d+/) ", out)
        assert pages, out
        renderer_page, registrar_page = pages.groups()
        ready = requests.get(f"{renderer_page}ready", timeout=5)
        assert ready.status_code == 200 and ready.text.startswith("ready: nginx runs pass "), ready.text
        assert "cart.demo.test/" in requests.get(renderer_page, timeout=5).text
        assert requests.get(f"{registrar_page}ready", timeout=5).status_code == 200
    stopped = demo("down")
    assert stopped.returncode == 0 and "demo stopped: 9 container(s) removed" in stopped.stdout
