"""The error both the server and the clients raise: a gRPC status code plus TF Serving's message."""

from __future__ import annotations

import grpc

from tfimpute.signatures import DEFAULT_SIGNATURE  # noqa: F401  (server and client import it from here)

# TF Serving's HTTP mapping of the codes this project uses (413 for an over-size body).
HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
               grpc.StatusCode.RESOURCE_EXHAUSTED: 413, grpc.StatusCode.UNIMPLEMENTED: 501,
               grpc.StatusCode.INTERNAL: 500}
CODE_OF_HTTP_STATUS = {status: code for code, status in HTTP_STATUS.items()}


class ServingError(Exception):
    """A refused request: ``code`` (a ``grpc.StatusCode``) and the server's message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    @classmethod
    def from_http(cls, status: int, message: str) -> "ServingError":
        return cls(CODE_OF_HTTP_STATUS.get(status, grpc.StatusCode.UNKNOWN), message)
