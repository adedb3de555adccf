"""A rolling deploy through the whole loop loses no request: an instance leaves nginx at its stop signal.

The app keeps serving for 3 s after SIGTERM (its drain period) and answers
``/cgi-bin/slow`` after 300 ms; the probe POSTs, which nginx never retries on
another upstream once sent, so a request cut by an exiting instance shows as
a failure.
"""

from __future__ import annotations

import threading

from tests.support.probe import Probe


def running(container) -> bool:
    container.reload()
    return container.attrs["State"]["Running"]


def test_replacing_instances_one_by_one_loses_no_request(loop):
    renderer = loop.start_renderer()
    registrar = loop.start_registrar()
    loop.web.start("a", "app", body="app-a", drain=3)
    loop.web.start("b", "app", body="app-b", drain=3)
    loop.wait_for(registrar, lambda s: len(s) == 2, "both instances registered")
    loop.serving("app", "app-a", "app-b")

    with Probe(loop.nginx.http_port, loop.host("app"), "app-", interval=0.05, path="/cgi-bin/slow",
               method="POST") as probe:
        for old, new, others in (("a", "c", ("app-b",)), ("b", "d", ("app-c",))):
            loop.web.start(new, "app", body=f"app-{new}", drain=3)
            loop.serving("app", f"app-{old}", *others, f"app-{new}")
            container = loop.web.get(old)
            stopper = threading.Thread(target=container.stop, kwargs={"timeout": 30}, daemon=True)
            stopper.start()
            # Out of nginx's routing (its old workers gone too) while the instance still runs.
            loop.serving("app", *others, f"app-{new}")
            assert running(container), f"{old} left nginx only when it exited: no drain"
            stopper.join(30)
            probe.cover(10)
    assert not probe.failures, probe.report() + "\n--- registrar ---\n" + registrar.log[-3000:]
    assert registrar.log.count("out of routing until it exits") == 2
    assert renderer.alive() and registrar.alive()
