"""The `switchyard` command."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated, Optional

import typer

from switchyard.cli.alerts import alerts
from switchyard.cli.users import users
from switchyard.cli.admin import balance, keys, orgs, topup, usage
from switchyard.cli.batch import batch
from switchyard.cli import remote
from switchyard.cli.codes import codes
from switchyard.cli.reload import reload
from switchyard.cli.cost import cost
from switchyard.cli.models import models
from switchyard.cli.routes import routes
from switchyard.cli.serve import serve
from switchyard.cli.statement import statement

app = typer.Typer(
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # plain help text: [default: …] and env hints are shown as written
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"switchyard {metadata.version('switchyard')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    base_url: Annotated[Optional[str], typer.Option(
        envvar="SWITCHYARD_BASE_URL", show_envvar=True,
        help="Run admin commands against this server's admin API (e.g. https://ai.example.com).")] = None,
    admin_key: Annotated[Optional[str], typer.Option(
        envvar="SWITCHYARD_ADMIN_KEY", show_envvar=True, help="The master key, for --base-url.")] = None,
) -> None:
    """switchyard: one OpenAI-compatible endpoint for many models.

    Admin commands (orgs, keys, users, topup, balance, usage, codes, alerts, statement, reload)
    work on the database in the data directory (SWITCHYARD_DATA_DIR, default ./data; or
    SWITCHYARD_DATABASE_URL), or, with --base-url and --admin-key, on a running server over its
    admin API. `switchyard --install-completion` adds shell completion."""
    remote.configure(base_url, admin_key)


app.command()(serve)
app.command()(models)
app.add_typer(orgs, name="orgs")
app.add_typer(keys, name="keys")
app.add_typer(users, name="users")
app.command()(topup)
app.command()(balance)
app.command()(usage)
app.command()(cost)
app.command()(statement)
app.add_typer(routes, name="routes")
app.add_typer(batch, name="batch")
app.add_typer(codes, name="codes")
app.add_typer(alerts, name="alerts")
app.command()(reload)


def main() -> None:
    app()
