"""The Responses API's own state: stored responses (conversation chains) and event streams."""

from switchyard.responses.store import ResponseStore

__all__ = ["ResponseStore"]
