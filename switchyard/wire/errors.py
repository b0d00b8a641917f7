"""The one error type of the gateway, rendered as an OpenAI error object.

Every failure a client can see goes through `GatewayError`, so every error body is
`{"error": {"message", "type", "param", "code"}}` with the status the official SDK maps to
the right exception class.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson


class GatewayError(Exception):
    """An error with an HTTP status and an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def __repr__(self) -> str:
        return f"GatewayError({self.status}, {self.message!r}, code={self.code!r})"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def invalid_api_key(message: str = "Incorrect API key provided.") -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key")


def permission_denied(message: str) -> GatewayError:
    return GatewayError(403, message, type="permission_error", code="permission_denied")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def not_found(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(404, message, param=param, code="not_found")


def payload_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large"
    )


def server_error(message: str = "The server had an error while processing your request.") -> GatewayError:
    return GatewayError(500, message, type="server_error", code="internal_error")


def upstream_error(
    status: int,
    message: str,
    *,
    type: str = "upstream_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> GatewayError:
    return GatewayError(status, message, type=type, code=code, param=param, headers=headers)
