"""
What a policy section ends with, shared by the executor (:mod:`._policies`)
and the limit policies (:mod:`._limits`): the response view, a failure for
``on-error``, and the exception that ends a pipeline early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = ["Failure", "PolicyResponse", "Stop", "envelope_response", "joined"]


@dataclass(slots=True)
class PolicyResponse:
    """
    The response view: the backend's response in ``outbound``, the answer
    of a short-circuit or of ``on-error``.

    :ivar headers: ``(lower-case name, value)`` pairs in order.
    :ivar body: a literal body, or ``None``: the backend's (outbound) or,
        with :attr:`message`, APIM's envelope.
    :ivar message: the envelope's message when :attr:`body` is ``None``.
    """

    status: int
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    message: str | None = None

    def header(self, name: str) -> str | None:
        """The header's values joined with ``,``, or ``None``."""
        return joined(self.headers, name.lower())


@dataclass(frozen=True, slots=True)
class Failure:
    """
    A policy failed: what ``context.LastError`` shows in ``on-error``
    (:class:`~gateway.translate.policy.LastError`), and the response sent
    when there is no ``on-error`` section (or it changes nothing).
    """

    source: str
    reason: str
    message: str
    section: str
    response: PolicyResponse


def joined(headers: list[tuple[str, str]], lower: str) -> str | None:
    values = [v for n, v in headers if n == lower]
    return ",".join(values) if values else None


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def envelope_response(status: int, message: str) -> PolicyResponse:
    return PolicyResponse(status, phrase(status), [("content-type", "application/json")], None, message)


class Stop(Exception):
    """Raised inside a section to end the whole pipeline with an outcome."""

    def __init__(self, outcome: PolicyResponse | Failure) -> None:
        self.outcome = outcome
