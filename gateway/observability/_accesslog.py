"""
The access log: one line per answered request, through twisted.logger, or
when twistd logs to stdout through a buffered, non-blocking
:class:`~._logwriter.LogWriter` (one write per reactor iteration instead of
an event and a blocking write per line), with the same line: twistd's
``<time> [apimgw.access#info] `` prefix, then the text or JSON form.

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
import re
from collections.abc import Iterable
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import ILogObserver, Logger

from ._logwriter import (
    DEFAULT_BUFFER,
    MAX_LINE,
    LogWriter,
    LogWriterService,
    stdout_access_writer,
)
from ._redact import QueryRedactor

FORMATS = ("text", "json", "none")

#: The ``[system]`` of twisted.logger's classic line for these events.
_SYSTEM = "apimgw.access#info"

#: The end of the text line, and the JSON fields, of a request that is not
#: an admitted APIM API call.
_NO_CALL = " api=- operation=- product=- subscription=-"
_NO_CALL_FIELDS: dict[str, None] = dict.fromkeys(("api", "operation", "product", "subscription"))

#: What a shortened target keeps free for its ``...[truncated N bytes]``
#: (and JSON's ``"truncated":true``).
_MARKER_ROOM = 64


#: What a text line's method, target and host may hold as they are:
#: visible ASCII but ``"`` and ``\\`` (the request's delimiter, and an
#: escape to some readers). Anything else could end a field early and
#: forge the ones after it (``Host: a route=x request_id=y``).
_UNSAFE = re.compile(r'[^!#-\[\]-~]')


def loggable(text: str) -> str:
    """
    ``text`` for a text access line: each character it may not hold as it
    is (see :data:`_UNSAFE`) percent-encoded, as UTF-8 bytes. A value made
    of safe characters only (every one the strict HTTP/1.1 server passes)
    is returned as it is, after one search.
    """
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), text)


class _JsonLine:
    """Renders the event's access fields as one JSON object, lazily."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __format__(self, spec: str) -> str:
        return json.dumps(self.fields, separators=(",", ":"), sort_keys=True)

    __str__ = __repr__ = lambda self: self.__format__("")


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
        writer: LogWriter | None = None,
    ) -> None:
        """
        :param fmt: ``text``, ``json`` or ``none``.
        :param redact: query parameters whose values are redacted besides
            the default ones: names, or the comma-separated text of
            ``telemetry.logs.redact-query``.
        :param observer: where the events go (tests); default: the global
            log publisher.
        :param writer: where the lines go instead of twisted.logger: the
            buffered stdout writer (the lines are then formatted here as
            twistd's text observer would have written them).
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
        self._writer = writer

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
        checked: bool = False,
    ) -> None:
        """
        Log one request (a no-op when the format is ``none``).

        :param checked: ``method``, ``path`` and ``host`` passed the strict
            HTTP/1.1 server's checks (a token, llhttp's target characters,
            the ``Host`` syntax), so the text line takes them as they are,
            but for a target holding ``"`` or ``\\`` (which llhttp lets
            through); else (HTTP/2, twisted.web, a refused request's
            ``Host``) they go through :func:`loggable`. JSON escapes them
            itself.

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
            if not checked:
                method, path, host = loggable(method), loggable(path), loggable(host)
            elif '"' in path or "\\" in path:
                path = loggable(path)  # the two llhttp lets through in a target
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
            if self._writer is not None:
                if "\n" in line:  # as twisted.logger's classic format does
                    line = line.replace("\n", "\n\t")
                w = self._writer
                data = f"{w.prefix(_SYSTEM)}{line}\n".encode("utf-8", "replace")
                if len(data) > MAX_LINE:
                    # Shorten the target rather than let the writer cut the
                    # line's end (status, request_id and the ids after it).
                    excess = len(data) - MAX_LINE
                    data = data.replace(
                        f'"{method} {path} {protocol}"'.encode("utf-8", "replace"),
                        f'"{method} {_cut(path, excess)} {protocol}"'.encode("utf-8", "replace"),
                        1,
                    )
                w.write(data)
                return
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
            if self._writer is not None:
                w = self._writer
                prefix = w.prefix(_SYSTEM)
                text = json.dumps(fields, separators=(",", ":"), sort_keys=True)
                data = f"{prefix}{text}\n".encode("utf-8", "replace")
                if len(data) > MAX_LINE:
                    data = _fit_json(prefix, fields, len(data) - MAX_LINE)
                w.write(data)
                return
            self._log.info("{access}", access=_JsonLine(fields))


def _cut(value: str, excess: int) -> str:
    """
    ``value`` shortened by at least ``excess`` bytes of UTF-8 (and room for
    the marker), ending ``...[truncated N bytes]``.
    """
    raw = value.encode("utf-8", "replace")
    keep = max(0, len(raw) - excess - _MARKER_ROOM)
    kept = raw[:keep].decode("utf-8", "ignore")  # not inside a character
    return _marked(kept, len(raw))


def _marked(kept: str, size: int) -> str:
    """``kept`` and the marker saying how many of ``size`` bytes were left out."""
    return f"{kept}...[truncated {size - len(kept.encode('utf-8', 'replace'))} bytes]"


def _fit_json(prefix: str, fields: dict[str, Any], excess: int) -> bytes:
    """
    The JSON line of ``fields`` within :data:`MAX_LINE` bytes: ``path`` cut
    (ending ``...[truncated N bytes]``, ``N`` in UTF-8 bytes) and
    ``"truncated": true`` added, so the line stays valid JSON. JSON escapes
    make a character one to six bytes, so the longest prefix whose escaped
    form fits is found by bisection (a few ``json.dumps`` of the target,
    only for such a line). A line still too long without its path (other
    fields that large) is left to the writer's cut.
    """
    path: str = fields["path"]
    size = len(path.encode("utf-8", "replace"))
    budget = len(json.dumps(path)) - excess - _MARKER_ROOM
    low, high = 0, len(path)
    while low < high:
        mid = (low + high + 1) // 2
        if len(json.dumps(path[:mid])) <= budget:
            low = mid
        else:
            high = mid - 1
    fields["path"] = _marked(path[:low], size)
    fields["truncated"] = True
    text = json.dumps(fields, separators=(",", ":"), sort_keys=True)
    return f"{prefix}{text}\n".encode("utf-8", "replace")


def build_access_log(
    parent: MultiService,
    reactor: Any,
    fmt: str,
    redact: str | Iterable[str] = (),
    *,
    twistd_options: Any = None,
    on_drop: Any = None,
    buffer: int = DEFAULT_BUFFER,
    fd: int = 1,
) -> AccessLog:
    """
    The gateway's access log: on the buffered stdout writer when twistd
    logs to stdout (``twistd_options``: the plugin options' ``parent``),
    with a :class:`LogWriterService` under ``parent`` that flushes it when
    the gateway stops (add it before the traffic listeners, which stop
    first); on twisted.logger otherwise (a log file, syslog, tests).

    :param on_drop: called with the number of lines dropped (the
        ``apimgw_access_log_dropped_total`` counter's ``inc``).
    :param fd: stdout's fd (tests give a pipe's).
    """
    writer = None
    if fmt != "none":
        writer = stdout_access_writer(
            reactor, twistd_options, buffer=buffer, on_drop=on_drop or (lambda n: None), fd=fd
        )
        if writer is not None:
            LogWriterService(writer).setServiceParent(parent)
    return AccessLog(fmt, redact, writer=writer)
