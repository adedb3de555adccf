"""Every fixture, in one place: the session's real parts, and what one test makes of them.

Session-wide: one Consul dev agent, one nginx prefix, one Docker engine, one
browser (and the agents with TLS or ACLs some tests need). Per test: a
scene (its own services, backends and rendered files), TLS routing on top
of it, a registrar and its containers, the whole loop. Each test gives its
services, files and containers names of its own, and removes them when
done, so the parts can be shared across the session. The classes behind the
fixtures are in ``tests/support``.

Tests are laid out by kind: ``tests/unit`` (plain data, no processes),
``tests/integration/<area>`` (real Consul, Docker, nginx, browser),
``tests/fleet`` (the three-node reference layout).
"""

from __future__ import annotations

import os
import subprocess
import uuid

import docker.errors
import pytest
import requests
from testcontainers.core.container import DockerContainer

from tests.support import require
from tests.support.consul_agent import ConsulAgent
from tests.support.consul_tls import TlsConsulAgent
from tests.support.docker_engine import DockerEngine, OwnContainers
from tests.support.loop import ACL_MASTER_TOKEN, Loop
from tests.support.nginx_server import STREAM_MODULE, Nginx
from tests.support.registrar_process import REGISTRAR, RegistrarProcess
from tests.support.registrars import HTTPD, MASTER_TOKEN, forget
from tests.support.scene import Routing, Scene

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


@pytest.fixture(scope="session")
def consul_agent():
    agent = ConsulAgent(require.binary("consul")).start()
    yield agent
    agent.close()


@pytest.fixture(scope="session")
def tls_consul(tmp_path_factory):
    """A second dev agent serving HTTPS with verify_incoming (see tests/support/consul_tls.py)."""
    agent = TlsConsulAgent(require.binary("consul"), tmp_path_factory.mktemp("consul-tls")).start()
    yield agent
    agent.close()


@pytest.fixture(scope="session")
def nginx():
    binary = require.binary("nginx")
    if not STREAM_MODULE.exists():
        require.unavailable(f"nginx stream module ({STREAM_MODULE})")
    server = Nginx(binary).start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def docker_engine():
    require.binary("dockerd")
    engine = DockerEngine()
    try:
        engine.start()
    except RuntimeError as error:
        require.unavailable(f"Docker engine ({error})")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (status pages are checked as a person sees them)."""
    from tests.support.browser import Browser
    chromium, driver = require.binary("chromium"), require.binary("chromedriver")
    try:
        __import__("selenium")
    except ImportError:
        require.unavailable("selenium (the test extra)")
    started = Browser(chromium, driver)
    yield started
    started.close()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    """The reference three-node layout (tests/support/fleet.py), started once for the tests that ask."""
    from tests.support.fleet import Fleet
    for binary in ("consul", "dockerd", "nginx", "nsenter", "ip", "iptables", "mmdebstrap"):
        require.binary(binary)
    started = Fleet(tmp_path_factory.mktemp("fleet"), log=lambda text: None)
    try:
        started.start()
    except BaseException:
        started.stop()
        raise
    yield started
    started.stop()


@pytest.fixture(scope="session")
def busybox_image(docker_engine):
    return docker_engine.busybox_image()


@pytest.fixture
def unique():
    """A short name prefix of this test's own, for services, files and containers."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def scene(consul_agent, nginx, unique):
    scene = Scene(consul_agent, nginx, unique)
    yield scene
    scene.close()
    assert nginx.config_is_valid(), "nginx -t must pass on disk after every test"


@pytest.fixture(scope="session")
def certificate_authority(tmp_path_factory):
    from tests.support.certs import CertificateAuthority
    return CertificateAuthority(tmp_path_factory.mktemp("routes-ca"))


@pytest.fixture
def routing(scene, certificate_authority):
    return Routing(scene, certificate_authority)


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
        forget(agent, unique)
    for code, process in codes:
        assert code == 0, f"registrar exited {code} on SIGTERM:\n{process.log[-3000:]}"


@pytest.fixture
def run_sync(consul_agent, unique):
    """Run ``registrar sync`` (args...) to completion; returns the CompletedProcess."""
    def run(*args, agent=None, hostname=None, env=None) -> subprocess.CompletedProcess:
        agent = agent or consul_agent
        command = [REGISTRAR, "sync", "--consul-addr", agent.address, "--hostname", hostname or unique, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **(env or {})})
    yield run
    forget(consul_agent, unique)


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


@pytest.fixture
def loop(scene, docker_engine, busybox_image, tmp_path):
    loop = Loop(scene, docker_engine, busybox_image, tmp_path)
    yield loop
    problems = loop.close()
    assert not problems, problems[0]


@pytest.fixture
def acl_deny_agent():
    """A dev agent with ACLs on and ``default_policy = deny``: what a locked-down cluster looks like.

    The agent's own token is the master token (the agent must register its
    node); the daemons under test get only the README's policies.
    """
    agent = ConsulAgent(require.binary("consul"), token=ACL_MASTER_TOKEN, extra_config={
        "acl": {"enabled": True, "default_policy": "deny", "enable_token_persistence": False,
                "tokens": {"master": ACL_MASTER_TOKEN, "agent": ACL_MASTER_TOKEN}},
    })
    agent.start()
    yield agent
    agent.close()


@pytest.fixture(autouse=True)
def _leaves_nginx_as_it_found_it(request):
    """Each test owns its files: after it, the shared nginx's include directories are empty again."""
    yield
    if "nginx" not in request.fixturenames:
        return
    server = request.getfixturevalue("nginx")
    left = sorted(p.name for d in (server.conf_d, server.stream_d) for p in d.iterdir())
    for directory in (server.conf_d, server.stream_d):  # clean, so one leak fails one test, not the rest
        for path in directory.iterdir():
            path.unlink()
    if left:
        server.reload()
    assert not left, f"left in nginx's include directories: {left}"
