"""One exception for every failure a server reports: `ServingError(code, message, http_status)`.

`code` is the gRPC status code (TF Serving casts its TF status code to the gRPC code unchanged);
`message` is TF Serving's text (its REST error body `{"error": ...}` carries the same text); `http_status`
is the HTTP status when the call went over REST. Over REST the code is inferred from the HTTP status with
the inverse of TF Serving's `ToHTTPStatusCode` (400 is INVALID_ARGUMENT, 500 INTERNAL: the codes that
share an HTTP status are not told apart). A server that cannot be reached is UNAVAILABLE, a call that ran
out of time DEADLINE_EXCEEDED, on either protocol.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class Code(IntEnum):
    """gRPC status codes (the numbering TF's `error::Code` shares)."""

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


# TF Serving's http_server.cc ToHTTPStatusCode, read backwards (first code listed wins for shared statuses).
_FROM_HTTP: Final = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def code_from_http(status: int) -> Code:
    return _FROM_HTTP.get(status, Code.UNKNOWN)


class ServingError(Exception):
    """A failed call: the gRPC `code`, the server's `message`, and the `http_status` over REST (else None)."""

    def __init__(self, code: Code, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r}, http_status={self.http_status})"
