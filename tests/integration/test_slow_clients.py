"""Slow and idle clients cannot pin a worker: header, body and keep-alive timeouts, and a
connection cap that cuts the quiet connections (nobody authenticated yet) first."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Gateway, StandInUpstream, start_gateway, upstream_config

LIMITS = {"header_seconds": 1, "body_idle_seconds": 1, "keep_alive_seconds": 1, "max_connections": 16}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    config = upstream_config(upstream)
    config["limits"] = LIMITS
    gw = start_gateway(tmp_path_factory.mktemp("slow-clients"), config=config, env={"STANDIN_KEY": "x"})
    yield gw
    gw.stop()


def connect(gw: Gateway) -> socket.socket:
    port = int(gw.base_url.rsplit(":", 1)[1].split("/")[0])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket timeout is the test's bound)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_a_client_that_sends_no_headers_is_cut_with_a_408(strict: Gateway) -> None:
    with connect(strict) as sock:
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"code":"request_timeout"' in answer


def test_headers_trickled_a_byte_at_a_time_are_cut(strict: Gateway) -> None:
    with connect(strict) as sock:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        sent = 0
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)  # 5 s for all of it: longer than the 1 s allowed
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_until_closed(sock)
    assert sent < len(request) or answer.startswith(b"HTTP/1.1 408")
    assert b"200 OK" not in answer


def test_a_stalled_body_is_cut(strict: Gateway) -> None:
    with connect(strict) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-sy-test-user\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":")
        answer = read_until_closed(sock)  # nothing more is sent: the server must give up on the body
    assert b"200 OK" not in answer


def test_an_idle_keep_alive_connection_is_closed(strict: Gateway) -> None:
    with connect(strict) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200")  # answered, then closed when it stayed idle


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    config = upstream_config(upstream)
    config["limits"] = {"max_connections": 6, "header_seconds": 60}
    gw = start_gateway(tmp_path_factory.mktemp("capped"), config=config, env={"STANDIN_KEY": "x"})
    yield gw
    gw.stop()


def test_past_the_connection_cap_the_quietest_connection_is_cut_first(capped: Gateway) -> None:
    quiet = []
    for _ in range(6):
        quiet.append(connect(capped))
        time.sleep(0.05)  # so the first is the one that has been quiet longest
    try:
        resp = httpx.get(capped.root + "/healthz", timeout=30)
        assert resp.status_code == 200  # a real client gets its answer
        quiet[0].settimeout(10)
        assert read_until_closed(quiet[0]) == b""  # the oldest quiet connection made room (no 408: it was cut)
        quiet[-1].settimeout(0.5)
        with pytest.raises(TimeoutError):
            quiet[-1].recv(1)  # the newest is still open
    finally:
        for sock in quiet:
            sock.close()


def test_when_every_connection_is_busy_a_newcomer_gets_a_503(capped: Gateway) -> None:
    import threading

    def slow() -> None:
        httpx.post(capped.base_url + "/chat/completions", timeout=60, headers={"Authorization": "Bearer sk-sy-test-user"},
                   json={"model": "sim-slow", "messages": [{"role": "user", "content": "hi"}]})

    threads = [threading.Thread(target=slow) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        answer = b""
        while time.monotonic() < deadline:  # until all six are in flight
            with connect(capped) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = read_until_closed(sock)
            if answer.startswith(b"HTTP/1.1 503"):
                break
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 503") and b'"code":"overloaded"' in answer
    finally:
        for t in threads:
            t.join()
