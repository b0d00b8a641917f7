"""What a worker holds for its whole life: settings, accounts, model table, pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from switchyard.accounts.admin import AccountsAdmin
from switchyard.accounts.directory import Directory
from switchyard.accounts.events import UsageEvents
from switchyard.batch import BatchRunner
from switchyard.config import Settings
from switchyard.console import Console
from switchyard.credits.codes import CodeBook
from switchyard.files import FileStore
from switchyard.files.links import FileLinks
from switchyard.gateway import Gateway
from switchyard.routing.table import ModelTable


@dataclass(slots=True)
class AppState:
    settings: Settings
    directory: Directory
    admin: AccountsAdmin
    events: UsageEvents
    table: ModelTable
    gateway: Gateway
    files: FileStore
    batches: BatchRunner  # the Batch API: its records and the background runner
    console: Console
    links: FileLinks  # signed links to generated images
    codes: CodeBook  # redemption codes
    redis: Any = None  # the worker's Redis client, when configured (readiness pings it)
    reloader: Any = None  # re-reads the config file (SIGHUP, POST /admin/v1/reload)
    gauges: Any = None  # this worker's gauge sampler (a scrape samples its own worker first)
