"""What the registrar's integration tests share: its ACL agent's token and requests, forgetting a test's services.

The fixtures themselves (``registrar``, ``run_sync``, ``containers``,
``acl_agent``) are in ``tests/conftest.py``: the registrar runs as a
subprocess (``registrar run``), as in production, with a ``--hostname`` of
the test's own, so tests never see each other's services; containers are
made with testcontainers and removed at teardown, and so is every service
that carries this test's host mark.
"""

from __future__ import annotations

import requests

from tests.support.registrar_process import REGISTRAR, owned  # noqa: F401 (re-exported)

MASTER_TOKEN = "root-token-for-tests"
HTTPD = "httpd -f -p 80 -h /www"


def forget(agent, hostname: str) -> None:
    try:
        for service_id in owned(agent, hostname):
            agent.deregister(service_id)
    except requests.RequestException:
        pass


def acl_request(agent, method: str, path: str, body=None, token: str = MASTER_TOKEN):
    response = requests.request(method, f"{agent.url}{path}", json=body, timeout=10,
                                headers={"X-Consul-Token": token})
    response.raise_for_status()
    return response.json() if response.text else None
