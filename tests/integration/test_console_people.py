"""People through the admin API and the CLI: users, memberships, invitations; what they
make works in the console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import MASTER_KEY, USER_KEY, start_gateway
from tests.console_helpers import PASSWORD, Browserless
from tests.integration.test_cli_admin import cli, ok, ok_json


def test_people_through_the_admin_api_and_the_cli(tmp_path: Path) -> None:
    # Offline, before any server runs: an organisation, a user in it, an invitation link.
    data = tmp_path / "data"
    org = ok_json(data, "orgs", "create", "Offline Org")
    made = subprocess_create_user(data, "ivy@offline.example", org["id"])
    assert made.returncode == 0, made.stderr
    link = ok(data, "users", "invite", org["id"], "--role", "billing").strip()
    assert "/console/invite/inv_" in link
    listing = ok_json(data, "users", "list")
    assert [(u["email"], u["memberships"][0]["role"]) for u in listing["data"]] == [("ivy@offline.example", "owner")]
    bad = cli(data, "users", "add", "ivy@offline.example", org["id"], "--role", "admin")
    assert bad.returncode == 1 and "role" in bad.stderr

    gw = start_gateway(tmp_path)
    try:
        admin = httpx.Client(base_url=gw.root + "/admin/v1", headers={"authorization": f"Bearer {MASTER_KEY}"})
        user = admin.post("/users", json={"email": "Jo@API.example", "display_name": "Jo", "password": PASSWORD}).json()
        assert user["email"] == "jo@api.example" and "password" not in str(user) and "hash" not in str(user)
        assert admin.post("/users", json={"email": "jo@api.example", "password": PASSWORD}).status_code == 409
        weak = admin.post("/users", json={"email": "k@api.example", "password": "short"})
        assert weak.status_code == 400 and weak.json()["error"]["param"] == "password"
        assert admin.post(f"/users/{user['id']}/memberships", json={"org_id": org["id"], "role": "member"}).status_code == 200
        invitation = admin.post("/invitations", json={"org_id": org["id"], "role": "member", "email": "lee@api.example"}).json()
        assert invitation["status"] == "open" and invitation["url"].startswith(gw.root + "/console/invite/")
        # A non-admin key cannot use any of it.
        assert httpx.get(gw.root + "/admin/v1/users", headers={"authorization": f"Bearer {USER_KEY}"}).status_code == 403

        # Jo signs in and sees the organisation; the CLI's invitation works; an email-bound one
        # refuses another address.
        jo = Browserless(gw)
        assert jo.login("jo@api.example").status_code == 303
        assert jo.http.get(f"/console/o/{org['id']}").status_code == 200
        assert jo.http.get(f"/console/o/{org['id']}/billing").status_code == 404  # a member, not billing
        billing = Browserless(gw)
        # The CLI's link names the configured host and port (8080 here); the path is what counts.
        joined = billing.http.post(link[link.index("/console/"):], data={"email": "bo@offline.example", "password": PASSWORD})
        assert joined.status_code == 303
        assert billing.http.get(f"/console/o/{org['id']}/billing").status_code == 200
        assert billing.http.get(f"/console/o/{org['id']}/keys").status_code == 404  # billing manages no keys
        wrong = Browserless(gw).http.post(invitation["url"], data={"email": "eve@api.example", "password": PASSWORD})
        assert wrong.status_code == 403 and "This invitation is for lee@api.example" in wrong.text
        lee = Browserless(gw).http.post(invitation["url"], data={"email": "Lee@api.example", "password": PASSWORD})
        assert lee.status_code == 303
        removed = admin.delete(f"/users/{user['id']}/memberships/{org['id']}")
        assert removed.status_code == 200
        assert jo.http.get(f"/console/o/{org['id']}").status_code == 404
    finally:
        gw.stop()


def subprocess_create_user(data: Path, email: str, org_id: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["SWITCHYARD_DATA_DIR"] = str(data)
    # The password is prompted for (twice), never an argument.
    return subprocess.run([sys.executable, "-m", "switchyard", "users", "create", email, "--org", org_id, "--role", "owner"],
                          env=env, input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True, timeout=120)
