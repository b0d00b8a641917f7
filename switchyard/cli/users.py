"""`switchyard users`: the console's people, straight on the database (like `orgs` and `keys`)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from switchyard.cli import remote
from switchyard.cli.admin import Json, add_row, emit, fail, run, show, when
from switchyard.cli.remote import operations
from switchyard.config import load_settings
from switchyard.console.first_run import console_url, new_setup_token
from switchyard.console.people import People

users = typer.Typer(no_args_is_help=True, add_completion=False,
                    help="Console users: create, list, add to or remove from an organisation, invite.")


def render_users(listing: Any) -> None:
    if not listing["data"]:
        typer.echo("no users yet: `switchyard users setup-link` prints a link for the first operator")
        return
    table = Table("id", "email", "name", "operator", "organisations", "since")
    for u in listing["data"]:
        orgs = ", ".join(f"{m['org_name']} ({m['role']})" for m in u["memberships"]) or "-"
        add_row(table, u["id"], u["email"], u["display_name"], "yes" if u["is_operator"] else "", orgs, when(u["created_at"]))
    show(table)


@users.command("list")
def users_list(as_json: Json = False) -> None:
    async def go(admin: Any) -> Any:
        return {"object": "list", "data": await operations(admin).list_users()}

    emit(run(go), as_json, render_users)


@users.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="Their sign-in address.")],
    name: Annotated[Optional[str], typer.Option(help="Display name (default: the part before @).")] = None,
    operator: Annotated[bool, typer.Option(help="A platform operator: sees every organisation.")] = False,
    org: Annotated[Optional[str], typer.Option(help="Also make them a member of this organisation (id or name).")] = None,
    role: Annotated[str, typer.Option(help="Their role there: owner, member or billing.")] = "member",
    as_json: Json = False,
) -> None:
    """Create a user; the password is asked for (never an argument, so it stays out of shell history)."""
    password = typer.prompt("Password (at least 10 characters)", hide_input=True, confirmation_prompt=True)

    async def go(admin: Any) -> Any:
        ops = operations(admin)
        user = await ops.create_user(email, name, password, operator)
        if org:
            await ops.add_membership(user["id"], org, role)
        return user

    emit(run(go), as_json, lambda u: typer.echo(f"created {u['id']} <{u['email']}>"))


@users.command("add")
def users_add(
    user: Annotated[str, typer.Argument(help="User id or email.")],
    org: Annotated[str, typer.Argument(help="Organisation id or name.")],
    role: Annotated[str, typer.Option(help="owner, member or billing.")] = "member",
) -> None:
    """Add a user to an organisation (or change their role there)."""
    async def go(admin: Any) -> str:
        await operations(admin).add_membership(user, org, role)
        return f"{user} is {role} of {org}"

    typer.echo(run(go))


@users.command("remove")
def users_remove(
    user: Annotated[str, typer.Argument(help="User id or email.")],
    org: Annotated[str, typer.Argument(help="Organisation id or name.")],
) -> None:
    async def go(admin: Any) -> str:
        await operations(admin).remove_membership(user, org)
        return f"{user} is no longer in {org}"

    typer.echo(run(go))


@users.command("invite")
def users_invite(
    org: Annotated[str, typer.Argument(help="Organisation id or name.")],
    role: Annotated[str, typer.Option(help="owner, member or billing.")] = "member",
    email: Annotated[Optional[str], typer.Option(help="Only this address may accept.")] = None,
) -> None:
    """Print a one-time invitation link into an organisation."""
    async def go(admin: Any) -> str:
        return await operations(admin).invite(org, role, email)

    typer.echo(run(go))


@users.command("setup-link")
def users_setup_link() -> None:
    """A new one-time link for the first operator (while there is none); earlier links stop working.
    On the database only: before there is an operator, nobody may ask a server for one."""
    if remote.target() is not None:
        fail("users setup-link works on the database (where `switchyard serve` runs), not over --base-url.")
    settings = load_settings()
    token = run(lambda admin: new_setup_token(People(admin.engine), settings.console.setup_link_hours))
    typer.echo(f"{console_url(settings)}/setup/{token}" if token else "an operator exists already: sign in instead")
