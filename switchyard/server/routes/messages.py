"""Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens, with errors in
Anthropic's shape (what its SDK and Claude Code expect)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.endpoints import messages as endpoint
from switchyard.metering.tokens import acount_prompt_tokens
from switchyard.server.auth import caller
from switchyard.server.body import read_json
from switchyard.server.model_call import model_call
from switchyard.server.responses import JSONResponse
from switchyard.server.state import AppState
from switchyard.wire.chat import parse_chat_request
from switchyard.wire.errors import GatewayError
from switchyard.wire.messages import anthropic_error, chat_from_messages


def _anthropic_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as err:
            return JSONResponse(anthropic_error(err), status_code=err.status, headers=err.headers)

    return endpoint


async def create_message(request: Request) -> Response:
    beta = request.headers.get("anthropic-beta")  # passed to Anthropic deployments with the request
    return await model_call(request, lambda gw, raw, principal, request_id: endpoint.serve(
        gw, raw, principal, request_id, beta))


async def count_tokens(request: Request) -> Response:
    """The prompt's tokens as the model's deployment counts them (its own counter where it has
    one, else OpenAI's encoding with the chat framing)."""
    state: AppState = request.app.state.sy
    principal = caller(request)
    raw = await read_json(request, state.settings.max_body_bytes, state.settings.limits)
    if isinstance(raw, dict) and "max_tokens" not in raw:
        raw = {**raw, "max_tokens": 1}  # count_tokens takes no limit; the translation wants one
    request_chat = parse_chat_request(chat_from_messages(raw))
    public, group = state.table.resolve(request_chat.model)
    if not principal.may_use(public):
        raise GatewayError(403, f"This API key is not allowed to use model `{request_chat.model}`.",
                           type="permission_error")
    counted = await group[0].provider.count_prompt_tokens(request_chat)
    if counted is None:
        counted = await acount_prompt_tokens(request_chat)
    return JSONResponse({"input_tokens": counted})


def routes() -> list[Route]:
    return [
        Route("/v1/messages", _anthropic_errors(create_message), methods=["POST"]),
        Route("/v1/messages/count_tokens", _anthropic_errors(count_tokens), methods=["POST"]),
    ]
