"""
The access log: one line per answered request, through twisted.logger.

The text line is formatted here with an f-string only when the access log
is on (the observer's ``str.format`` pass over a many-field template costs
several times more); the JSON form is rendered lazily by the observer.
``none`` skips everything. In both forms the values of secret query
parameters are redacted (:mod:`._redact`). An APIM API call's api,
operation, product and subscription ids are appended (ids from the
configuration; a subscription key is never logged: the proxy's record of
the call holds no key, and a key in the query is redacted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from twisted.logger import ILogObserver, Logger

from ._redact import QueryRedactor

FORMATS = ("text", "json", "none")

#: The end of the text line, and the JSON fields, of a request that is not
#: an admitted APIM API call.
_NO_CALL = " api=- operation=- product=- subscription=-"
_NO_CALL_FIELDS: dict[str, None] = dict.fromkeys(("api", "operation", "product", "subscription"))


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
        api_call: Any = None,
    ) -> None:
        """
        Log one request (a no-op when the format is ``none``).

        :param api_call: the admitted APIM API call (a
            :class:`gateway.translate.ApiCall`: ``api``, ``operation``,
            ``product``, ``subscription``, ids from the configuration, never
            a key); ``None`` for a plain route or a refused request. An
            absent id is ``-`` in the text line and ``null`` in JSON.
        """
        if not self.enabled:
            return
        if "?" in path:  # the common query-less request pays one test
            path = self.redact(path)
        if self.format == "text":
            # Formatted here with an f-string (about 2 µs) rather than left to
            # the observer's str.format machinery on a 15-field template
            # (several times that); the fields stay on the event as well.
            # The API call's fields come last so parsers of the older line
            # keep working.
            line = (
                f'{client} "{method} {path} {protocol}" {status} {bytes} '
                f"{duration * 1000.0:.3f}ms host={host} route={route} "
                f"backend={backend} request_id={request_id}"
            )
            if api_call is None:
                line += _NO_CALL
            else:
                c = api_call
                line += (
                    f" api={c.api} operation={c.operation or '-'} "
                    f"product={c.product or '-'} subscription={c.subscription or '-'}"
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
            if api_call is None:
                fields.update(_NO_CALL_FIELDS)
            else:
                fields["api"] = api_call.api
                fields["operation"] = api_call.operation
                fields["product"] = api_call.product
                fields["subscription"] = api_call.subscription
            self._log.info("{access}", access=_JsonLine(fields))
