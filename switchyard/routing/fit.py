"""Can this deployment serve this request at all? Capabilities and size, checked before any call."""

from __future__ import annotations

from switchyard.providers.base import Provider
from switchyard.routing.table import Deployment
from switchyard.wire.chat import ChatRequest, JSONObjectFormat
from switchyard.wire.errors import GatewayError, invalid_request


def check_endpoint(model: str, group: list[Deployment], endpoint: str, *also: str) -> None:
    """The model serves this API at all, natively or through one of `also` (Responses turns
    are translated from chat): an embedding model answers no chat. Else a 400 that says what
    it does serve."""
    if any(dep.spec.endpoints & {endpoint, *also} for dep in group):
        return
    served = sorted({e for dep in group for e in dep.spec.endpoints})
    if endpoint == "chat.completions" and served == ["responses"]:
        message = f"Model `{model}` is only supported in v1/responses, not in v1/chat/completions."
    else:
        message = f"Model `{model}` does not serve {endpoint}; it serves {', '.join(served)}."
    raise invalid_request(message, param="model", code="unsupported_endpoint")


# The provider method that serves each endpoint beyond chat: a provider class that does not
# override it (Anthropic's has no `complete`) cannot serve the endpoint, whatever the catalog says.
PROVIDER_METHODS = {
    "completions": "complete", "embeddings": "embed", "moderations": "moderate",
    "images.generations": "images", "images.edits": "images", "images.variations": "images",
    "audio.transcriptions": "transcribe", "audio.translations": "transcribe", "audio.speech": "speak",
}


def check_provider(dep: Deployment, endpoint: str) -> None:
    """The deployment's catalog entry lists the endpoint and its provider implements it."""
    if endpoint not in dep.spec.endpoints:
        raise invalid_request(f"Deployment {dep.id} ({dep.spec.id}) does not serve {endpoint}.", param="model",
                              code="unsupported_endpoint")
    method = PROVIDER_METHODS.get(endpoint)
    if method is not None and getattr(type(dep.provider), method) is getattr(Provider, method):
        raise invalid_request(f"Deployment {dep.id}: the {dep.config.provider} provider does not implement {endpoint}.",
                              param="model", code="unsupported_endpoint")


def serving(model: str, group: list[Deployment], endpoint: str) -> list[Deployment]:
    """The deployments of `group` that serve `endpoint`; none: the model's 400, or the first reason."""
    check_endpoint(model, group, endpoint)
    able, first = [], None
    for dep in group:
        try:
            check_provider(dep, endpoint)
            able.append(dep)
        except GatewayError as exc:
            first = first or exc
    if not able:
        assert first is not None
        raise first
    return able


def check_capabilities(request: ChatRequest, dep: Deployment) -> None:
    spec = dep.spec
    name = request.model
    if request.has_images and not spec.supports("vision"):
        raise invalid_request(f"Model `{name}` does not support image inputs.", param="messages", code="unsupported_content")
    if request.tools and not spec.supports("tools"):
        raise invalid_request(f"Model `{name}` does not support tools.", param="tools", code="unsupported_parameter")
    if request.json_schema is not None and not spec.supports("json_schema"):
        raise invalid_request(f"Model `{name}` does not support 'json_schema' response format.", param="response_format", code="unsupported_parameter")
    if isinstance(request.response_format, JSONObjectFormat) and not spec.supports("json_object"):
        raise invalid_request(f"Model `{name}` does not support 'json_object' response format.", param="response_format", code="unsupported_parameter")
    if request.reasoning_effort is not None:
        allowed = spec.reasoning_efforts
        if not allowed:
            raise invalid_request(f"Model `{name}` does not support 'reasoning_effort'.", param="reasoning_effort", code="unsupported_parameter")
        if request.reasoning_effort not in allowed:
            raise invalid_request(
                f"Unsupported value: 'reasoning_effort' does not support '{request.reasoning_effort}' with model `{name}`. "
                f"Supported values are: {', '.join(repr(e) for e in allowed)}.",
                param="reasoning_effort",
                code="unsupported_value",
            )
    if request.logprobs and not spec.supports("logprobs"):
        raise invalid_request(f"Model `{name}` does not support 'logprobs'.", param="logprobs", code="unsupported_parameter")


def check_size(request: ChatRequest, dep: Deployment, prompt_tokens: int) -> None:
    """Reject what cannot fit before an upstream is called (and billed)."""
    limit = request.output_limit
    param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    if limit is not None and limit > dep.max_output_tokens:
        raise invalid_request(
            f"{param} is too large: {limit}. This model supports at most {dep.max_output_tokens} "
            f"completion tokens, whereas you provided {limit}.",
            param=param,
            code="invalid_value",
        )
    total = prompt_tokens + (limit or 0)
    if prompt_tokens >= dep.context_window or total > dep.context_window:
        raise invalid_request(
            f"This model's maximum context length is {dep.context_window} tokens. However, you requested "
            f"{total} tokens ({prompt_tokens} in the messages, {limit or 0} in the completion). "
            "Please reduce the length of the messages or completion.",
            param="messages",
            code="context_length_exceeded",
        )
