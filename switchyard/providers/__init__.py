"""Upstream protocols, one module each (see `base.provider_class`)."""

from switchyard.providers.base import ChatCall, Provider, ResponsesCall, provider_class

__all__ = ["ChatCall", "Provider", "ResponsesCall", "provider_class"]
