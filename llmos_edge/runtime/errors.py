"""Errors the runtime raises; the API maps them to OpenAI-style JSON, the CLIs to exit codes."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """A known failure with a message that says what to do."""


class ConfigError(RuntimeFailure):
    """The runtime config or a model directory is unusable."""


class ApiError(RuntimeFailure):
    """A request that fails with an HTTP status and an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_param(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")
