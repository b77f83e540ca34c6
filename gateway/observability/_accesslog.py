"""
The access log: one line per answered request, through twisted.logger.

The text line is formatted here with an f-string only when the access log
is on (the observer's ``str.format`` pass over a many-field template costs
several times more); the JSON form is rendered lazily by the observer.
``none`` skips everything. In both forms the values of secret query
parameters are redacted (:mod:`._redact`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from twisted.logger import ILogObserver, Logger

from ._redact import QueryRedactor

FORMATS = ("text", "json", "none")


class _JsonLine:
    """Renders the event's access fields as one JSON object, lazily."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __format__(self, spec: str) -> str:
        return json.dumps(self.fields, separators=(",", ":"), sort_keys=True)

    __str__ = __repr__ = lambda self: self.__format__("")  # noqa: E731


class AccessLog:
    """
    Emits access-log events in the configured format (``text``, ``json`` or
    ``none``). The events carry ``log_namespace`` ``apimgw.access`` so an
    operator can route them separately.
    """

    def __init__(
        self,
        fmt: str = "text",
        redact: str | Iterable[str] = (),
        *,
        observer: ILogObserver | None = None,
    ) -> None:
        """
        :param fmt: ``text``, ``json`` or ``none``.
        :param redact: query parameters whose values are redacted besides
            the default ones: names, or the comma-separated text of
            ``telemetry.logs.redact-query``.
        :param observer: where the events go (tests); default: the global
            log publisher.
        """
        # An instance attribute: a class-level Logger would take the class's
        # name as its namespace.
        self._log = Logger(namespace="apimgw.access", source=self, observer=observer)
        if fmt not in FORMATS:
            raise ValueError(f"telemetry.logs.std must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self.format = fmt
        self.enabled = fmt != "none"
        #: Built once: the per-line cost is one call on a precompiled search.
        self.redact = (
            QueryRedactor.from_setting(redact) if isinstance(redact, str) else QueryRedactor(redact)
        )
        self._configured = self.redact.names

    def also_redact(self, names: Iterable[str]) -> None:
        """
        Redact ``names`` too, besides the configured ones: the subscription
        key query parameters the APIs of the live configuration name
        (``subscriptionKeyParameterNames``), replaced at each generation.
        Rebuilt once per configuration, never per line.
        """
        wanted = self._configured | {n.strip().lower() for n in names if n.strip()}
        if wanted != self.redact.names:
            self.redact = QueryRedactor(wanted)

    def emit(
        self,
        *,
        client: str,
        method: str,
        path: str,
        protocol: str,
        status: int,
        bytes: int,
        duration: float,
        host: str,
        route: str,
        backend: str,
        request_id: str,
    ) -> None:
        """Log one request (a no-op when the format is ``none``)."""
        if not self.enabled:
            return
        if "?" in path:  # the common query-less request pays one test
            path = self.redact(path)
        if self.format == "text":
            # Formatted here with an f-string (about 2 µs) rather than left to
            # the observer's str.format machinery on an 11-field template
            # (several times that); the fields stay on the event as well.
            line = (
                f'{client} "{method} {path} {protocol}" {status} {bytes} '
                f"{duration * 1000.0:.3f}ms host={host} route={route} "
                f"backend={backend} request_id={request_id}"
            )
            self._log.info(
                "{access_line}",
                access_line=line,
                status=status,
                route=route,
                request_id=request_id,
            )
        else:
            fields = {
                "client": client,
                "method": method,
                "path": path,
                "protocol": protocol,
                "status": status,
                "bytes": bytes,
                "durationMs": round(duration * 1000.0, 3),
                "host": host,
                "route": route,
                "backend": backend,
                "requestId": request_id,
            }
            self._log.info("{access}", access=_JsonLine(fields))
