"""
How the API server says no: typed exceptions for its answers (the HTTP
status and the ``Status`` object's ``reason``, which say more together than
the code alone), and the two ways a watch stream can break that are not
answers at all.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "ApiError",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "Unauthorized",
    "WatchStalled",
    "WatchStreamError",
    "api_error",
]

JSON = dict[str, Any]


class ApiError(Exception):
    """
    The API server refused a request. Carries the HTTP status and the
    ``Status`` object's ``reason`` and ``message``, which say more than the
    code (a 409 is ``Conflict`` or ``AlreadyExists``).
    """

    def __init__(self, code: int, reason: str, message: str, status: JSON | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.status = status or {}


class Unauthorized(ApiError):
    """401: the credentials were not accepted."""


class Forbidden(ApiError):
    """403: authenticated, but RBAC does not allow it."""


class NotFound(ApiError):
    """404: no such object (or namespace, or resource type)."""


class Conflict(ApiError):
    """409 Conflict: the object changed since the version the write named."""


class AlreadyExists(ApiError):
    """409 AlreadyExists: a create of a name that is taken."""


class Gone(ApiError):
    """
    410: the requested resourceVersion (or ``continue`` token) is older
    than the server's history. Never retry with the same version: list again.
    """


class Invalid(ApiError):
    """422: the object failed validation."""


def api_error(code: int, body: Any, phrase: str = "") -> ApiError:
    """The typed exception for an HTTP error response or an ERROR event's Status."""
    status = body if isinstance(body, dict) else {}
    reason = str(status.get("reason") or phrase or "Unknown")
    message = str(status.get("message") or phrase or f"HTTP {code}")
    cls: type[ApiError] = ApiError
    if code == 401:
        cls = Unauthorized
    elif code == 403:
        cls = Forbidden
    elif code == 404:
        cls = NotFound
    elif code == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif code == 410:
        cls = Gone
    elif code == 422:
        cls = Invalid
    return cls(code, reason, message, status)


class WatchStreamError(Exception):
    """The watch stream held something that is not a watch event."""


class WatchStalled(Exception):
    """The watch outlived its deadline without the server ending it: the connection was dropped."""
