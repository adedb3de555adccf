"""`renderer run` through a Consul outage: last good files stay, it recovers by itself.

These tests restart the session's Consul agent (a dev agent comes back
empty, its index lower): exactly the "Consul lost its state" case the
renderer's grace period is for.
"""

from tests.support.waiting import wait_until


def serve_through_restart(scene, *extra):
    backend = scene.http_backend("outage-1")
    scene.register("outage", backend.port, tags=["http"])
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates(), "--log-level", "debug", *extra)
    wait_until(lambda: scene.get("outage").text.strip() == "outage-1", timeout=10, what="served")
    before = scene.outputs[0].read_bytes()

    scene.consul.stop()
    try:
        daemon.wait_for_log("cannot reach Consul at", timeout=10)
        # Through two more failed tries of its watch: the daemon lives on and keeps the files.
        wait_until(lambda: daemon.log.count("catalog watch: still failing") >= 2 or not daemon.alive(), 15,
                   what="two more tries during the outage")
        assert daemon.process.poll() is None, "the daemon must survive the outage"
        assert scene.outputs[0].read_bytes() == before
        assert scene.get("outage").text.strip() == "outage-1"
    finally:
        scene.consul.start()  # the agent is shared: it runs again whatever happens
    return backend, daemon, before


def test_an_empty_restarted_consul_is_held_until_the_services_return(scene):
    backend, daemon, before = serve_through_restart(scene)
    daemon.wait_for_log("the catalog index went backwards", timeout=15)
    assert scene.outputs[0].read_bytes() == before, "the empty catalog must not be rendered"
    assert scene.get("outage").text.strip() == "outage-1"

    scene.register("outage", backend.port, tags=["http"])  # what the registrar does on its host
    daemon.wait_for_log("catalog recovered after", timeout=10)
    assert scene.get("outage").text.strip() == "outage-1"
    assert "Consul answers again" in daemon.log

    replacement = scene.http_backend("outage-2")
    scene.register("outage", replacement.port, tags=["http"])
    wait_until(lambda: "outage-2" in {scene.get("outage").text.strip() for _ in range(4)}, timeout=5,
               what="changes flow again after recovery")


def test_a_loss_that_persists_is_accepted_after_the_grace_period(scene):
    _, daemon, _ = serve_through_restart(scene, "--grace", "2s")
    daemon.wait_for_log("the catalog index went backwards", timeout=15)
    daemon.wait_for_log("accepting it", timeout=10)
    wait_until(lambda: scene.get("outage").status_code == 404, timeout=5, what="route removed after grace")
