"""No server-side request forgery: URLs a client names are never fetched from internal addresses.

A listener on 127.0.0.1 stands for an internal service; no request to it may ever connect,
whether it is named directly, by a name that resolves to it, in IPv4-mapped IPv6 form, as a
number, or through a redirect from an allowed host. 127.0.0.2 (also loopback on Linux) plays
an operator-allowed image host (`fetch.allow_networks`), so the fetch path itself is real.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, StandInUpstream, start_gateway, upstream_config
from tests.integration.test_cost_estimate import png  # a real PNG of a given size

GENERIC = "the image at this URL could not be fetched or is not an image switchyard can read"


class Listener:
    """An internal service: a TCP port that records every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 0\r\n\r\n")
            conn.close()


class _AllowedHost(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.target)
            self.end_headers()
            return
        body = png(640, 480)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def internal() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.sock.close()


@pytest.fixture(scope="module")
def allowed_host(internal: Listener) -> Iterator[str]:
    _AllowedHost.target = f"http://127.0.0.1:{internal.port}/secret.png"
    server = ThreadingHTTPServer(("127.0.0.2", 0), _AllowedHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    config = upstream_config(upstream)
    config["fetch"] = {"allow_networks": ["127.0.0.2/32"], "max_images_per_request": 4, "per_key_per_minute": 1000}
    gw = start_gateway(tmp_path_factory.mktemp("fetch-guard"), config=config, env={"STANDIN_KEY": "x"})
    yield gw
    gw.stop()


def estimate(gw: Gateway, *urls: str) -> httpx.Response:
    content: list[dict[str, Any]] = [{"type": "text", "text": "Look."}]
    content += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return httpx.post(gw.base_url + "/cost/estimate", headers={"Authorization": "Bearer sk-sy-test-user"}, timeout=60,
                      json={"model": "gpt-5.2", "messages": [{"role": "user", "content": content}]})


def test_an_allowed_host_is_measured(guarded: Gateway, allowed_host: str) -> None:
    resp = estimate(guarded, f"{allowed_host}/photo.png")
    assert resp.status_code == 200, resp.text
    assert resp.json()["images"][0]["width"] == 640


@pytest.mark.parametrize("form", [
    "http://127.0.0.1:{port}/x.png",
    "http://localhost:{port}/x.png",  # a name that resolves to loopback
    "http://[::ffff:127.0.0.1]:{port}/x.png",  # IPv4-mapped IPv6
    "http://2130706433:{port}/x.png",  # 127.0.0.1 as one number
    "http://127.1:{port}/x.png",
    "http://0.0.0.0:{port}/x.png",
    "http://[::1]:{port}/x.png",
])
def test_internal_addresses_are_never_connected_to(guarded: Gateway, internal: Listener, form: str) -> None:
    before = internal.connections
    resp = estimate(guarded, form.format(port=internal.port))
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "invalid_image_url" and GENERIC in err["message"]
    assert err["param"] == "messages[0].content[1].image_url.url"
    assert internal.connections == before


def test_a_redirect_to_an_internal_address_is_not_followed(guarded: Gateway, internal: Listener, allowed_host: str) -> None:
    before = internal.connections
    resp = estimate(guarded, f"{allowed_host}/redirect")
    assert resp.status_code == 400 and GENERIC in resp.json()["error"]["message"]
    assert internal.connections == before


def test_other_schemes_and_failures_get_the_same_answer(guarded: Gateway, allowed_host: str) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.2", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there any more
    messages = set()
    for url in ("file:///etc/passwd", "gopher://127.0.0.2/", f"http://127.0.0.2:{closed_port}/x.png",
                f"{allowed_host}/redirect"):
        resp = estimate(guarded, url)
        assert resp.status_code == 400
        messages.add(resp.json()["error"]["message"])
    # One answer whatever happened: a closed port, a refused scheme and a refused redirect look alike.
    assert messages == {f"Invalid image: {GENERIC}."}


def test_images_fetched_per_request_are_capped(guarded: Gateway, allowed_host: str) -> None:
    resp = estimate(guarded, *[f"{allowed_host}/{i}.png" for i in range(5)])
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "too_many_images"


def test_fetches_per_key_are_rate_limited(tmp_path: Path, upstream: StandInUpstream, allowed_host: str) -> None:
    config = upstream_config(upstream)
    config["fetch"] = {"allow_networks": ["127.0.0.2/32"], "per_key_per_minute": 2}
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x"})
    try:
        assert estimate(gw, f"{allowed_host}/a.png", f"{allowed_host}/b.png").status_code == 200
        refused = estimate(gw, f"{allowed_host}/c.png")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "retry-after" in refused.headers
    finally:
        gw.stop()
