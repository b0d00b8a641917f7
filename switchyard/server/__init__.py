"""The ASGI application: OpenAI surface under /v1, health, and (later) admin and dashboard."""
