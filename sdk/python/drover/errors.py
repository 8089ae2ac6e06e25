"""Errors the server answered, as Python exceptions.

Every call that the server refuses raises a :class:`DroverError` (or a subclass named for
the gRPC status code) carrying the server's message, its code and, when the server gave one,
how long to wait before retrying."""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc


class DroverError(Exception):
    """A call the server refused, or that did not reach it.

    Attributes:
        code: the gRPC status code name ("INVALID_ARGUMENT", "NOT_FOUND", ...).
        message: the server's message; a refused field's message starts with its path.
        retry_after: seconds the server asked the client to wait, or None.
    """

    def __init__(self, code: str, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


class InvalidArgument(DroverError):
    """A field out of range; the message names it and the limit."""


class NotFound(DroverError):
    """No such task, workflow, agent, pool or token (or one of another tenant)."""


class AlreadyExists(DroverError):
    """The object exists already."""


class FailedPrecondition(DroverError):
    """Not possible in the object's state (a stale lease, a task that ended)."""


class ResourceExhausted(DroverError):
    """Overloaded or over a quota: retry after ``retry_after`` seconds."""


class Unauthenticated(DroverError):
    """No valid credential: a missing, unknown, revoked or expired token."""


class PermissionDenied(DroverError):
    """The credential's roles do not allow the call."""


class Unavailable(DroverError):
    """The server is not reachable or not serving (starting, stopping, store down)."""


class DeadlineExceeded(DroverError):
    """The call's own time limit passed."""


_BY_CODE: Dict[grpc.StatusCode, Type[DroverError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def _retry_after(metadata) -> Optional[float]:
    for key, value in metadata or ():
        if key == "retry-after-ms":
            try:
                return int(value) / 1000.0
            except ValueError:
                return None
    return None


def from_rpc_error(e: grpc.RpcError) -> DroverError:
    """The exception for a failed call (sync or asyncio)."""
    code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.UNKNOWN
    details = e.details() if callable(getattr(e, "details", None)) else str(e)
    trailing = e.trailing_metadata() if callable(getattr(e, "trailing_metadata", None)) else None
    cls = _BY_CODE.get(code, DroverError)
    return cls(code.name, details or "", _retry_after(trailing))
