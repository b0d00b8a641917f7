"""The Images API through the official SDK against a real server: generations, edits (multipart,
mask), variations, streamed partial images; billed as OpenAI bills (GPT image models by token,
DALL·E per image); `url` results kept in the organisation's files behind signed links."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import USER_KEY, Admin, Gateway, start_gateway
from tests.openapi_spec import Validate
from tests.standins.openai_media import IMAGE_INPUT_TOKENS, png
from tests.standins.openai_upstream import StandInUpstream

TEXT_NANOS, IMAGE_IN_NANOS, IMAGE_OUT_NANOS = 5_000, 10_000, 40_000  # gpt-image-1, per token


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    def dep(model: str, catalog: str, **extra: object) -> dict:
        return {"provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY", "model": model,
                "catalog": catalog, **extra}

    models = {
        "gpt-image-1": {"deployments": [dep("gpt-image-1", "gpt-image-1")]},
        "dall-e-3": {"deployments": [dep("dall-e-3", "dall-e-3")]},
        "dall-e-2": {"deployments": [dep("dall-e-2", "dall-e-2")]},
        "image-fallback": {"deployments": [dep("status-500", "gpt-image-1", priority=0, retries=0),
                                           dep("gpt-image-1", "gpt-image-1", priority=1)]},
        "chat": {"deployments": [dep("ok", "gpt-5.2")]},
    }
    gateway = start_gateway(tmp_path_factory.mktemp("images-gw"),
                            config={"models": models, "limits": {"max_image_upload_bytes": 2_000_000}},
                            env={"STANDIN_KEY": "sk-upstream-images"})
    yield gateway
    gateway.stop()


def record(gw: Gateway, request_id: str, key: str = USER_KEY) -> dict:
    return httpx.get(f"{gw.base_url}/requests/{request_id}", headers={"authorization": f"Bearer {key}"}).json()


def sent(upstream: StandInUpstream, path: str) -> dict:
    return [r for r in upstream.received if r.path == path][-1].body


def test_gpt_image_generation_bills_the_upstreams_image_tokens(gw: Gateway, upstream: StandInUpstream,
                                                                openapi: Validate) -> None:
    client = gw.client()
    prompt = "a lighthouse at dawn in watercolour"
    raw = client.images.with_raw_response.generate(model="gpt-image-1", prompt=prompt, size="1024x1536",
                                                   quality="high", background="opaque", output_format="png")
    answer = raw.parse()
    assert png_size(base64.b64decode(answer.data[0].b64_json)) == (1024, 1536)
    assert (answer.size, answer.quality, answer.usage.output_tokens) == ("1024x1536", "high", 6240)
    forwarded = sent(upstream, "/v1/images/generations")
    assert forwarded == {"model": "gpt-image-1", "prompt": prompt, "size": "1024x1536", "quality": "high",
                         "background": "opaque", "output_format": "png", "_files": []}
    text_tokens = len(prompt.split())
    expected = text_tokens * TEXT_NANOS + 6240 * IMAGE_OUT_NANOS  # $0.2496 for the image itself
    row = record(gw, raw.headers["x-request-id"])
    assert (row["endpoint"], row["status"], row["cost_nanos"]) == ("/v1/images/generations", "completed", expected)
    assert (row["usage"]["input_tokens"], row["usage"]["output_tokens"]) == (text_tokens, 6240)
    assert raw.headers["x-switchyard-cost-usd"] == f"{expected / 1e9:.9f}".rstrip("0")
    body = httpx.post(f"{gw.base_url}/images/generations", headers={"authorization": f"Bearer {USER_KEY}"},
                      json={"model": "gpt-image-1", "prompt": "a cat", "quality": "low"}, timeout=30).json()
    body["usage"].pop("cost")  # ours, beside OpenAI's fields
    openapi(body, "ImagesResponse")


def test_dall_e_is_billed_per_image_and_its_urls_are_served_from_our_files(gw: Gateway,
                                                                           upstream: StandInUpstream) -> None:
    client = gw.client()
    raw = client.images.with_raw_response.generate(model="dall-e-3", prompt="a red bicycle", size="1024x1792",
                                                   quality="hd")
    answer = raw.parse()
    assert sent(upstream, "/v1/images/generations")["response_format"] == "b64_json"  # never OpenAI's link
    url = answer.data[0].url
    assert url is not None and url.startswith(gw.root + "/v1/images/content/")
    image = httpx.get(url)  # no API key: a browser follows the link
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert png_size(image.content) == (1024, 1792)
    row = record(gw, raw.headers["x-request-id"])
    assert row["cost_nanos"] == 120_000_000 and row["usage"]["units"] == {"image.hd.1024x1792": 1}
    # The image is the organisation's file; a forged or altered link opens nothing.
    files = client.files.list().data
    assert any(f.purpose == "image_generation" and f.bytes == len(image.content) for f in files)
    token = url.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    for bad in (payload + "." + signature[::-1], payload[:-2] + "AA." + signature, "garbage"):
        assert httpx.get(f"{gw.root}/v1/images/content/{bad}").status_code == 404
    # GPT image models answer in base64; `url` is ours to give them too.
    linked = client.images.generate(model="gpt-image-1", prompt="a boat", quality="low", response_format="url")
    assert linked.data[0].b64_json is None and httpx.get(linked.data[0].url).status_code == 200


def test_a_budget_for_one_image_refuses_the_second(gw: Gateway) -> None:
    admin = Admin(gw)
    org = admin.org("image-buyer")
    admin.topup(org["id"], "5")
    key = admin.key(org["id"], name="one-image", budget_usd="0.30")
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    first = client.images.with_raw_response.generate(model="gpt-image-1", prompt="a fox", size="1024x1536",
                                                     quality="high")
    assert first.http_response.status_code == 200
    with pytest.raises(openai.RateLimitError) as refused:
        client.images.generate(model="gpt-image-1", prompt="another fox", size="1024x1536", quality="high")
    assert refused.value.body["code"] == "insufficient_quota"
    rows = httpx.get(f"{gw.base_url}/requests", headers={"authorization": f"Bearer {key}"}).json()["data"]
    assert sorted((r["status"], r["cost_nanos"] > 0) for r in rows) == [("completed", True), ("refused", False)]
    spent = sum(r["cost_nanos"] for r in rows)
    assert Admin(gw).balance(org["id"])["balance_nanos"] == 5 * 10**9 - spent


def test_an_edit_uploads_images_and_mask_and_bills_image_input(gw: Gateway, upstream: StandInUpstream) -> None:
    client = gw.client()
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1", image=[("a.png", png(64, 48), "image/png"), ("b.png", png(32, 32), "image/png")],
        mask=("mask.png", png(64, 48), "image/png"), prompt="put a hat on it", quality="medium", size="1024x1024")
    answer = raw.parse()
    assert png_size(base64.b64decode(answer.data[0].b64_json)) == (1024, 1024)
    forwarded = sent(upstream, "/v1/images/edits")
    files = [(f["name"], f["filename"], f["content_type"]) for f in forwarded["_files"]]
    assert files == [("image[]", "a.png", "image/png"), ("image[]", "b.png", "image/png"),
                     ("mask", "mask.png", "image/png")]
    assert (forwarded["prompt"], forwarded["model"], forwarded["quality"]) == ("put a hat on it", "gpt-image-1", "medium")
    image_in = 3 * IMAGE_INPUT_TOKENS
    text_in = len("put a hat on it".split())
    row = record(gw, raw.headers["x-request-id"])
    assert row["usage"]["image_tokens"] == image_in and row["usage"]["units"] == {"image_input_token": image_in}
    assert row["cost_nanos"] == text_in * TEXT_NANOS + image_in * IMAGE_IN_NANOS + 1056 * IMAGE_OUT_NANOS


def test_variations_and_fallback(gw: Gateway) -> None:
    client = gw.client()
    listed = {m.id: m.model_extra["endpoints"] for m in client.models.list().data}
    assert listed["dall-e-2"] == ["/v1/images/edits", "/v1/images/generations", "/v1/images/variations"]
    assert listed["chat"] == ["/v1/chat/completions", "/v1/messages", "/v1/responses"]
    raw = client.images.with_raw_response.create_variation(model="dall-e-2", image=("sq.png", png(256, 256), "image/png"),
                                                           n=2, size="256x256", response_format="b64_json")
    assert len(raw.parse().data) == 2
    assert record(gw, raw.headers["x-request-id"])["cost_nanos"] == 2 * 16_000_000
    fell = client.images.with_raw_response.generate(model="image-fallback", prompt="a tree", quality="low")
    assert fell.headers["x-switchyard-deployment"] == "image-fallback#1"
    assert record(gw, fell.headers["x-request-id"])["cost_nanos"] > 0


def test_streamed_partial_images_are_relayed_and_billed(gw: Gateway, openapi: Validate) -> None:
    client = gw.client()
    with httpx.stream("POST", f"{gw.base_url}/images/generations", headers={"authorization": f"Bearer {USER_KEY}"},
                      json={"model": "gpt-image-1", "prompt": "a kite", "stream": True, "partial_images": 1,
                            "quality": "low"}, timeout=30) as raw:
        lines = [line for line in raw.iter_lines() if line.startswith("data: ")]
    for line in lines:
        event = json.loads(line[6:])
        event.get("usage", {}).pop("cost", None)  # ours, beside OpenAI's fields
        openapi(event, "ImageGenStreamEvent")
    events = list(client.images.generate(model="gpt-image-1", prompt="a comet", quality="low", stream=True,
                                         partial_images=2))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    done = events[-1]
    assert done.usage.output_tokens == 272 and png_size(base64.b64decode(done.b64_json)) == (1024, 1024)
    rows = httpx.get(f"{gw.base_url}/requests", headers={"authorization": f"Bearer {USER_KEY}"},
                     params={"model": "gpt-image-1"}).json()["data"]
    newest = rows[0]
    assert newest["stream"] is True and newest["usage"]["output_tokens"] == 272
    assert newest["cost_nanos"] == len("a comet".split()) * TEXT_NANOS + 272 * IMAGE_OUT_NANOS


@pytest.mark.parametrize(("body", "files", "status", "param"), [
    ({"model": "gpt-image-1", "prompt": "x", "size": "999x999"}, None, 400, "size"),
    ({"model": "gpt-image-1", "prompt": "x", "quality": "ultra"}, None, 400, "quality"),
    ({"model": "dall-e-3", "prompt": "x", "n": 2}, None, 400, "n"),
    ({"model": "dall-e-3", "prompt": "x", "stream": True}, None, 400, "stream"),
    ({"model": "gpt-image-1"}, None, 400, "prompt"),
    ({"model": "chat", "prompt": "x"}, None, 400, "model"),
    ({"model": "gpt-image-1", "prompt": "x"}, {"image": ("a.txt", b"not an image at all", "image/png")}, 400, "image"),
    ({"model": "gpt-image-1", "prompt": "x"}, {"image": ("a.png", png(64, 48), "image/png"),
                                               "mask": ("m.png", png(10, 10), "image/png")}, 400, "mask"),
    ({"model": "gpt-image-1", "prompt": "x"}, {"image": ("big.png", png(8, 8) + b"\0" * 2_100_000, "image/png")},
     413, "image"),
    ({"model": "dall-e-2", "prompt": "x"}, {"image": ("wide.png", png(64, 32), "image/png")}, 400, "image"),
])
def test_bad_image_requests_get_openai_errors(gw: Gateway, body: dict, files: dict | None, status: int,
                                              param: str) -> None:
    headers = {"authorization": f"Bearer {USER_KEY}"}
    if files is None:
        answer = httpx.post(f"{gw.base_url}/images/generations", headers=headers, json=body, timeout=30)
    else:
        data = {k: str(v) for k, v in body.items()}
        answer = httpx.post(f"{gw.base_url}/images/edits", headers=headers, data=data, files=files, timeout=30)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param
