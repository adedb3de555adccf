"""The registrar's loop one step at a time: the real decisions, fake Docker and Consul, clocks moved by hand.

No threads and no sleeping, except in the event stream's own test, which
runs its real thread against a fake Docker API and waits on what it
delivers.
"""

from __future__ import annotations

import logging
import threading

from agentkit.backoff import Backoff
from registrar import config as config_module
from registrar.daemon import Daemon
from registrar.docker_source import ContainerEvent, EventStream
from registrar.model import HEALTH_HEARTBEAT
from registrar.sync import Registrar
from tests.support.waiting import wait_until
from tests.unit.test_registrar_core import MAPPING, FakeConsul, FakeDocker
from tests.unit.test_registrar_labels import inspect


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeEvents:
    """Stands in for the Docker event thread: already connected, fed by the test."""

    def __init__(self, url, on_event, on_reconnect):
        self.on_event, self.on_reconnect = on_event, on_reconnect
        self.connected = threading.Event()
        self.connected.set()

    def start(self):
        return self

    def stop(self):
        pass

    def join(self, timeout=None):
        pass


class CountingConsul(FakeConsul):
    def __init__(self):
        super().__init__()
        self.reads = 0

    def owned_services(self):
        self.reads += 1
        return super().owned_services()


class Loop:
    def __init__(self, *infos, **config):
        self.clock, self.wall = Clock(1000.0), Clock(1_800_000_000.0)
        self.config = config_module.build(hostname="node1", consul_addr="127.0.0.1:1", environ={}, **config)
        self.consul, self.docker = CountingConsul(), FakeDocker(*infos)
        self.registrar = Registrar(self.config, self.docker, self.consul, MAPPING, wall=self.wall)
        self.notified: list[str] = []
        self.daemon = Daemon(self.registrar, self.config, clock=self.clock, wall=self.wall, events_factory=FakeEvents,
                             consul_backoff=Backoff(1.0, 2.0, jitter=0), notify=self.notified.append)

    def step(self) -> bool:
        return self.daemon.step(block=False)

    def later(self, seconds: float) -> bool:
        self.clock.now += seconds
        self.wall.now += seconds
        return self.step()

    def event(self, event: ContainerEvent) -> bool:
        self.daemon.queue.put(("event", event))
        return self.step()


def test_consul_down_at_start_is_retried_with_backoff_while_docker_is_followed(caplog):
    info = inspect()
    loop = Loop(info, resync=0)
    loop.consul.down = True
    with caplog.at_level(logging.WARNING, logger="registrar"):
        loop.step()
    assert loop.notified == ["READY=1\nSTATUS=Consul unreachable (cannot reach Consul at http://x:1: connection "
                             "refused); following Docker, retrying", "STATUS=Consul unreachable; following Docker, "
                             "retrying"]
    loop.event(ContainerEvent(info["Id"], "start", "web"))  # observed, nothing written
    assert loop.registrar.containers["0123456789ab"].running and loop.consul.calls == []
    reads = loop.consul.reads
    loop.later(0.5)
    assert loop.consul.reads == reads, "not before the backoff's 1 s"
    loop.later(0.5)
    assert loop.consul.reads == reads + 1 and loop.consul.calls == []
    loop.consul.down = False
    loop.later(2.0)
    assert loop.consul.calls == [("register", "node1:web:80")]
    assert sum(m.startswith("READY=1") for m in loop.notified) == 1 and loop.notified[-1] == "STATUS=following Docker"
    assert sum("keeping the desired state" in r.message for r in caplog.records) == 1, "said once, not per try"
    assert loop.daemon.consul_backoff.failures == 0


def test_the_resync_the_poll_and_the_health_heartbeat_come_when_due():
    info = inspect()
    info["State"]["Health"] = {"Status": "healthy"}
    loop = Loop(info, resync=60)
    loop.step()
    assert loop.consul.calls[0] == ("register", "node1:web:80")
    listed = loop.docker.listed
    loop.consul.services.clear()  # the agent restarted empty
    loop.later(1.0)               # the poll notices within a second
    assert loop.consul.calls[-1] == ("register", "node1:web:80")
    loop.later(60.0)
    assert loop.docker.listed == listed + 1, "a full reconciliation every --resync"
    ttl_updates = sum(call[0] == "ttl" for call in loop.consul.calls)
    loop.later(HEALTH_HEARTBEAT)
    assert sum(call[0] == "ttl" for call in loop.consul.calls) == ttl_updates + 1


def test_a_container_that_did_not_stop_by_its_deadline_is_put_back_on_the_wall_clock():
    info = inspect()
    info["Config"]["StopTimeout"] = 1
    loop = Loop(info, resync=0)
    loop.step()
    loop.event(ContainerEvent(info["Id"], "kill", "web", (("name", "web"), ("signal", "15")), loop.wall.now))
    assert loop.consul.services["node1:web:80"].stopping_check is not None
    assert loop.daemon._next_timeout() <= 6.0, "the loop wakes for the deadline"
    loop.later(5.9)
    assert loop.consul.services["node1:web:80"].stopping_check is not None, "not before its stop timeout + 5 s"
    loop.later(0.2)
    assert loop.consul.services["node1:web:80"].stopping_check is None


def test_a_stop_request_ends_the_loop():
    loop = Loop(inspect(), resync=0)
    assert loop.step()
    loop.daemon.stop()
    assert loop.step() is False


class FakeStream:
    """One connection's events: some, then the stream breaks (``fail``) or stays open until closed."""

    def __init__(self, events, fail: bool):
        self.events, self.fail = list(events), fail
        self.closed = threading.Event()

    def __iter__(self):
        return self

    def __next__(self):
        if self.events:
            return self.events.pop(0)
        if self.fail:
            raise ConnectionError("Docker went away")
        self.closed.wait(10)
        raise StopIteration

    def close(self):
        self.closed.set()


class FakeApi:
    def __init__(self, stream):
        self.stream = stream

    def events(self, **_):
        return self.stream

    def close(self):
        pass


def test_the_event_stream_reconnects_with_a_fresh_client_and_asks_for_a_full_reconciliation():
    streams = [FakeStream([{"Action": "start", "id": "a"}], fail=True),
               FakeStream([{"Action": "die", "id": "b"}], fail=False)]
    made, seen = [], []

    def factory(url):
        made.append(url)
        return FakeApi(streams[len(made) - 1])

    stream = EventStream("unix:///fake.sock", lambda event: seen.append(("event", event["Action"])),
                         lambda: seen.append(("reconnected",)), backoff=Backoff(0.001, 0.001),
                         api_factory=factory).start()
    try:
        wait_until(lambda: len(seen) == 3, timeout=5, what="both connections' events")
    finally:
        stream.stop()
        stream.join(5)
    assert seen == [("event", "start"), ("reconnected",), ("event", "die")]
    assert made == ["unix:///fake.sock", "unix:///fake.sock"]
    assert streams[1].closed.is_set(), "stop closes the open stream"
