"""The `switchyard` command."""

from __future__ import annotations

import typer

from switchyard.cli.models import models
from switchyard.cli.serve import serve

app = typer.Typer(no_args_is_help=True, add_completion=False, help="switchyard: one OpenAI-compatible endpoint for many models.")
app.command()(serve)
app.command()(models)


def main() -> None:
    app()
