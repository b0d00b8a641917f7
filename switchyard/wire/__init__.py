"""Typed OpenAI wire objects, errors, SSE framing and JSON helpers."""
