"""The embedded local model (llama.cpp in-process)."""

from switchyard.providers.local.provider import PROVIDER, LocalProvider

__all__ = ["PROVIDER", "LocalProvider"]
