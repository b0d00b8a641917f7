"""Every console URL, under /console."""

from __future__ import annotations

from decimal import Decimal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from switchyard.console import alert_pages, auth_pages, credit_pages, operator_pages, pages
from switchyard.console.prices import price_rows
from switchyard.console.web import STATIC, not_found_page, render


async def public_pricing(request: Request) -> Response:
    """Models and list prices for people without an account (`console.public_pricing: true`)."""
    state = request.app.state.sy
    if not state.console.settings.public_pricing:
        return not_found_page(request)
    rows = price_rows(state.table)
    return render(None, "pricing.html", {"price_multiplier": str(Decimal(1)), "data": rows}, request=request)


def routes() -> list[BaseRoute]:
    return [
        Route("/console", auth_pages.home_page, methods=["GET"]),
        Route("/console/", auth_pages.home_page, methods=["GET"]),
        Route("/console/login", auth_pages.login, methods=["GET", "POST"]),
        Route("/console/logout", auth_pages.logout_page, methods=["POST"]),
        Route("/console/account", auth_pages.account_page, methods=["GET", "POST"]),
        Route("/console/setup/{token}", auth_pages.setup, methods=["GET", "POST"]),
        Route("/console/invite/{token}", auth_pages.invite, methods=["GET", "POST"]),
        Route("/console/signup", auth_pages.signup, methods=["GET", "POST"]),
        Route("/console/pricing", public_pricing, methods=["GET"]),
        *pages.routes(),
        *operator_pages.routes(),
        *credit_pages.routes(),
        *alert_pages.routes(),
        Mount("/console/static", StaticFiles(directory=STATIC), name="console-static"),
    ]
