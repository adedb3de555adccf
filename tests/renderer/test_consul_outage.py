"""`renderer run` through a Consul outage: last good files stay, it recovers by itself.

Restarts the session's Consul agent (a dev agent comes back empty), so this
test re-registers what it needs afterwards.
"""

import time

from tests.support.waiting import wait_until


def test_daemon_keeps_serving_while_consul_is_down_and_recovers(scene):
    backend = scene.http_backend("outage-1")
    scene.register("outage", backend.port, tags=["http"])
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates())
    wait_until(lambda: scene.get("outage").text.strip() == "outage-1", timeout=10, what="served")
    before = scene.outputs[0].read_bytes()

    scene.consul.stop()
    daemon.wait_for_log("cannot reach Consul at", timeout=10)
    time.sleep(1)
    assert daemon.process.poll() is None, "the daemon must survive the outage"
    assert scene.outputs[0].read_bytes() == before
    assert scene.get("outage").text.strip() == "outage-1"

    scene.consul.start()
    replacement = scene.http_backend("outage-2")
    scene.register("outage", replacement.port, tags=["http"])
    try:
        wait_until(lambda: scene.get("outage").text.strip() == "outage-2", timeout=20, what="re-rendered after outage")
    except TimeoutError:
        raise AssertionError(daemon.log)
    assert "Consul answers again" in daemon.log
