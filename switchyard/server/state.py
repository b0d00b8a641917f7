"""What a worker holds for its whole life: settings, keys, model table, pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.accounts.keys import KeyRing
from switchyard.config import Settings
from switchyard.gateway import Gateway
from switchyard.routing.table import ModelTable


@dataclass(slots=True)
class AppState:
    settings: Settings
    keys: KeyRing
    table: ModelTable
    gateway: Gateway
