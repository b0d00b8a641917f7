"""The model routes served without Starlette's router answer as the app would: their endpoint's
answer, a GatewayError or an unexpected exception rendered by the app's own handlers (OpenAI
error objects), and every other method or path left to the app."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.server.hot_routes import HotRoutes
from switchyard.server.responses import JSONResponse, error_response
from switchyard.wire.errors import GatewayError, server_error


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(GatewayError(exc.status_code, "from the app's handler", code="http"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    return error_response(server_error())


HANDLERS = {GatewayError: _gateway_error, HTTPException: _http_error, Exception: _unexpected}


async def answer(request: Request) -> Response:
    body = await request.json()
    if body.get("fail") == "gateway":
        raise GatewayError(400, "model is required", param="model", code="missing_required_parameter")
    if body.get("fail") == "bug":
        raise RuntimeError("a bug")
    return JSONResponse({"app": request.app.state.name, "echo": body})


def test_hot_routes_answer_as_the_app_would() -> None:
    app = Starlette(routes=[Route("/v1/chat/completions", answer, methods=["POST"])], exception_handlers=HANDLERS)
    app.state.name = "sy"
    seen: list[str] = []

    async def endpoint(request: Request) -> Response:
        seen.append(request.url.path)
        return await answer(request)

    hot = HotRoutes(app, {"/v1/chat/completions": endpoint}, HANDLERS)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hot), base_url="http://t") as http:
            ok = await http.post("/v1/chat/completions", json={"x": 1})
            assert ok.status_code == 200 and ok.json() == {"app": "sy", "echo": {"x": 1}}
            refused = await http.post("/v1/chat/completions", json={"fail": "gateway"})
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "missing_required_parameter"
            bug = await http.post("/v1/chat/completions", json={"fail": "bug"})
            assert bug.status_code == 500 and bug.json()["error"]["type"] == "server_error"
            assert "a bug" not in bug.text
            # Not POST, or another path: the app's router decides (405 / 404 through its handler).
            assert (await http.get("/v1/chat/completions")).status_code == 405
            assert (await http.post("/v1/elsewhere", json={})).json()["error"]["code"] == "http"
        assert seen == ["/v1/chat/completions"] * 3

    asyncio.run(scenario())
