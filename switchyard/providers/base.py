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

import orjson

from switchyard.catalog import ModelSpec
from switchyard.config import ConfigError, DeploymentConfig
from switchyard.providers.http import (
    HTTPPool, Response, UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout, proxy_for, tls_context,
    transport_error,
)
from switchyard.wire.completions import CompletionRequest
from switchyard.wire.embeddings import EmbeddingsRequest
from switchyard.wire.moderations import ModerationRequest
from switchyard.wire.errors import GatewayError, invalid_request
from switchyard.wire.chat import ChatRequest
from switchyard.wire.sse import SSEEvent


log = logging.getLogger("switchyard.providers")


class ResponsesUnsupported(GatewayError):
    """The upstream has no Responses API (a bare 404 or a 405 on /responses): translate to chat."""

    def __init__(self, dep_id: str) -> None:
        super().__init__(404, f"Deployment {dep_id} does not serve the Responses API.", type="upstream_error",
                         code="responses_unsupported")


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
class CompletionCall:
    """One attempt at a legacy text completion at one deployment."""

    request: CompletionRequest
    upstream_model: str
    request_id: str
    output_limit: int  # per completion: the client's max_tokens (16 when unset)


@dataclass(slots=True)
class EmbedCall:
    """One attempt at embedding at one deployment."""

    request: EmbeddingsRequest
    upstream_model: str
    request_id: str


@dataclass(slots=True)
class ModerateCall:
    """One attempt at classifying at one deployment."""

    request: ModerationRequest
    upstream_model: str
    request_id: str


@dataclass(slots=True)
class MessagesCall:
    """One attempt at Anthropic's Messages API at a deployment that speaks it: the client's own
    request, passed through (its beta fields included)."""

    body: dict[str, Any]
    upstream_model: str
    request_id: str
    beta: str | None  # the client's `anthropic-beta` header
    stream: bool


@dataclass(slots=True)
class MediaCall:
    """One attempt at a media endpoint (images, audio) at one deployment: the client's checked
    fields and its uploads, sent as JSON when there are none, else as a multipart form."""

    path: str  # below the API root: /images/generations, /audio/transcriptions, ...
    fields: dict[str, Any]
    files: list[tuple[str, str, str, bytes]]  # (field, file name, content type, bytes)
    upstream_model: str
    request_id: str


@dataclass(slots=True)
class Speech:
    """Audio as it is made: its content type, its bytes as they come, and, once they are all in,
    the upstream's usage when it reports one (None: billed by what the catalog says of input)."""

    content_type: str
    chunks: AsyncIterator[bytes]
    usage: dict[str, Any] | None = None


@dataclass(slots=True)
class Embedded:
    vectors: list[list[float]]  # in input order
    prompt_tokens: int | None  # as the upstream counted them, when it says


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

    # Whether `count_prompt_tokens` is what this upstream bills, not its estimate of it.
    prompt_count_is_billed: ClassVar[bool] = True

    @property
    def tokenizer_is_openai(self) -> bool:
        """Whether OpenAI's encodings are this model's own (its prompts count at least as o200k
        does): OpenAI's models, wherever they are served (OpenAI, Azure, a proxy)."""
        return self.spec.owned_by == "openai"

    async def count_prompt_tokens(self, request: ChatRequest) -> int | None:
        """Exact prompt tokens as this upstream counts them (its tokenizer and chat template), when
        the provider can tell; else None (metering counts with an OpenAI encoding)."""
        return None

    async def count_output_tokens(self, text: str) -> int | None:
        """Tokens of an answer's text as this upstream counts them, when the provider can tell.
        Used only when an upstream reported no usage; None: metering counts with an OpenAI encoding."""
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

    async def embed(self, call: EmbedCall) -> Embedded:
        """One vector per input. Only for deployments whose catalog entry lists `embeddings`."""
        raise invalid_request(f"Deployment {self.deployment.id} does not serve embeddings.", param="model",
                              code="unsupported_endpoint")

    async def moderate(self, call: ModerateCall) -> dict[str, Any]:
        """OpenAI's moderation object. Only for deployments whose catalog entry lists `moderations`."""
        raise invalid_request(f"Deployment {self.deployment.id} does not serve moderations.", param="model",
                              code="unsupported_endpoint")

    async def complete(self, call: CompletionCall) -> dict[str, Any]:
        """A `text_completion` object with usage. Only for catalog entries listing `completions`."""
        raise _unsupported(self.deployment.id, "/v1/completions (it is a chat model)")

    def complete_stream(self, call: CompletionCall) -> AsyncIterator[list[bytes]]:
        """Batches of `text_completion` chunk payloads; the last one carries `usage`."""
        raise _unsupported(self.deployment.id, "/v1/completions (it is a chat model)")

    async def images(self, call: MediaCall) -> dict[str, Any]:
        """OpenAI's images object (`data` of b64_json images, `usage`). Only for deployments
        whose catalog entry lists an images endpoint."""
        raise _unsupported(self.deployment.id, "images")

    def images_stream(self, call: MediaCall) -> AsyncIterator[list[dict[str, Any]]]:
        """Batches of image stream events (partial images, then each completed image with usage)."""
        raise _unsupported(self.deployment.id, "streamed images")

    async def transcribe(self, call: MediaCall) -> dict[str, Any]:
        """A transcription (or translation) as JSON: `text`, and `segments` when asked for verbose_json."""
        raise _unsupported(self.deployment.id, "audio transcriptions")

    def transcribe_stream(self, call: MediaCall) -> AsyncIterator[list[dict[str, Any]]]:
        """Batches of transcript events (`transcript.text.delta`, then `transcript.text.done` with usage)."""
        raise _unsupported(self.deployment.id, "streamed transcriptions")

    async def speak(self, call: MediaCall) -> Speech:
        """Speech for a text, its bytes streamed as the upstream makes them."""
        raise _unsupported(self.deployment.id, "speech")

    @property
    def native_messages(self) -> bool:
        """True when the upstream speaks Anthropic's Messages API: `/v1/messages` passes through."""
        return False

    async def message(self, call: MessagesCall) -> dict[str, Any]:
        """Anthropic's message object (only if `native_messages`)."""
        raise NotImplementedError

    def message_stream(self, call: MessagesCall) -> AsyncIterator[list[SSEEvent]]:
        """Batches of Anthropic's stream events as they came (only if `native_messages`)."""
        raise NotImplementedError

    async def respond(self, call: ResponsesCall) -> dict[str, Any]:
        """Return a complete Responses API `response` object (only if `native_responses`)."""
        raise NotImplementedError

    def respond_stream(self, call: ResponsesCall) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield batches of Responses streaming events as dicts (only if `native_responses`)."""
        raise NotImplementedError

    async def compact(self, call: ResponsesCall) -> dict[str, Any]:
        """Return a `response.compaction` object from `/responses/compact` (only if `native_responses`)."""
        raise NotImplementedError


def _unsupported(dep_id: str, what: str) -> GatewayError:
    return invalid_request(f"Deployment {dep_id} does not serve {what}.", param="model", code="unsupported_endpoint")


class HTTPProvider(Provider):
    """A provider that calls a remote API: credential from the environment, a keep-alive pool.

    Deployment options for the way out: `proxy` (an http:// proxy URL, or `none`; default: the
    HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment), `ca_file` (CAs to trust instead of the
    system's), `cert_file` and `key_file` (a client certificate)."""

    _pool: HTTPPool | None = None

    def __init__(self, deployment: DeploymentConfig, spec: ModelSpec) -> None:
        super().__init__(deployment, spec)
        opts = deployment.options
        for name in ("ca_file", "cert_file", "key_file"):
            if opts.get(name) is not None and not os.path.isfile(str(opts[name])):
                raise ConfigError(f"deployment {deployment.id}: {name} {opts[name]} is not a readable file")
        if opts.get("key_file") and not opts.get("cert_file"):
            raise ConfigError(f"deployment {deployment.id}: key_file needs cert_file")
        if opts.get("proxy") is not None:
            try:
                proxy_for(deployment.base_url or "https://x", str(opts["proxy"]))
            except ValueError as exc:
                raise ConfigError(f"deployment {deployment.id}: {exc}") from None

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
        opts = dep.options
        proxy = proxy_for(base_url, str(opts["proxy"]) if opts.get("proxy") is not None else None)
        if proxy is not None:
            log.info("deployment %s goes through the proxy %s:%d", dep.id, proxy.host, proxy.port)
        self._pool = HTTPPool(
            base_url,
            connect_timeout=dep.timeouts.connect,
            read_timeout=dep.timeouts.read,
            idle_seconds=float(opts.get("keepalive_seconds", 15)),
            headers={**headers, **dep.headers},  # operator-set headers win
            tls=tls_context(opts.get("ca_file"), opts.get("cert_file"), opts.get("key_file")),
            proxy=proxy,
        )
        return self._pool

    async def post(
        self, path: str, payload: bytes,
        map_error: Callable[[int, bytes, Mapping[str, str], str], GatewayError], *, stream: bool = False,
        content_type: str | None = None, headers: bytes = b"",
    ) -> Response:
        """POST and return the response once its headers are in; upstream and transport errors
        become `GatewayError`s (`map_error` reads the protocol's own error bodies). The whole
        answer must arrive within the deployment's total timeout and size cap (a stream's own)."""
        assert self._pool is not None, "provider not started"
        dep = self.deployment
        deadline = asyncio.get_running_loop().time() + dep.timeouts.total
        try:
            resp = await self._pool.request(
                "POST", path, payload, headers, deadline=deadline, content_type=content_type,
                max_bytes=dep.max_stream_bytes if stream else dep.max_response_bytes)
            if resp.status >= 400:
                raise map_error(resp.status, await resp.read(), resp.headers, dep.id)
            return resp
        except (UpstreamConnectError, UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, dep.id) from None

    async def ask(self, path: str, payload: Any, *, from_root: bool = False, timeout: float = 10.0) -> Any | None:
        """A small request of the gateway's own (a token count): the JSON answer of a 200, else None.
        Failures are the caller's cue to count another way, never the request's error."""
        if self._pool is None:
            return None
        try:
            resp = await self._pool.request(
                "POST", path, orjson.dumps(payload), deadline=asyncio.get_running_loop().time() + timeout,
                max_bytes=1 << 20, from_root=from_root)
            raw = await resp.read()
            return orjson.loads(raw) if resp.status == 200 else None
        except (UpstreamConnectError, UpstreamTimeout, UpstreamProtocolError, orjson.JSONDecodeError) as exc:
            log.debug("deployment %s: %s failed: %s", self.deployment.id, path, exc)
            return None

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
