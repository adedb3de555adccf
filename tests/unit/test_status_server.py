"""The status endpoint's HTTP server on loopback: answers, refusals, and what slow or hostile clients get."""

from __future__ import annotations

import socket

import pytest

from agentkit.status_server import Response, StatusServer, StatusServerError, parse_address


@pytest.fixture
def server():
    calls = []

    def health():
        calls.append("health")
        return Response.text(200, "ok: loop running")

    started = StatusServer("127.0.0.1", 0, {"/health": health, "/boom": lambda: 1 / 0},
                           head_timeout=0.5, max_connections=8).start()
    started.calls = calls
    yield started
    started.stop()


def request(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(raw)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_routes_answer_and_everything_else_is_refused_with_one_line(server):
    answer = request(server.port, b"GET /health?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok: loop running\n")
    assert b"Content-Length: 17\r\n" in answer and b"Connection: close" in answer
    head = request(server.port, b"HEAD /health HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    assert request(server.port, b"POST /health HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi").startswith(b"HTTP/1.1 405")
    assert request(server.port, b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert request(server.port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert request(server.port, b"GET /boom HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500"), "a broken page is a 500"
    assert request(server.port, b"GET /health HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200"), "and serving goes on"


def test_a_huge_request_head_is_refused(server):
    answer = request(server.port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    assert server.calls == []


def test_a_head_that_never_ends_times_out(server):
    answer = request(server.port, b"GET /health HTTP/1.1\r\nX-Slow: ")
    assert answer.startswith(b"HTTP/1.1 408")


def test_slow_clients_holding_every_connection_do_not_keep_a_prompt_one_out(server):
    # Twice as many half-sent requests as the server takes: each new one evicts the oldest waiting
    # one, and a client that sends its request at once is still answered.
    slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(16)]
    try:
        for connection in slow:
            connection.sendall(b"GET /health HTTP/1.1\r\nX-Slow: 1")
        answer = request(server.port, b"GET /health HTTP/1.1\r\n\r\n", timeout=2.0)
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        for connection in slow:
            connection.close()
    assert server.active <= 8


def test_an_address_in_use_is_one_line():
    first = StatusServer("127.0.0.1", 0, {}).start()
    try:
        with pytest.raises(StatusServerError, match=f"--status-address 127.0.0.1:{first.port}: cannot listen "
                                                    r"\(the port is in use\)"):
            StatusServer("127.0.0.1", first.port, {}).start()
    finally:
        first.stop()


@pytest.mark.parametrize("text, parsed", [("127.0.0.1:9465", ("127.0.0.1", 9465)), ("[::1]:80", ("::1", 80)),
                                          (":9465", ("127.0.0.1", 9465))])
def test_parse_address(text, parsed):
    assert parse_address(text) == parsed


@pytest.mark.parametrize("text", ["9465", "host:", "host:99999", "host:x"])
def test_parse_address_refuses(text):
    with pytest.raises(ValueError):
        parse_address(text)
