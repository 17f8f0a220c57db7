"""The one error family of the server and its one mapping to gRPC status codes and HTTP status codes.

Codes are gRPC / absl status codes (TF Serving casts its TF status code straight to the gRPC code). The HTTP
mapping is TF Serving's `ToHTTPStatusCode` (`model_servers/http_server.cc`).
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC status codes; their names are also `tensorflow.error.Code` names."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

# TF Serving cuts long gRPC error messages (util/grpc_status_util.cc).
MAX_GRPC_MESSAGE = 1024


class ServingError(Exception):
    """An expected failure of a request or a load: a status code and TF Serving's message text."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"

    def status_text(self) -> str:
        """absl's `Status::ToString()` form: `INVALID_ARGUMENT: message`."""
        return f"{self.code.name}: {self.message}"


class RequestTooLarge(ServingError):
    """A request above `--max_request_bytes`: RESOURCE_EXHAUSTED, answered 413 over HTTP (not 429)."""

    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(Code.RESOURCE_EXHAUSTED, f"Request body is larger than the limit of {limit} bytes")


class RequestTimedOut(ServingError):
    """A request body not received within `--request_read_timeout_seconds`: DEADLINE_EXCEEDED, 408 over HTTP."""

    http_status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(Code.DEADLINE_EXCEEDED, f"Request body not received within {seconds:g} s")


class PermanentError(ServingError):
    """A load failure that another attempt cannot fix (the model needs an op this process does not register):
    the loader pool does not retry it."""


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(Code.FAILED_PRECONDITION, message)


def unimplemented(message: str) -> ServingError:
    return ServingError(Code.UNIMPLEMENTED, message)


def internal(message: str) -> ServingError:
    return ServingError(Code.INTERNAL, message)


def http_status(code: Code) -> int:
    """HTTP status for a status code, as TF Serving's REST server answers it."""
    return _HTTP_STATUS.get(code, 500)


def http_status_of(error: ServingError) -> int:
    """HTTP status for an error: its code's, or the error's own (413 too large, 408 too slow)."""
    if isinstance(error, RequestTooLarge | RequestTimedOut):
        return error.http_status
    return http_status(error.code)


def grpc_message(message: str) -> str:
    """The message as TF Serving sends it over gRPC: at most 1024 characters, then `...TRUNCATED`."""
    if len(message) > MAX_GRPC_MESSAGE:
        return message[:MAX_GRPC_MESSAGE] + "...TRUNCATED"
    return message
