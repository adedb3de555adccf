"""The renderer's own registration, with a fake agent: made when missing, made again when lost, retried."""

from __future__ import annotations

import logging

from agentkit.consul import ConsulAddress
from renderer.observe.registration import CHECK_EVERY, Registration


class Response:
    def __init__(self, status_code, text=""):
        self.status_code, self.text = status_code, text


class FakeAgent:
    address = ConsulAddress("http", "127.0.0.1", 8500)

    def __init__(self):
        self.services, self.calls, self.answer = {}, [], None

    def send(self, method, path, json=None, timeout=None):
        self.calls.append((method, path))
        if self.answer is not None:
            return self.answer
        if method == "GET":
            return Response(200 if path.rsplit("/", 1)[1] in self.services else 404)
        if path == "/v1/agent/service/register":
            self.services[json["ID"]] = json
        return Response(200)


def test_registered_when_missing_only_then_again_when_the_agent_lost_it(caplog):
    now = [100.0]
    registration = Registration("0.0.0.0", 9465, "1.2.3", lambda: now[0])
    agent = FakeAgent()
    caplog.set_level(logging.INFO, logger="renderer")
    registration.ensure(agent)
    (definition,) = agent.services.values()
    assert definition["Address"] == "" and definition["Port"] == 9465, "bound everywhere: the node's address"
    assert definition["Check"]["HTTP"] == "http://127.0.0.1:9465/ready" and definition["Meta"] == {"version": "1.2.3"}
    assert not registration.due(now[0] + CHECK_EVERY - 1) and registration.due(now[0] + CHECK_EVERY)
    registration.ensure(agent)
    assert [c[0] for c in agent.calls] == ["GET", "PUT", "GET"], "held: not registered again (its check kept)"
    agent.services.clear()
    registration.ensure(agent)
    assert len(agent.services) == 1 and "again: the agent no longer held it" in caplog.text


def test_a_refusal_is_said_once_and_retried_soon():
    now = [100.0]
    registration = Registration("10.0.0.5", 9465, "1", lambda: now[0])
    agent = FakeAgent()
    agent.answer = Response(403)
    registration.ensure(agent)
    assert registration.retry.pending and registration.due_in(now[0]) < 1.0
    agent.answer = None
    now[0] = registration.retry.at
    assert registration.due(now[0])
    registration.ensure(agent)
    assert not registration.retry.pending and agent.services[registration.id]["Address"] == "10.0.0.5"
