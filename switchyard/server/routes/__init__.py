"""HTTP routes, one module per surface."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from switchyard.console.routes import routes as console_routes

from switchyard.server.routes import (
    admin, alerts, audio, batches, chat, completions, cost, credits, embeddings, health, images, messages, models, moderations,
    operations, requests, responses, statements, usage,
)
from switchyard.server.routes import files as files_routes


def hot_routes() -> dict[str, Callable[[Request], Awaitable[Response]]]:
    """POST routes served without Starlette's router (server/hot_routes.py); also in `routes`,
    where their other methods get the app's 405."""
    return {"/v1/chat/completions": chat.chat_completions, "/v1/responses": responses.create_response}


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/completions", completions.create_completion, methods=["POST"]),
        Route("/v1/embeddings", embeddings.create_embeddings, methods=["POST"]),
        *images.routes(),
        *audio.routes(),
        *messages.routes(),
        Route("/v1/moderations", moderations.create_moderation, methods=["POST"]),
        *responses.routes(),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.get_model, methods=["GET"]),
        Route("/v1/usage", usage.own_usage, methods=["GET"]),
        *requests.routes(),
        Route("/v1/cost/estimate", cost.estimate_cost, methods=["POST"]),
        *files_routes.routes(),
        *batches.routes(),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        *admin.routes(),
        *operations.routes(),
        *credits.routes(),
        *statements.routes(),
        *alerts.routes(),
        *console_routes(),
    ]
