"""
The one exception type that turns into an HTTP error answer.

Validation, lookups and conflicts raise :class:`ApiError` wherever they are
detected (in the reactor or in the database thread); the HTTP layer renders
it as the APIM error envelope ``{"statusCode": N, "message": "..."}`` that
the gateway itself uses, with ``field`` added when one input field is to
blame, so a client can point at it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError"]


class ApiError(Exception):
    """
    An error answer: ``status`` and a human-readable ``message``.

    :ivar field: the request field that is wrong (``serviceUrl``,
        ``operations.get-user.method``, ...), or ``None``.
    :ivar headers: extra response headers (``WWW-Authenticate``, ``Allow``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"statusCode": self.status, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    @classmethod
    def invalid(cls, field: str, message: str) -> "ApiError":
        """A 400 naming ``field``; the message starts with the field's name."""
        return cls(400, f"{field}: {message}", field=field)

    @classmethod
    def not_found(cls, what: str) -> "ApiError":
        return cls(404, f"{what} not found")
