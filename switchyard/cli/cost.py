"""`switchyard cost`: the exact cost estimate of `POST /v1/cost/estimate`, offline.

Models resolve through the configured model table like the server's (aliases included); a
name that is not configured but is in the catalog is priced from its catalog entry.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
import typer

from switchyard.catalog import CatalogError, ModelSpec, load_catalog
from switchyard.cli.admin import emit, fail, money, show, vertical
from switchyard.config import ConfigError, DeploymentConfig, Settings, load_settings
from switchyard.providers import ChatCall, Provider
from switchyard.routing.table import Deployment, ModelTable
from switchyard.wire.chat import ChatRequest, parse_chat_request
from switchyard.wire.errors import GatewayError


class _CatalogOnly(Provider):
    """Stands in for a deployment that is not configured: limits from the catalog, no calls."""

    kind = "catalog"

    async def chat(self, call: ChatCall) -> dict[str, Any]:
        raise NotImplementedError

    def chat_stream(self, call: ChatCall) -> AsyncIterator[bytes]:
        raise NotImplementedError


def resolve(settings: Settings, model: str) -> tuple[str, Deployment]:
    catalog = load_catalog(overrides=settings.catalog_overrides)
    try:
        public, group = ModelTable(settings, catalog).resolve(model)
        return public, group[0]
    except GatewayError:
        spec: ModelSpec | None = catalog.get(model)
        if spec is None:
            raise
        cfg = DeploymentConfig(provider=spec.provider, model=spec.id, catalog=spec.id, id=f"catalog:{spec.id}")
        return spec.id, Deployment(spec.id, cfg, spec, _CatalogOnly(cfg, spec))


def image_url(ref: str, detail: str) -> dict[str, Any]:
    """An image_url part: URLs as given, local files inlined as data URLs."""
    if not ref.lower().startswith(("http://", "https://", "data:")):
        path = Path(ref).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            fail(f"cannot read image {ref}: {exc.strerror or exc}")
        mime = mimetypes.guess_type(path.name)[0] or ""
        # The declared type only has to say "image": sizes are read from the bytes themselves.
        ref = f"data:{mime if mime.startswith('image/') else 'image/png'};base64,{base64.b64encode(data).decode()}"
    return {"type": "image_url", "image_url": {"url": ref, "detail": detail}}


def build_body(file: Path | None, message: str | None, images: list[str], detail: str) -> dict[str, Any]:
    if (file is None) == (message is None):
        fail("give exactly one of --file and --message", 2)
    if file is not None:
        try:
            body = orjson.loads(file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            fail(f"cannot read {file} as JSON: {exc}", 2)
        if not isinstance(body, dict):
            fail(f"{file} must hold a JSON object (a Chat Completions request)", 2)
    else:
        body = {"messages": [{"role": "user", "content": message}]}
    messages = body.get("messages")
    if images and isinstance(messages, list):
        parts = [image_url(ref, detail) for ref in images]
        last = messages[-1] if messages else None
        if isinstance(last, dict) and last.get("role") == "user":
            content = last.get("content")
            text = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
            last["content"] = text + parts
        else:
            messages.append({"role": "user", "content": parts})
    return body


def render(q: Mapping[str, Any]) -> None:
    rows = [
        ("input tokens", f"{q['input_tokens']:,} (text {q['text_tokens']:,}, images {q['image_tokens']:,})"),
        *[(f"image {i['index']}", f"{i['width']}x{i['height']}, detail {i['detail']}: {i['tokens']:,} tokens")
          for i in q["images"]],
        ("max output tokens", f"{q['max_output_tokens']:,}" + (f" x {q['choices']} choices" if q["choices"] > 1 else "")),
        ("service tier", q["service_tier"]),
        ("price multiplier", q["price_multiplier"]),
        ("cost, input only", money(q["cost"]["min_usd"])),
        ("cost, at max output", money(q["cost"]["max_usd"])),
    ]
    show(vertical(f"cost estimate: {q['model']}", rows))


def cost(
    model: Annotated[str, typer.Option(help="Model name or alias, as a client would send it.")],
    file: Annotated[Optional[Path], typer.Option(help="A Chat Completions request body (JSON).")] = None,
    message: Annotated[Optional[str], typer.Option(help="One user message to price.")] = None,
    image: Annotated[Optional[list[str]], typer.Option(help="Image file, http(s) URL or data URL; repeatable.")] = None,
    detail: Annotated[str, typer.Option(help="Detail level of --image images: auto, low, high, original.")] = "auto",
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Cap on output (max_completion_tokens).")] = None,
    service_tier: Annotated[Optional[str], typer.Option(help="Price at this service tier (e.g. flex, priority).")] = None,
    price_multiplier: Annotated[str, typer.Option(help="An organisation's discount or markup, e.g. 0.7.")] = "1",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw object instead of a table.")] = False,
) -> None:
    """Exact cost range of a request (input only, and with the most output), without sending it."""
    # Offline, a deployment's warnings (e.g. an unset upstream key) are beside the point.
    logging.getLogger("switchyard").setLevel(logging.ERROR)
    try:
        multiplier = Decimal(price_multiplier)
    except InvalidOperation:
        multiplier = Decimal(-1)
    if not multiplier.is_finite() or multiplier < 0:
        raise typer.BadParameter("a non-negative decimal such as 0.7.", param_hint="--price-multiplier")
    body = build_body(file, message, image or [], detail)
    body["model"] = model
    if max_tokens is not None:
        body["max_completion_tokens"] = max_tokens
    if service_tier is not None:
        body["service_tier"] = service_tier

    from switchyard.server.routes.cost import quote  # lazy: aiohttp and the server only for this command

    async def estimate(chat: ChatRequest, public: str, dep: Deployment, settings: Settings) -> dict[str, Any]:
        await dep.provider.start()  # e.g. the local model's tokenizer and real context window
        try:
            return await quote(chat, public, dep, multiplier, policy=settings.fetch,
                               reserve_cap=settings.max_reserve_tokens)
        finally:
            await dep.provider.close()

    try:
        chat = parse_chat_request(body)
        settings = load_settings()
        public, dep = resolve(settings, model)
        result = asyncio.run(estimate(chat, public, dep, settings))
    except (ConfigError, CatalogError) as exc:
        fail(str(exc), 2)
    except GatewayError as exc:
        fail(f"{exc.message} (param: {exc.param})" if exc.param else exc.message)
    emit(result, as_json, render)
