"""Session-wide real parts: one Consul dev agent, one nginx prefix, one Docker engine.

Each test gives its services, files and containers names of its own, and
removes them when done, so the parts can be shared across the session.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support import require
from tests.support.consul_agent import ConsulAgent
from tests.support.consul_tls import TlsConsulAgent
from tests.support.docker_engine import DockerEngine
from tests.support.nginx_server import STREAM_MODULE, Nginx

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
def busybox_image(docker_engine):
    return docker_engine.busybox_image()


@pytest.fixture
def unique():
    """A short name prefix of this test's own, for services, files and containers."""
    return f"t{uuid.uuid4().hex[:8]}"


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
