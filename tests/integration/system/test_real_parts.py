"""The session's real parts answer: a failure here explains every other failure."""

import requests


def test_consul_dev_agent_has_a_leader(consul_agent):
    assert consul_agent.get("/v1/status/leader")


def test_nginx_serves_its_default_site(nginx):
    response = requests.get(f"http://127.0.0.1:{nginx.http_port}/", timeout=2)
    assert response.status_code == 404 and response.text == "no such site\n"


def test_busybox_image_runs(docker_engine, busybox_image):
    output = docker_engine.client.containers.run(busybox_image, ["echo", "hello"], remove=True)
    assert output == b"hello\n"
