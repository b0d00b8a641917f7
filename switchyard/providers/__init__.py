"""Upstream protocols, one module each (see `base.provider_class`)."""

from switchyard.providers.base import ChatCall, EmbedCall, Embedded, ModerateCall, Provider, ResponsesCall, ResponsesUnsupported, provider_class

__all__ = ["ChatCall", "EmbedCall", "Embedded", "ModerateCall", "Provider", "ResponsesCall", "ResponsesUnsupported", "provider_class"]
