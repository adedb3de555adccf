"""Hostile registrations never reach the config raw; the good services keep serving.

An unusable name, address or port leaves the instance out; an unsafe tag or
meta value is withheld and the instance kept. Either way the value is absent
from the config and one line names the instance.
"""

import pytest
import requests

from tests.support.renderer_process import run_once
from tests.support.waiting import wait_until

HOSTILE = [
    # (name, port, extra registration fields, what must not appear in the config)
    ("evil-name;return", None, {}, "evil-name;return"),
    ("evilname", None, {"Tags": ["http", "x; return 302 http://attacker/"]}, "attacker"),
    ("eviladdr", None, {"Address": "127.0.0.1:1 weight=100; server 6.6.6.6"}, "6.6.6.6"),
    ("evilmeta", None, {"Meta": {"listen_port": "1;}"}}, "1;}"),
    ("evil-brace", None, {"Tags": ["http", "zzbrace}"]}, "zzbrace"),
    ("evil-dollar", None, {"Tags": ["http", "$zzdollar"]}, "zzdollar"),
    ("evilport", 0, {}, "evilport"),
    ("evil-long", None, {"Tags": ["http", "x" * 2000]}, "x" * 600),
    ("evil-newline", None, {"Tags": ["http", "a\nzznewline { }"]}, "zznewline"),
]


def test_hostile_registrations_are_left_out_or_withheld_and_named(scene, consul_agent):
    good = scene.http_backend("good")
    scene.register("goodsvc", good.port, tags=["http"])
    for index, (name, port, extra, _) in enumerate(HOSTILE):
        service_id = f"{scene.unique}-hostile-{index}"
        body = {"Name": name, "ID": service_id, "Port": good.port if port is None else port,
                "Address": "127.0.0.1", "Tags": ["http"], **extra}
        response = requests.put(f"{consul_agent.url}/v1/agent/service/register", json=body, timeout=5)
        assert response.status_code == 200, (name, response.text)
        scene.service_ids.append(service_id)

    result = run_once(*scene.common_args(), *scene.default_templates())
    assert result.returncode == 0, result.stderr
    config = scene.outputs[0].read_text()
    for index, (_, _, _, marker) in enumerate(HOSTILE):
        assert marker not in config
        assert f"'{scene.unique}-hostile-{index}'" in result.stderr, f"no warning names hostile #{index}"
    assert wait_until(lambda: scene.get("goodsvc").text.strip() == "good", timeout=5, what="good service")


@pytest.mark.parametrize("value", ["a b", "a;b", "{x}", "#x", "'q'", "$var"])
def test_injection_through_a_stream_listen_port_is_refused(scene, value):
    echo = scene.tcp_echo()
    scene.register(f"{scene.unique}-tcp", echo.port, tags=["tcp"], meta={"listen_port": value})
    result = run_once(*scene.common_args(), *scene.default_templates())
    assert result.returncode == 0, result.stderr
    assert value not in scene.outputs[1].read_text()
