"""`switchyard routes explain`: which deployments would serve a request, why not, at what cost, in what order.

Offline: the configured model table is built but no provider is started and nothing is sent
upstream. Prompt tokens are the exact o200k count (a started local model could count its own),
and the order comes from a fresh `Router`: every circuit breaker closed, no latency measured yet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from switchyard.catalog import CatalogError, load_catalog
from switchyard.catalog.catalog import ENDPOINTS
from switchyard.cli.admin import add_row, emit, fail, money, show
from switchyard.cli.cost import build_body
from switchyard.config import ConfigError, load_settings
from switchyard.metering.cost import TokenUsage, cost_nanos, usd
from switchyard.metering.estimate import Quote
from switchyard.metering.tokens import count_prompt_tokens
from switchyard.routing.fit import check_capabilities, check_endpoint, check_provider, check_size, serving
from switchyard.routing.router import Router
from switchyard.routing.table import Deployment, ModelTable
from switchyard.wire.chat import ChatRequest, parse_chat_request
from switchyard.wire.errors import GatewayError

routes = typer.Typer(no_args_is_help=True, add_completion=False, help="Routing: how requests pick deployments.")

FRESH_ROUTER = "fresh router: every circuit breaker closed, no latency measured yet, nothing in flight"
# A stand-in tool for --tools: enough for the capability check and a realistic token count.
SAMPLE_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
_STRATEGY_NOTES = {
    "cheapest": "by priority, then cost of this request at the expected output",
    "latency": "by priority, then measured time to first byte (none measured yet: config order)",
    "least_busy": "by priority, then requests in flight (none yet: config order)",
    "weighted": "by priority, then a random draw by weight (this order is one sample)",
    "priority": "by priority, then config order",
}


def _reason(exc: GatewayError) -> dict[str, Any]:
    return {"message": exc.message, "param": exc.param, "code": exc.code, "status": exc.status}


def explain_request(table: ModelTable, model: str, request: ChatRequest, default_output: int,
                    endpoint: str = "chat.completions") -> dict[str, Any]:
    """The explanation as a plain object (what `--json` prints); raises GatewayError for an unknown model.
    `endpoint`: the API asked about (a catalog endpoint name); beyond chat, a deployment serves it
    when its catalog entry lists it and its provider implements it."""
    public, group = table.resolve(model)
    strategy = table.strategy(public)
    quote = Quote(request)  # as the gateway: image tokens per catalog entry, output per choice times n
    text_tokens = count_prompt_tokens(request)  # exact o200k: offline, no provider counts its own
    choices = quote.choices
    expected_output = (request.output_limit or default_output) * choices
    images = quote.image_tokens(group[0].spec)

    def prompt_tokens(dep: Deployment) -> int:
        return text_tokens + quote.image_tokens(dep.spec)

    rows: list[dict[str, Any]] = []
    for dep in group:
        reason: GatewayError | None = None
        tokens = prompt_tokens(dep)
        try:
            if endpoint == "chat.completions":
                check_endpoint(model, [dep], endpoint)
                check_capabilities(request, dep)
                check_size(request, dep, tokens)
            else:
                check_provider(dep, endpoint)
        except GatewayError as exc:
            reason = exc
        # The most it could bill: every choice at the request's cap (or the deployment's default),
        # never past what the deployment can generate.
        worst_output = quote.at(dep).output_bound
        prices = dep.spec.prices
        rows.append({
            "id": dep.id,
            "provider": dep.config.provider,
            "upstream_model": dep.config.model,
            "catalog": dep.spec.id,
            "can_serve": reason is None,
            "reason": None if reason is None else _reason(reason),
            "prompt_tokens": tokens,
            "expected_output_tokens": expected_output,
            "context_window": dep.context_window,
            "max_output_tokens": dep.max_output_tokens,
            "prices": {"input": str(prices.input), "output": str(prices.output)},
            "cost_usd": usd(cost_nanos(prices, TokenUsage(input_tokens=tokens, output_tokens=expected_output))),
            "worst_case_output_tokens": worst_output,
            "worst_case_usd": usd(cost_nanos(prices, TokenUsage(input_tokens=tokens, output_tokens=worst_output))),
            "weight": dep.config.weight,
            "priority": dep.config.priority,
            "retries": dep.config.retries,
            "rank": None,
        })

    refused: dict[str, Any] | None = None
    order: list[str] = []
    try:
        if endpoint == "chat.completions":
            check_endpoint(model, group, endpoint)
            able = [d for d in group if endpoint in d.spec.endpoints]
        else:
            able = serving(model, group, endpoint)
        order = [d.id for d in Router().candidates(request, able, strategy, prompt_tokens, expected_output)]
    except GatewayError as exc:
        refused = _reason(exc)
    by_id = {row["id"]: row for row in rows}
    for rank, dep_id in enumerate(order, 1):
        by_id[dep_id]["rank"] = rank
    return {
        "object": "routes.explanation",
        "model": model,
        "endpoint": endpoint,
        "public_name": public,
        "strategy": strategy,
        "strategy_order": _STRATEGY_NOTES.get(strategy, _STRATEGY_NOTES["priority"]),
        "router": FRESH_ROUTER,
        "prompt_tokens": text_tokens + images,
        "text_tokens": text_tokens,
        "image_tokens": images,
        "choices": choices,
        "token_count": "exact o200k_base count (offline: providers not started)",
        "expected_output_tokens": expected_output,
        "deployments": rows,
        "order": order,
        "refused": refused,
    }


def render(x: Mapping[str, Any]) -> None:
    alias = f" (alias of {x['public_name']})" if x["public_name"] != x["model"] else ""
    table = Table(
        "#", "deployment", "provider", "upstream model", "catalog", "serves?", "prompt", "exp. out",
        "cost", "worst case", "weight", "prio", "retries",
        title=Text(f"routes for {x['model']}{alias}: strategy {x['strategy']}"),
    )
    for col in (0, 6, 7, 8, 9, 10, 11, 12):
        table.columns[col].justify = "right"
    table.columns[1].overflow = "fold"
    for d in x["deployments"]:
        serves = Text("yes", style="green") if d["can_serve"] else Text(f"no: {d['reason']['message']}", style="red")
        add_row(
            table, "-" if d["rank"] is None else str(d["rank"]), d["id"], d["provider"], d["upstream_model"], d["catalog"],
            serves, f"{d['prompt_tokens']:,}", f"{d['expected_output_tokens']:,}", money(d["cost_usd"]),
            f"{money(d['worst_case_usd'])} ({d['worst_case_output_tokens']:,} out)",
            str(d["weight"]), str(d["priority"]), str(d["retries"]),
        )
    show(table)
    console = Console(highlight=False, soft_wrap=True)
    console.print(Text(
        f"prompt tokens: {x['prompt_tokens']:,} ({x['token_count']}; images {x['image_tokens']:,}); "
        f"expected output: {x['expected_output_tokens']:,}; costs at standard-tier catalog prices"))
    if x["refused"] is not None:
        r = x["refused"]
        param = f" (param: {r['param']})" if r["param"] else ""
        console.print(Text(f"REFUSED: no deployment can serve this request; the gateway would answer "
                           f"{r['status']} {r['code'] or ''}: {r['message']}{param}", style="bold red"))
    else:
        console.print(Text(f"order tried ({x['strategy_order']}; {x['router']}):"))
        console.print(Text("  " + " -> ".join(x["order"]), style="bold"))


@routes.command("explain")
def explain(
    model: Annotated[str, typer.Option(help="Model name or alias, as a client would send it.")],
    file: Annotated[Optional[Path], typer.Option(help="A Chat Completions request body (JSON).")] = None,
    message: Annotated[Optional[str], typer.Option(help="One user message.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Cap on output (max_completion_tokens).")] = None,
    tools: Annotated[bool, typer.Option("--tools", help="Add a sample function tool to the request.")] = False,
    image: Annotated[Optional[list[str]], typer.Option(help="Image file, http(s) URL or data URL; repeatable.")] = None,
    detail: Annotated[str, typer.Option(help="Detail level of --image images: auto, low, high, original.")] = "auto",
    endpoint: Annotated[str, typer.Option(help="The API asked about: chat.completions, completions, embeddings, "
                                               "images.generations, audio.transcriptions, ...")] = "chat.completions",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw object instead of a table.")] = False,
) -> None:
    """Every deployment of a model: can it serve this request (and why not), its cost, and the order tried."""
    logging.getLogger("switchyard").setLevel(logging.ERROR)  # offline: e.g. an unset upstream key is beside the point
    body = build_body(file, message, image or [], detail)
    body["model"] = model
    if max_tokens is not None:
        body["max_completion_tokens"] = max_tokens
    if tools:
        body["tools"] = [*(body.get("tools") or []), SAMPLE_TOOL]
    if endpoint not in ENDPOINTS:
        fail(f"unknown endpoint {endpoint!r}; one of {', '.join(sorted(ENDPOINTS))}", 2)
    try:
        settings = load_settings()
        table = ModelTable(settings, load_catalog(overrides=settings.catalog_overrides))
        request = parse_chat_request(body)
        result = explain_request(table, model, request, settings.default_output_estimate, endpoint)
    except (ConfigError, CatalogError) as exc:
        fail(str(exc), 2)
    except GatewayError as exc:
        fail(f"{exc.message} (param: {exc.param})" if exc.param else exc.message)
    emit(result, as_json, render)
