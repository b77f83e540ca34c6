"""
Why a backend exchange failed: one exception class per cause, so the proxy
can choose the answer (500, or 502/504 in ``http`` error mode) and the
metric label from the type alone, without parsing messages.
"""

from __future__ import annotations

from twisted.python.failure import Failure

__all__ = [
    "BackendConnectError",
    "BackendConnectTimeout",
    "BackendConnectionLost",
    "BackendError",
    "BackendProtocolError",
    "BackendResponseTimeout",
    "BackendTimeout",
    "RequestBodyError",
    "backend_failure",
]


class BackendError(Exception):
    """
    The backend could not be reached or did not answer correctly.

    Every failure handed to :meth:`ResponseSink.response_failed` carries a
    subclass of this; the underlying connection error, if any, is its
    ``__cause__``.
    """


class BackendTimeout(BackendError):
    """The backend did not connect or answer in time."""


class BackendConnectTimeout(BackendTimeout):
    """No TCP connection within ``connect_timeout``."""


class BackendResponseTimeout(BackendTimeout):
    """The response headers were not complete within ``response_timeout``."""


class BackendConnectError(BackendError):
    """The connection could not be made: refused, unreachable, unknown name."""


class BackendProtocolError(BackendError):
    """The backend sent something that is not an HTTP/1.x response."""


class BackendConnectionLost(BackendError):
    """The connection closed before the response was complete."""


class RequestBodyError(BackendError):
    """
    The client's request body failed while it streamed to the backend (over
    the size limit, the client gone or too slow): the backend request was
    aborted. Not the backend's fault; the caller answers from the body's
    own error.
    """


def backend_failure(error: BackendError, cause: BaseException | None = None) -> Failure:
    """
    ``error`` as a :class:`Failure` with ``cause`` as its ``__cause__``:
    built without raising, since a raise and catch per failure buys nothing
    but a traceback nobody reads.
    """
    error.__cause__ = cause
    return Failure(error)
