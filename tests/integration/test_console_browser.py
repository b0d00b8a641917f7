"""The console in a real browser (Debian's chromium, driven by Playwright) against a real
server: from the set-up link to a customer's first request, seen live, and every page
photographed light and dark, phone and desktop, into SCREENSHOTS for a person to look at."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import Gateway
from tests.console_helpers import PASSWORD, console_gateway, setup_link

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("SWITCHYARD_SCREENSHOTS", Path(__file__).resolve().parents[2] / "test-artifacts" / "console"))
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = console_gateway(tmp_path_factory.mktemp("console-browser"))
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def context(browser: Browser, gw: Gateway) -> BrowserContext:
    ctx = browser.new_context(base_url=gw.root, viewport=DESKTOP)
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=gw.root)
    ctx.set_default_timeout(30_000)
    return ctx


def shoot(page: Page, name: str) -> None:
    """The page as a person sees it, in light and dark, at phone and desktop width."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            page.wait_for_timeout(150)  # the charts redraw at the new width
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{scheme}-{label}.png"), full_page=True)
            # Nothing sticks out sideways: wide tables scroll inside their box, not the page.
            assert page.evaluate("document.documentElement.scrollWidth") <= size["width"], f"{name} at {label}"
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(DESKTOP)


def test_from_setup_link_to_a_live_request(browser: Browser, gw: Gateway) -> None:
    op_ctx = context(browser, gw)
    op = op_ctx.new_page()
    shoot_login = op_ctx.new_page()
    shoot_login.goto("/console/login")
    shoot(shoot_login, "login")
    shoot_login.close()

    # The operator's first visit: the one-time link serve printed.
    op.goto(setup_link(gw))
    shoot(op, "setup")
    op.fill("input[name=email]", "operator@example.com")
    op.fill("input[name=display_name]", "Olivia Operator")
    op.fill("input[name=password]", PASSWORD)
    op.click("button.primary")
    expect(op).to_have_url(re.compile(r"/console/operator$"))

    # An organisation, money, an invitation.
    op.click("nav >> text=Organisations")
    op.fill("input[name=name]", "Acme Robotics")
    op.click("button.primary")
    expect(op.locator("h1")).to_have_text("Acme Robotics")
    org_url = op.url
    org_id = org_url.rsplit("/", 1)[1]
    topup = op.locator("form", has=op.locator("input[name=action][value=topup]"))
    topup.locator("input[name=amount_usd]").fill("25")
    topup.locator("input[name=note]").fill("first purchase")
    topup.locator("button").click()
    expect(op.locator(".card").first).to_contain_text("$25.00")
    invite = op.locator("form", has=op.locator("input[name=action][value=invite]"))
    invite.locator("select[name=role]").select_option("owner")
    invite.locator("button").click()
    link = op.locator("#invite-link").inner_text().strip()
    assert "/console/invite/inv_" in link
    shoot(op, "operator-org")

    # The invited customer signs up through the link, in a browser of their own.
    ctx = context(browser, gw)
    page = ctx.new_page()
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Join Acme Robotics")
    shoot(page, "invite")
    page.fill("input[name=email]", "casey@acme.example")
    page.fill("input[name=display_name]", "Casey Customer")
    page.fill("input[name=password]", PASSWORD)
    page.click("button.primary")
    expect(page).to_have_url(re.compile(rf"/console/o/{org_id}$"))
    expect(page.locator(".empty").first).to_contain_text("No requests yet")

    # A key: the secret shown once, copied with the button.
    page.click("nav >> text=API keys")
    page.fill("input[name=name]", "backend-prod")
    page.fill("input[name=budget_usd]", "10")
    page.click("form[data-create-key] button.primary")
    secret = page.locator("#new-key").inner_text().strip()
    assert secret.startswith("sk-")
    page.click("button[data-copy]")
    expect(page.locator("[data-copied]")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shoot(page, "key-created")
    page.click("text=Done")
    assert secret not in page.content()  # never again
    expect(page.locator("table")).to_contain_text("backend-prod")
    shoot(page, "keys")

    # The overview is listening; a request with the SDK appears on its live chart.
    page.click("nav >> text=Overview")
    expect(page.locator("[data-live-badge]")).to_have_attribute("data-connected", "1")
    client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
    answer = client.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Say hello to Acme."}], max_tokens=12)
    answered = time.monotonic()
    request_id = answer.headers["x-request-id"]
    expect(page.locator("#hour-requests")).to_have_attribute("data-updated", re.compile(r"^[1-9]"), timeout=15_000)
    seen_after = time.monotonic() - answered
    assert seen_after < 2, f"the live chart showed the request after {seen_after:.2f} s"
    shoot(page, "overview")

    # The request log has it, with its cost; the detail view too.
    page.click("nav >> text=Request log")
    row = page.locator("tr", has=page.locator(f"text={request_id}"))
    expect(row).to_contain_text("backend-prod")
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("$0.00")  # a fraction of a cent, shown with its digits
    shoot(page, "requests")
    row.locator("a").click()
    expect(page.locator("h1")).to_contain_text(request_id)
    shoot(page, "request-detail")

    for nav, name in (("Usage", "usage"), ("Billing", "billing"), ("Models & pricing", "models")):
        page.click(f"nav >> text={nav}")
        expect(page.locator("h1")).to_have_text(nav)
        shoot(page, name)
    page.click("header >> text=Casey Customer")
    expect(page.locator("h1")).to_have_text("Your account")
    shoot(page, "account")
    page.goto(f"/console/o/{org_id}/billing/statement")
    expect(page.locator(".statement")).to_contain_text("first purchase")
    shoot(page, "statement")

    # A code the operator makes in the console (downloaded once, as CSV), redeemed by the customer.
    op.goto("/console/operator/codes")
    op.fill("input[name=name]", "Launch week")
    op.fill("input[name=value_usd]", "5")
    op.fill("input[name=count]", "2")
    with op.expect_download() as download:
        op.click("button:has-text('Make codes')")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == "code,value_usd,batch,expires_at" and len(lines) == 3
    op.goto("/console/operator/codes")
    expect(op.locator("table")).to_contain_text("Launch week")
    shoot(op, "operator-codes")
    page.click("nav >> text=Credits")
    page.fill("input[name=code]", lines[1].split(",")[0])
    page.click("button:has-text('Redeem')")
    expect(page.locator(".notice")).to_contain_text("5 USD added from 'Launch week'")
    expect(page.locator("#referral-link")).to_contain_text("/console/signup?ref=")
    shoot(page, "credits")
    page.click("nav >> text=Alerts")
    page.fill("input[name=webhook_url]", "https://hooks.example.com/switchyard")
    page.fill("input[name=balance_below_usd]", "5")
    page.click("button:has-text('Save')")
    expect(page.locator("#webhook-secret")).to_contain_text("whsec_")
    expect(page.locator("input[name=webhook_url]")).to_have_value("https://hooks.example.com/switchyard")
    shoot(page, "alerts")

    # The playground answers from the local model and shows what the reply cost.
    page.click("nav >> text=Playground")
    page.fill("textarea[name=system]", "You are terse.")
    page.fill("textarea[name=message]", "Name a colour.")
    page.click("[data-send]")
    cost = page.locator("[data-cost]")
    expect(cost).to_contain_text("Cost $", timeout=60_000)
    expect(page.locator(".msg.assistant .text")).not_to_have_text("…")
    shoot(page, "playground")

    # Revoked in the console: the SDK is refused within a second.
    page.click("nav >> text=API keys")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr", has=page.locator("text=backend-prod")).locator("button.danger").click()
    expect(page.locator("tr", has=page.locator("text=backend-prod"))).to_contain_text("revoked")
    revoked = time.monotonic()
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="smollm2-135m-instruct", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4)
    assert time.monotonic() - revoked < 1

    # The operator's pages, with the customer's request in them.
    for path, name in (("/console/operator", "operator-dashboard"), ("/console/operator/orgs", "operator-orgs"),
                       ("/console/operator/users", "operator-users"), ("/console/operator/deployments", "operator-deployments"),
                       ("/console/operator/feed", "operator-feed")):
        op.goto(path)
        shoot(op, name)
    op.goto("/console/operator")
    expect(op.locator(".table-wrap table").first).to_contain_text("Acme Robotics")
    ctx.close()
    op_ctx.close()


def test_the_live_feed_shows_requests_from_the_sdk(browser: Browser, gw: Gateway) -> None:
    ctx = context(browser, gw)
    page = ctx.new_page()
    page.goto("/console/login")
    page.fill("input[name=email]", "operator@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("button.primary")
    page.goto("/console/operator/feed")
    expect(page.locator("[data-live-badge]")).to_have_attribute("data-connected", "1")
    reply = gw.client().chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    expect(page.locator("table[data-feed] tbody")).to_contain_text(reply.headers["x-request-id"])
    ctx.close()
