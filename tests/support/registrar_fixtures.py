"""Fixtures for the registrar's integration tests: the real daemon, real containers.

The registrar runs as a subprocess (``registrar run``), as in production,
with a ``--hostname`` of the test's own, so tests never see each other's
services. Containers are made with testcontainers and removed at teardown,
and so is every service that carries this test's host mark.
"""

from __future__ import annotations

import os
import subprocess

import docker.errors
import pytest
import requests
from testcontainers.core.container import DockerContainer

from tests.support import require
from tests.support.consul_agent import ConsulAgent
from tests.support.docker_engine import OwnContainers
from tests.support.registrar_process import REGISTRAR, RegistrarProcess, owned  # noqa: F401 (re-exported)

MASTER_TOKEN = "root-token-for-tests"
HTTPD = "httpd -f -p 80 -h /www"


@pytest.fixture
def own_containers(docker_engine, unique):
    """This test's containers: what its registrar's services() counts (the engine is shared)."""
    return OwnContainers(docker_engine.client, unique)


@pytest.fixture
def registrar(consul_agent, docker_engine, unique, tmp_path, own_containers):
    """Start ``registrar run`` (args...); stopped with SIGTERM at teardown, which must exit 0."""
    started: list[RegistrarProcess] = []

    def start(*args, agent=None, env=None, docker_url=None) -> RegistrarProcess:
        if docker_url:
            args = ("--docker-url", docker_url, *args)
        process = RegistrarProcess(agent or consul_agent, unique, args, tmp_path / f"registrar-{len(started)}.log",
                                   env, own=own_containers).start()
        started.append(process)
        return process

    yield start
    codes = [(process.stop(), process) for process in started]
    for agent in {id(p.agent): p.agent for p in started}.values():
        _forget(agent, unique)
    for code, process in codes:
        assert code == 0, f"registrar exited {code} on SIGTERM:\n{process.log[-3000:]}"


def _forget(agent, hostname: str) -> None:
    try:
        for service_id in owned(agent, hostname):
            agent.deregister(service_id)
    except requests.RequestException:
        pass


@pytest.fixture
def run_sync(consul_agent, unique):
    """Run ``registrar sync`` (args...) to completion; returns the CompletedProcess."""
    def run(*args, agent=None, hostname=None, env=None) -> subprocess.CompletedProcess:
        agent = agent or consul_agent
        command = [REGISTRAR, "sync", "--consul-addr", agent.address, "--hostname", hostname or unique, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **(env or {})})
    yield run
    _forget(consul_agent, unique)


@pytest.fixture
def containers(docker_engine, busybox_image, unique, own_containers):
    """Start a busybox container (testcontainers), named ``<unique>-<suffix>``; all removed at teardown."""
    made: list[DockerContainer] = []

    def start(suffix: str = "web", command: str = HTTPD, ports=("80/tcp",), labels=None, env=None,
              image: str | None = None, **kwargs) -> DockerContainer:
        container = DockerContainer(image or busybox_image).with_name(f"{unique}-{suffix}").with_command(command)
        for port in ports:
            container.with_bind_ports(port, None)
        for key, value in (env or {}).items():
            container.with_env(key, value)
        # SIGKILL on stop: busybox as PID 1 ignores SIGTERM, and docker stop would wait 10s.
        container.with_kwargs(**{"labels": labels or {}, "stop_signal": "SIGKILL", **kwargs})
        made.append(container)
        container.start()
        own_containers.add(container.get_wrapped_container().id)
        return container

    yield start
    for container in made:
        try:
            container.stop()
        except (docker.errors.NotFound, docker.errors.APIError, requests.RequestException):
            pass


@pytest.fixture(scope="session")
def acl_agent():
    """A second dev agent with ACLs and script checks enabled.

    The shared agent has neither; script checks need ``enable_script_checks``
    and the "token lacks write rights" test needs ACLs. The default policy is
    allow because the agent helper polls the catalog anonymously to see a
    leader; tests that need a weak token make one with an explicit read rule.
    """
    agent = ConsulAgent(require.binary("consul"), extra_config={
        "enable_script_checks": True,
        "acl": {"enabled": True, "default_policy": "allow", "tokens": {"master": MASTER_TOKEN}},
    })
    agent.start()
    yield agent
    agent.close()


def acl_request(agent, method: str, path: str, body=None, token: str = MASTER_TOKEN):
    response = requests.request(method, f"{agent.url}{path}", json=body, timeout=10,
                                headers={"X-Consul-Token": token})
    response.raise_for_status()
    return response.json() if response.text else None
