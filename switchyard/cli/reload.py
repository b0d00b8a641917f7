"""`switchyard reload`: re-read the config file (deployments, aliases, tiers, catalog overrides)
without a restart. With --base-url: through the admin API, so every worker of every replica
reloads; without: SIGHUP to the `switchyard serve` of this data directory."""

from __future__ import annotations

import os
import signal

import orjson
import typer

from switchyard.cli import remote
from switchyard.cli.admin import fail, run
from switchyard.config import ConfigError, load_settings


def reload() -> None:
    """Reload the config file in the running server, without dropping a request."""
    if remote.target() is not None:
        summary = run(lambda admin: admin.reload())
        typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
    pid_file = settings.data_dir / "serve.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        fail(f"no running `switchyard serve` found ({pid_file}); or pass --base-url and --admin-key.")
    typer.echo(f"asked switchyard serve (pid {pid}) to reload its config; its log says what changed")
