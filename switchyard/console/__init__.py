"""The web console at /console: people, sessions and the pages customers and operators use."""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.config import ConsoleSettings
from switchyard.console.people import People
from switchyard.console.sessions import AttemptWindow, Sessions


@dataclass(slots=True)
class Console:
    settings: ConsoleSettings
    people: People
    sessions: Sessions
    logins: AttemptWindow  # per client address, against password guessing from one place


__all__ = ["Console", "People", "Sessions"]
