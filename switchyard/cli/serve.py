"""`switchyard serve`: start the ASGI server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from redis.exceptions import RedisError

from switchyard.accounts.keys import ensure_master_key
from switchyard.catalog import CatalogError, load_catalog
from switchyard.config import ConfigError, load_settings
from switchyard.console.first_run import console_url, setup_link_token
from switchyard.routing.table import ModelTable
from switchyard.store.prepare import prepare_store, reset_shared_holds


def serve(
    host: Annotated[Optional[str], typer.Option(
        envvar="SWITCHYARD_HOST", show_envvar=True, help="Interface to bind.  [default: 127.0.0.1]")] = None,
    port: Annotated[Optional[int], typer.Option(
        envvar="SWITCHYARD_PORT", show_envvar=True, help="Port to bind.  [default: 8080]")] = None,
    workers: Annotated[Optional[int], typer.Option(
        envvar="SWITCHYARD_WORKERS", show_envvar=True,
        help="Worker processes; more than one needs SWITCHYARD_REDIS_URL.  [default: 1]")] = None,
    config: Annotated[Optional[Path], typer.Option(
        envvar="SWITCHYARD_CONFIG", show_envvar=True,
        help="Config file (YAML); see switchyard.example.yaml.  [default: none: serve the local model]")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        envvar="SWITCHYARD_DATA_DIR", show_envvar=True,
        help="Database, uploaded files and the admin key's hash.  [default: ./data]")] = None,
    log_level: Annotated[Optional[str], typer.Option(
        envvar="SWITCHYARD_LOG_LEVEL", show_envvar=True, help="debug, info, warning, error.  [default: info]")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every HTTP request line (uvicorn's access log).")] = False,
) -> None:
    """Start the gateway. With no config it serves the embedded local model."""
    import uvicorn

    from switchyard.observability.directory import prepare_directory

    # Flags become environment variables so every worker process reads the same settings.
    for env_name, value in (
        ("SWITCHYARD_HOST", host),
        ("SWITCHYARD_PORT", port),
        ("SWITCHYARD_WORKERS", workers),
        ("SWITCHYARD_CONFIG", config),
        ("SWITCHYARD_DATA_DIR", data_dir),
        ("SWITCHYARD_LOG_LEVEL", log_level),
    ):
        if value is not None:
            os.environ[env_name] = str(value)
    try:
        settings = load_settings()
        # Build the model table once here so a bad config fails with one line, not a worker traceback.
        ModelTable(settings, load_catalog(overrides=settings.catalog_overrides))
    except (ConfigError, CatalogError) as exc:
        typer.echo(f"switchyard: {exc}", err=True)
        raise typer.Exit(2) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.workers > 1 and not settings.redis_url:
        typer.echo(
            "switchyard: several workers share rate limits and money holds through Redis: "
            "set SWITCHYARD_REDIS_URL (or redis.url in the config), or run one worker.",
            err=True,
        )
        raise typer.Exit(2)
    # Every worker writes its metrics under one fresh directory; /metrics sums them.
    prepare_directory(settings.data_dir / "metrics")
    # Migrate once, here, before any worker starts: workers never race on the schema.
    asyncio.run(prepare_store(settings))
    try:
        asyncio.run(reset_shared_holds(settings))
    except (OSError, RedisError) as exc:
        typer.echo(f"switchyard: cannot reach Redis at the configured URL: {exc}", err=True)
        raise typer.Exit(2) from None
    # Generate the admin key here, once, before workers start, so it is printed exactly once.
    _, new_key = ensure_master_key(settings.master_key, settings.master_key_file)
    if new_key:
        typer.secho("Admin key (shown once; only its hash is kept):", bold=True)
        typer.echo(f"  {new_key}")
    setup_token = asyncio.run(setup_link_token(settings))
    if setup_token:
        typer.secho("Console set-up link (one-time; creates the first operator):", bold=True)
        typer.echo(f"  {console_url(settings)}/setup/{setup_token}")
    typer.echo(f"switchyard listening on http://{settings.host}:{settings.port}/v1 ({settings.workers} worker(s)); "
               f"console at {console_url(settings)}")
    from switchyard.observability.logs import uvicorn_config
    from switchyard.server.supervisor import Supervisor

    pid_file = settings.data_dir / "serve.pid"
    pid_file.write_text(str(os.getpid()))  # `switchyard reload` signals this process
    config = uvicorn.Config(
        "switchyard.server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=uvicorn_config(settings.log_level, settings.log_format),
        access_log=access_log,
        loop="uvloop",
        http="switchyard.server.protocol:GuardedHttpToolsProtocol",  # httptools, with slow-client guards
        timeout_keep_alive=max(1, round(settings.limits.keep_alive_seconds)),
        # SIGTERM: stop accepting, let requests in flight (streams) finish and settle, then exit.
        timeout_graceful_shutdown=max(1, round(settings.drain_seconds)),
    )
    try:
        if settings.workers > 1:
            Supervisor(config, sockets=[config.bind_socket()]).run()
        else:
            server = uvicorn.Server(config)
            server.run()
            if not server.started:
                raise typer.Exit(3)
    finally:
        try:
            if pid_file.read_text() == str(os.getpid()):
                pid_file.unlink()
        except OSError:
            pass
