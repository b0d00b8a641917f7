"""Upstream protocols, one module each (see `base.provider_class`)."""

from switchyard.providers.base import (
    ChatCall, CompletionCall, EmbedCall, Embedded, MediaCall, MessagesCall, ModerateCall, Provider, ResponsesCall, ResponsesUnsupported, Speech,
    provider_class,
)

__all__ = [
    "ChatCall", "CompletionCall", "EmbedCall", "Embedded", "MediaCall", "MessagesCall", "ModerateCall", "Provider", "ResponsesCall", "ResponsesUnsupported",
    "Speech", "provider_class",
]
