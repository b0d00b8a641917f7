"""POST /v1/cost/estimate and `switchyard cost`: exact token counts and exact money, nothing billed."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image

from switchyard.config import FetchPolicy
from switchyard.fetch import FetchRefused, GuardedSession
from switchyard.metering.remote_image import fetch_image_size

ALLOW_TEST_HOST = FetchPolicy(allow_networks=("127.0.0.2/32",))
from switchyard.metering.tokens import count_prompt_tokens
from switchyard.wire.chat import parse_chat_request
from tests.conftest import MASTER_KEY, USER_KEY, Gateway, free_port

# gpt-5.2 in the catalog: $1.75 per 1M input tokens, $14 per 1M output tokens.
INPUT_NANOS_PER_TOKEN = 1750
OUTPUT_NANOS_PER_TOKEN = 14_000


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_with_big_metadata(width: int, height: int) -> bytes:
    """A noisy (large) JPEG whose size marker (SOF) sits behind ~200 KB of ICC profile: past the first range."""
    buf = io.BytesIO()
    noise = Image.effect_noise((width, height), 80).convert("RGB")
    noise.save(buf, "JPEG", icc_profile=os.urandom(200_000))
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@dataclass
class ImageServer:
    """Serves images over HTTP; paths under /ranged/ honour Range, others ignore it."""

    files: dict[str, bytes]
    ranges: list[str | None] = field(default_factory=list)
    sent: int = 0
    port: int = 0

    def url(self, path: str) -> str:
        # 127.0.0.2: an image host the test gateways allow (fetch.allow_networks); 127.0.0.1 is refused.
        return f"http://127.0.0.2:{self.port}{path}"


@pytest.fixture()
def image_server() -> Iterator[ImageServer]:
    state = ImageServer(files={})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = state.files.get(self.path.removeprefix("/ranged"))
            if data is None:
                self.send_error(404)
                return
            rng = self.headers.get("Range")
            state.ranges.append(rng)
            if rng and self.path.startswith("/ranged/"):
                start_s, _, end_s = rng.removeprefix("bytes=").partition("-")
                start, end = int(start_s), min(int(end_s), len(data) - 1)
                body = data[start : end + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                body = data
                self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
                state.sent += len(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading once it knew the size

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def estimate(gw: Gateway, body: dict[str, Any], key: str = USER_KEY) -> httpx.Response:
    with gw.http() as http:
        return http.post("/v1/cost/estimate", json=body, headers={"Authorization": f"Bearer {key}"})


def estimate_ok(gw: Gateway, body: dict[str, Any], key: str = USER_KEY) -> dict[str, Any]:
    resp = estimate(gw, body, key)
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["object"] == "cost.estimate"
    return result


def with_image(text: str, url: str, detail: str = "auto") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url, "detail": detail}}]}]


def own_usage(gw: Gateway) -> Any:
    with gw.http() as http:
        return http.get("/v1/usage", headers={"Authorization": f"Bearer {USER_KEY}"}).json()["data"]


def test_text_only_is_exact_and_costs_nothing(upstream_gateway: Gateway) -> None:
    body = {"model": "gpt-5.2", "max_completion_tokens": 300, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "How many tokens is this sentence, exactly? Über-precise, please."}]}
    before = own_usage(upstream_gateway)
    result = estimate_ok(upstream_gateway, body)
    tokens = count_prompt_tokens(parse_chat_request(body))
    assert result["model"] == "gpt-5.2"
    assert result["input_tokens"] == tokens and result["image_tokens"] == 0 and result["images"] == []
    assert result["max_output_tokens"] == 300
    cost = result["cost"]
    assert cost["min_nanos"] == tokens * INPUT_NANOS_PER_TOKEN
    # This upstream counts no tokens itself, so the most is the byte bound admission holds for:
    # UTF-8 bytes + OpenAI framing (3 per message + 3) + gpt-5.2's prompt_overhead (16).
    bound = sum(len(m["content"].encode()) for m in body["messages"]) + 3 * 2 + 3 + 16
    assert result["exact"] is False and result["input_tokens_max"] == bound > tokens
    assert cost["max_nanos"] == bound * INPUT_NANOS_PER_TOKEN + 300 * OUTPUT_NANOS_PER_TOKEN
    # By hand, in dollars: tokens x $1.75 / 1M at least; bound x $1.75 / 1M plus 300 x $14 / 1M at most.
    assert Decimal(cost["min_usd"]) == Decimal(tokens) * Decimal("1.75") / 1_000_000
    assert Decimal(cost["max_usd"]) == (Decimal(bound) * Decimal("1.75") + Decimal(300) * 14) / 1_000_000
    assert isinstance(cost["min_usd"], str) and isinstance(cost["max_usd"], str)
    assert own_usage(upstream_gateway) == before  # nothing billed

    # An alias resolves like the gateway; no cap means the model's own 128K.
    no_cap = estimate_ok(upstream_gateway, {**body, "model": "fast", "max_completion_tokens": None})
    assert no_cap["model"] == "gpt-5.2" and no_cap["max_output_tokens"] == 128_000
    assert no_cap["cost"]["max_nanos"] == bound * INPUT_NANOS_PER_TOKEN + 128_000 * OUTPUT_NANOS_PER_TOKEN
    # Service tiers the catalog prices: flex at half, priority at double.
    flex = estimate_ok(upstream_gateway, {**body, "service_tier": "flex"})["cost"]
    priority = estimate_ok(upstream_gateway, {**body, "service_tier": "priority"})["cost"]
    assert 2 * flex["max_nanos"] == cost["max_nanos"] and priority["max_nanos"] == 2 * cost["max_nanos"]


def test_data_url_image_is_exact(upstream_gateway: Gateway) -> None:
    body = {"model": "gpt-5.2", "max_completion_tokens": 50,
            "messages": with_image("What is in this picture?", data_url(png(1024, 1024)))}
    result = estimate_ok(upstream_gateway, body)
    # 32 x 32 patches of 32 px = 1024, times 1.2, rounded up.
    assert result["images"] == [{"index": 0, "width": 1024, "height": 1024, "detail": "auto", "tokens": 1229}]
    assert result["image_tokens"] == 1229
    assert result["input_tokens"] == count_prompt_tokens(parse_chat_request(body)) + 1229
    assert result["cost"]["min_nanos"] == result["input_tokens"] * INPUT_NANOS_PER_TOKEN


def test_remote_image_read_by_range(upstream_gateway: Gateway, image_server: ImageServer) -> None:
    jpeg = jpeg_with_big_metadata(1600, 900)
    image_server.files["/photo.jpg"] = jpeg
    body = {"model": "gpt-5.2", "messages": with_image("Describe it.", image_server.url("/ranged/photo.jpg"))}
    result = estimate_ok(upstream_gateway, body)
    # 1600x900 fits 2048: 50 x 29 patches = 1450, times 1.2 = 1740.
    assert result["images"] == [{"index": 0, "width": 1600, "height": 900, "detail": "auto", "tokens": 1740}]
    # The first 64 KiB held no size marker, so one more (larger) range; never the whole file.
    assert image_server.ranges == ["bytes=0-65535", "bytes=65536-262143"]
    assert image_server.sent <= 262_144 < len(jpeg)


def test_org_price_multiplier_applies(upstream_gateway: Gateway) -> None:
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    with upstream_gateway.http() as http:
        org = http.post("/admin/v1/organizations", headers=admin,
                        json={"name": f"discounted-{free_port()}", "price_multiplier": "0.7", "prepaid": False}).json()
        key = http.post("/admin/v1/keys", headers=admin, json={"org_id": org["id"]}).json()["key"]
    body = {"model": "gpt-5.2", "max_tokens": 7, "messages": [{"role": "user", "content": "Say hi."}]}
    full = estimate_ok(upstream_gateway, body)["cost"]
    discounted = estimate_ok(upstream_gateway, body, key)["cost"]
    for bound in ("min_nanos", "max_nanos"):
        expected = (Decimal(full[bound]) * Decimal("0.7")).to_integral_value(rounding=ROUND_HALF_UP)
        assert discounted[bound] == int(expected)


@pytest.mark.parametrize("url, detail", [
    ("http://127.0.0.1:{closed_port}/gone.png", "auto"),  # a port picked at run time: ids stay the same in every process
    ("file:///etc/passwd", "auto"),
    ("data:image/png;base64,bm90IGFuIGltYWdl", "auto"),
])
def test_bad_images_are_400_naming_the_image(upstream_gateway: Gateway, url: str, detail: str) -> None:
    url = url.replace("{closed_port}", str(free_port()))
    resp = estimate(upstream_gateway, {"model": "gpt-5.2", "messages": with_image("Look.", url, detail)})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_image_url"
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert url not in error["message"]  # URLs can carry signed tokens: never echoed


def test_unsupported_detail_and_unknown_model(upstream_gateway: Gateway) -> None:
    resp = estimate(upstream_gateway, {"model": "gpt-5.2", "messages": with_image("x", data_url(png(8, 8)), "original")})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages[0].content[1].image_url.detail"
    resp = estimate(upstream_gateway, {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    assert estimate(upstream_gateway, {"model": "gpt-5.2", "messages": []}).status_code == 400
    assert estimate(upstream_gateway, {"model": "gpt-5.2", "messages": [{"role": "user", "content": "x"}]},
                    key="sk-wrong").status_code == 401


def test_fetch_image_size_handles_servers_that_ignore_range(image_server: ImageServer) -> None:
    image_server.files["/photo.jpg"] = jpeg_with_big_metadata(640, 480)
    image_server.files["/huge.png"] = png(3000, 2000)

    async def sizes() -> list[tuple[int, int]]:
        async with GuardedSession(ALLOW_TEST_HOST) as session:
            return [await fetch_image_size(session, image_server.url(p)) for p in
                    ("/photo.jpg", "/huge.png", "/ranged/huge.png")]

    assert asyncio.run(sizes()) == [(640, 480), (3000, 2000), (3000, 2000)]
    assert image_server.ranges == ["bytes=0-65535"] * 3  # one request each

    async def too_small_cap() -> tuple[int, int]:
        async with GuardedSession(ALLOW_TEST_HOST) as session:
            return await fetch_image_size(session, image_server.url("/ranged/photo.jpg"), max_bytes=100_000)

    with pytest.raises(FetchRefused, match="no image size in its first 100,000 bytes"):
        asyncio.run(too_small_cap())


def test_cli_gives_the_same_numbers_as_the_endpoint(
    upstream_gateway: Gateway, image_server: ImageServer, tmp_path: Path,
) -> None:
    image_server.files["/photo.jpg"] = jpeg_with_big_metadata(1600, 900)
    url = image_server.url("/ranged/photo.jpg")
    local = tmp_path / "square.png"
    local.write_bytes(png(1024, 1024))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["SWITCHYARD_CONFIG"] = str(upstream_gateway.data_dir.parent / "switchyard.yaml")  # the server's config

    def cli(*args: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-m", "switchyard", "cost", *args, "--json"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return orjson.loads(proc.stdout)

    text = "Compare these two pictures."
    body = {"model": "fast", "max_completion_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": data_url(png(1024, 1024)), "detail": "auto"}},
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}]}]}
    served = estimate_ok(upstream_gateway, body)
    assert [i["tokens"] for i in served["images"]] == [1229, 1740]
    assert cli("--model", "fast", "--message", text, "--image", str(local), "--image", url, "--max-tokens", "100") == served

    request_file = tmp_path / "request.json"
    request_file.write_bytes(orjson.dumps(body))
    assert cli("--model", "fast", "--file", str(request_file)) == served
    # No models configured: the catalog's own entry prices it the same (the config only lets the
    # CLI fetch from the test's image host).
    bare = tmp_path / "fetch-only.yaml"
    bare.write_text("fetch: {allow_networks: [127.0.0.2/32]}\n")
    env["SWITCHYARD_CONFIG"] = str(bare)
    assert cli("--model", "gpt-5.2", "--file", str(request_file)) == served
