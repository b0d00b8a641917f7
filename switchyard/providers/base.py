"""The shape every provider follows: translate the request, call, translate back, map errors.

A provider knows nothing of keys or money. It takes a validated chat request plus the raw
body (so unknown fields can pass through) and returns OpenAI objects: a `chat.completion`
dict, or a stream of `chat.completion.chunk` JSON payloads whose last one carries `usage`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from switchyard.catalog import ModelSpec
from switchyard.config import DeploymentConfig
from switchyard.providers.http import (
    HTTPPool, Response, UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout, transport_error,
)
from switchyard.wire.errors import GatewayError
from switchyard.wire.chat import ChatRequest


log = logging.getLogger("switchyard.providers")


@dataclass(slots=True)
class ChatCall:
    """One attempt at one deployment."""

    request: ChatRequest
    body: dict[str, Any]  # the client's JSON body, unknown fields included
    upstream_model: str
    request_id: str
    # The most one choice may generate: the client's own limit, or the reservation cap or
    # deployment default standing in for a missing one; None leaves it to the model.
    output_limit: int | None = None


@dataclass(slots=True)
class ResponsesCall:
    """One attempt at a deployment that speaks the Responses API itself."""

    body: dict[str, Any]  # a Responses request, conversation already expanded into `input`
    upstream_model: str
    request_id: str


class Provider(ABC):
    """One upstream protocol. One instance serves one configured deployment."""

    kind: ClassVar[str]

    def __init__(self, deployment: DeploymentConfig, spec: ModelSpec) -> None:
        self.deployment = deployment
        self.spec = spec

    async def start(self) -> None:
        """Open connections or load weights; called once per worker at startup."""

    async def close(self) -> None:
        """Release what `start` acquired."""

    @property
    def context_window(self) -> int:
        return self.deployment.context_window or self.spec.context_window

    @property
    def max_output_tokens(self) -> int:
        return self.deployment.max_output_tokens or self.spec.max_output_tokens

    @property
    def default_output_limit(self) -> int | None:
        """What a request without an output limit may generate here (None: up to the max)."""
        return self.deployment.default_max_tokens

    async def count_prompt_tokens(self, request: ChatRequest) -> int | None:
        """Exact prompt tokens as this upstream counts them, when the provider can tell; else None
        (metering counts with an OpenAI encoding)."""
        return None

    @abstractmethod
    async def chat(self, call: ChatCall) -> dict[str, Any]:
        """Return a complete `chat.completion` object including `usage`."""

    @abstractmethod
    def chat_stream(self, call: ChatCall) -> AsyncIterator[list[bytes]]:
        """Yield batches of `chat.completion.chunk` JSON payloads; the last one carries `usage`.

        A batch is what arrived together: relaying it in one write costs one send, not one
        per chunk, while nothing waits for more to arrive.

        Errors before the first chunk raise `GatewayError`; errors after it also raise, and
        the caller turns them into an error event on the client's stream.
        """

    @property
    def native_responses(self) -> bool:
        """True when the upstream serves `/responses` itself; else the gateway translates to chat."""
        return False

    async def respond(self, call: ResponsesCall) -> dict[str, Any]:
        """Return a complete Responses API `response` object (only if `native_responses`)."""
        raise NotImplementedError

    def respond_stream(self, call: ResponsesCall) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield batches of Responses streaming events as dicts (only if `native_responses`)."""
        raise NotImplementedError


class HTTPProvider(Provider):
    """A provider that calls a remote API: credential from the environment, a keep-alive pool."""

    _pool: HTTPPool | None = None

    def credential(self) -> str | None:
        """The API key from the deployment's `api_key_env` (a warning, not a crash, if unset)."""
        dep = self.deployment
        if not dep.api_key_env:
            return None
        key = os.environ.get(dep.api_key_env)
        if not key:
            log.warning("deployment %s: environment variable %s is not set", dep.id, dep.api_key_env)
        return key or None

    def open_pool(self, base_url: str, headers: dict[str, str]) -> HTTPPool:
        dep = self.deployment
        self._pool = HTTPPool(
            base_url,
            connect_timeout=dep.timeouts.connect,
            read_timeout=dep.timeouts.read,
            idle_seconds=float(dep.options.get("keepalive_seconds", 15)),
            headers={**headers, **dep.headers},  # operator-set headers win
        )
        return self._pool

    async def post(
        self, path: str, payload: bytes,
        map_error: Callable[[int, bytes, Mapping[str, str], str], GatewayError], *, stream: bool = False,
    ) -> Response:
        """POST and return the response once its headers are in; upstream and transport errors
        become `GatewayError`s (`map_error` reads the protocol's own error bodies). The whole
        answer must arrive within the deployment's total timeout and size cap (a stream's own)."""
        assert self._pool is not None, "provider not started"
        dep = self.deployment
        deadline = asyncio.get_running_loop().time() + dep.timeouts.total
        try:
            resp = await self._pool.request(
                "POST", path, payload, deadline=deadline,
                max_bytes=dep.max_stream_bytes if stream else dep.max_response_bytes)
            if resp.status >= 400:
                raise map_error(resp.status, await resp.read(), resp.headers, dep.id)
            return resp
        except (UpstreamConnectError, UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, dep.id) from None

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


def provider_class(kind: str) -> type[Provider]:
    """Find the provider for a protocol: the module `switchyard.providers.<kind>` exports it.

    Adding a provider is adding that module (and catalog entries): nothing else to register.
    Modules are imported only when configured, so an unused engine costs no memory.
    """
    if not _KIND.match(kind):
        raise ValueError(f"invalid provider name {kind!r}")
    try:
        module = importlib.import_module(f"switchyard.providers.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name == f"switchyard.providers.{kind}":
            raise ValueError(f"unknown provider {kind!r}") from None
        raise
    cls = getattr(module, "PROVIDER", None)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ValueError(f"switchyard.providers.{kind} does not export PROVIDER")
    return cls
