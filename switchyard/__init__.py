"""switchyard: a self-hosted, OpenAI-compatible AI API gateway."""

__version__ = "0.1.0"
