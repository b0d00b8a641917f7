"""The `switchyard` command."""

from __future__ import annotations

import typer

from switchyard.cli.admin import balance, keys, orgs, topup, usage
from switchyard.cli.batch import batch
from switchyard.cli.cost import cost
from switchyard.cli.models import models
from switchyard.cli.routes import routes
from switchyard.cli.serve import serve

app = typer.Typer(no_args_is_help=True, add_completion=False, help="switchyard: one OpenAI-compatible endpoint for many models.")
app.command()(serve)
app.command()(models)
app.add_typer(orgs, name="orgs")
app.add_typer(keys, name="keys")
app.command()(topup)
app.command()(balance)
app.command()(usage)
app.command()(cost)
app.add_typer(routes, name="routes")
app.add_typer(batch, name="batch")


def main() -> None:
    app()
