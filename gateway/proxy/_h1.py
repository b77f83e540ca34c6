"""
Our HTTP/1.1 server protocol on httptools (llhttp, the parser Node.js uses),
in place of twisted.web's ``HTTPChannel`` for HTTP/1.1 connections (issue 11).

It feeds the same :class:`~gateway.proxy.ProxyResource` as the twisted.web
site: the resource renders an :class:`~gateway.proxy._h1request.H1Request`,
which implements :class:`~gateway.proxy.ProxyRequest`.

Strict per RFC 9110/9112. llhttp (without its leniency flags) already
refuses obs-fold, bare CR or LF, invalid header names and values, control
characters in the target, a repeated or malformed ``Content-Length``,
``Content-Length`` with ``Transfer-Encoding``, a final transfer coding other
than chunked, and oversize chunk sizes. This module adds what llhttp leaves
to the server: a missing or repeated ``Host`` on HTTP/1.1 and an invalid
``Host`` value (RFC 9112 §3.2), transfer codings we do not implement (501,
§6.1), ``Transfer-Encoding`` in an HTTP/1.0 request (§6.1: faulty framing),
request-target forms (§3.2), versions other than 1.0 and 1.1 (505), unknown
expectations (417, RFC 9110 §10.1.1), trailing whitespace in field values
(§5.5), and the size limits (414, 431) and timeouts (408) of
:class:`~gateway.proxy.H1Limits`. Every refused request is answered with
the APIM error envelope and ``Connection: close``, in order after the
answers to the requests before it, and never reaches the resource.

Pipelining: requests are parsed as they arrive and queued; the resource
renders one at a time, in order; the connection stops reading once
``max_pipelined`` requests wait. A resource that declares
``streams_request_body`` (the proxy) is rendered at the end of the header
section with a :class:`~gateway.proxy._body.StreamedBody` that it takes as
it arrives (the channel stops reading while the source holds its
high-water mark); other resources get the body collected into a
:class:`~gateway.proxy._body.BoundedBody` before rendering, as with
twisted.web.
"""

from __future__ import annotations

import re
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from httptools import (
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserUpgrade,
    HttpRequestParser,
)
from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, INegotiated, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers, _nameEncoder
from twisted.web.resource import Resource
from zope.interface import implementer

from gateway.netio import direct_writer

from ._body import BodyError, BoundedBody, StreamedBody
from ._h1limits import H1Limits
from ._h1request import H1Request
from ._replies import envelope

__all__ = ["H1Channel", "H1Server"]

#: ``Host`` (RFC 9112 §3.2, RFC 3986 §3.2.2): an IP literal in brackets or a
#: reg-name (unreserved, pct-encoded, sub-delims), then an optional port.
#: Empty is allowed (a target without authority). Compiled once.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?\Z")

#: ``Host`` values that matched :data:`_HOST` lately: nearly every request
#: repeats one of a few, and a dict lookup costs a seventh of the match.
#: Bounded (cleared when full, short values only) since clients choose them.
_valid_hosts: dict[bytes, bool] = {}
_VALID_HOSTS_SIZE = 256
_VALID_HOST_LENGTH = 128


def _host_is_valid(value: bytes) -> bool:
    """Whether ``value`` is a syntactically valid ``Host`` (see :data:`_HOST`)."""
    if _HOST.match(value) is None:
        return False
    if len(value) <= _VALID_HOST_LENGTH:
        if len(_valid_hosts) >= _VALID_HOSTS_SIZE:
            _valid_hosts.clear()
        _valid_hosts[value] = True
    return True

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: Bytes held behind an upgrade request waiting for its answer, beyond
#: which the connection stops reading (a WebSocket client may send its
#: first frames before the 101; a well-behaved one waits).
_HOLD_LIMIT = 64 * 1024

#: Twisted's header-name canonicalizer (cached): our fields are stored in
#: ``Headers``' own form, so the resource reads them through ``Headers``.
_encode_name = _nameEncoder.encode
#: Its cache, read first: a name seen before costs one dict lookup, not a
#: method call (an empty dict if a Twisted release renames it: every name
#: then goes through ``_encode_name``, as correct and a little slower).
_canonical = getattr(_nameEncoder, "_canonicalHeaderCache", {}).get
#: ``Headers`` without its ``__init__``: the fields dict is set directly.
_new_headers = Headers.__new__

# Phases of the read-side timer.
_HEADER = 1
_BODY = 2
_KEEPALIVE = 3
_LINGER = 4


class _Reject(Exception):
    """Raised from a parser callback: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


#: llhttp's own refusals, as statuses: all 400 (RFC 9112 §2.2, §6.3),
#: except a method llhttp does not know, which is 501 when it is a token
#: (RFC 9110 §9.1) and 400 when it is not even that (binary input, TLS).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")


@implementer(IPushProducer)
class H1Channel(Protocol):
    """
    One client connection speaking HTTP/1.1 (and 1.0).

    Registered with its transport as a push producer: when the client reads
    slower than the response is produced, the transport pauses the channel,
    which pauses the producer the resource registered on the request.
    """

    _log = Logger()

    transport: Any

    def __init__(self, server: H1Server) -> None:
        self.server = server
        self.limits = server.limits
        self.clock = server.clock
        self.resource = server.resource
        #: the resource takes bodies as they arrive (rendered at the end of
        #: the header section, with a StreamedBody): the proxy does
        self._streams = getattr(server.resource, "streams_request_body", False)
        #: the body being received holds as much as it may: stop reading
        self._backlog = False
        self.parser = HttpRequestParser(self)
        #: queued requests from which :meth:`_queue_full` may say yes
        self._full_from = min(2, self.limits.max_pipelined)
        #: requests received and not yet answered, oldest first
        self.queue: deque[H1Request] = deque()
        #: ``False`` once the connection is to close after the current answer
        self.persistent = True
        self.peer: Any = None
        self._local: Any = None
        # The message being parsed.
        self._url = b""
        #: the header fields by canonical name (``Headers``' own storage)
        self._fields: dict[bytes, list[bytes]] | None = None
        self._header_count = 0
        self._header_bytes = 0
        self._in_head = False
        self._head_seen = 0
        #: a header section began in this read: its deadline is armed at
        #: the read's end unless it is complete by then (on_message_begin)
        self._head_due = False
        self._completed = 0
        self._body_of: H1Request | None = None
        # Connection state.
        self._broken = False  # input is discarded from now on
        self._gone = False
        self._closing = False
        self._registered = False
        self._advancing = False
        self._reading_paused = False
        self._send_paused = False
        self._producer: IPushProducer | None = None
        self._read_timer: IDelayedCall | None = None
        self._read_phase = 0
        self._read_deadline = 0.0
        self._read_timer_at = 0.0
        self._send_timer: IDelayedCall | None = None
        #: bytes waiting in the transport when the send timer was armed
        self._send_waiting = -1
        self._linger_until = 0.0
        #: over TLS (Twisted's TLS protocol): no half-close, see :meth:`close_now`
        self._tls = False
        #: an upgrade request (``Connection: upgrade``) waiting for its
        #: answer: what the client sends meanwhile is held, not parsed
        self._upgrade_wait: H1Request | None = None
        self._held: list[bytes] = []
        self._held_bytes = 0
        #: after a 101: the :class:`~gateway.proxy._splice.Splice` that
        #: receives the client's bytes (``client_data``) and its close
        self.tunnel: Any = None

    # -- Twisted protocol ----------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        # Straight to the socket on plain TCP (see gateway.netio).
        self.send = direct_writer(transport)  # type: ignore[method-assign,assignment]
        if not isinstance(transport, tcp.Connection):
            self._tls = INegotiated.providedBy(transport)
        self.peer = transport.getPeer()
        transport.registerProducer(self, True)
        self._registered = True
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        # nginx's client_header_timeout also counts from the accept.
        self._arm_read(_HEADER, self.limits.header_timeout)

    def dataReceived(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.client_data(data)
            return
        if self._upgrade_wait is not None:
            self._hold(data)
            return
        if self._broken:
            if self._read_phase == _LINGER:
                # Still sending the body we refused: let it finish (up to
                # linger_total) so that it reads our answer, not a reset.
                self._read_deadline = min(self.clock.seconds() + self.limits.linger,
                                          self._linger_until)
            return
        if self._in_head:
            self._head_seen += len(data)
            fresh = False
        else:
            fresh = self._body_of is None
        self._completed = 0
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as e:
            # llhttp stopped after a request with ``Connection: upgrade``
            # and ``Upgrade`` (a body is refused at its head, CONNECT too):
            # what follows may already be the new protocol, so it is held
            # until the answer says which (a 101: the tunnel's; else HTTP/1.1
            # again, parsed then).
            queue = self.queue
            request = queue[-1] if queue else None
            if request is None or not request.complete or request.error is not None:
                self._broken = True
            else:
                request.upgrade = b",".join(
                    request.requestHeaders.getRawHeaders(b"upgrade", [])
                )
                self._upgrade_wait = request
                rest = data[e.args[0]:]
                if rest:
                    self._hold(rest)
        except HttpParserError as e:
            cause = e.__context__
            if isinstance(cause, _Reject):
                self._reject(cause.status, cause.message)
            elif cause is not None:
                self._log.failure("HTTP/1.1 parser callback failed", Failure(cause))
                self._reject(500, "Internal server error")
            elif self.parser.get_http_version()[:1] >= "2":
                # llhttp stops at the HTTP/2 preface ("PRI * HTTP/2.0"): a
                # client speaking HTTP/2 where it is not served (the h2c
                # switch, gateway.proxy._alpn, takes it before the parser).
                self._reject(505, "HTTP version not supported")
            else:
                # Where the refused message starts is known only when it
                # is the first of this read.
                first = fresh and self._completed == 0
                self._reject(*_parser_refusal(e, data if first else b""))
        else:
            if self._in_head:
                limits = self.limits
                if self._head_seen > limits.max_target + limits.max_header_bytes:
                    # A header line llhttp is still collecting: its parts are
                    # buffered by httptools until the line ends.
                    self._reject(431, "Request header fields too large")
                elif self._head_due:
                    self._head_due = False
                    self._arm_read(_HEADER, limits.header_timeout)
            elif self._read_phase == _BODY:
                # A body is being read (not while reading is paused, nor
                # before the 100 a client waits for: the wait is ours).
                self._arm_read(_BODY, self.limits.body_timeout)
        self._advance()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            self._gone = self._broken = True
            self.tunnel = None
            self.server.channels.discard(self)
            tunnel.client_lost(reason)
            return
        self._gone = self._broken = True
        self._cancel_timers()
        self.server.channels.discard(self)
        self._producer = None
        body_of, self._body_of = self._body_of, None
        queue, self.queue = self.queue, deque()
        for request in queue:
            request.client_gone(reason)
            content = request.content
            if content.__class__ is StreamedBody and not content.complete:  # type: ignore[union-attr]
                content.fail(BodyError(499, "Client closed the request"))  # type: ignore[union-attr]
        if body_of is not None:
            # Answered before its body was read, then the connection closed:
            # the request was out of the queue and still held here.
            body_of.channel = None
        # The parser calls back into this channel (they point at each other):
        # dropped, both are freed by reference counting with the connection.
        # Nothing is parsed any more (_broken).
        self.parser = None  # type: ignore[assignment]

    # -- writing --------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write ``data`` to the client (replaced per connection in ``connectionMade``)."""
        self.transport.write(data)

    # -- IPushProducer (the transport's write buffer) ------------------------------

    def pauseProducing(self) -> None:
        self._send_paused = True
        if self._producer is not None:
            self._producer.pauseProducing()
        # Nor read more requests whose answers would pile up in the write
        # buffer of a client that does not read (as twisted.web does).
        self._update_reading()
        if self._send_timer is None:
            self._send_waiting = self._waiting_bytes()
            self._send_timer = self.clock.callLater(self.limits.send_timeout, self._send_timeout)

    def _waiting_bytes(self) -> int:
        """Bytes Twisted still holds for the client (-1: this transport does not say)."""
        transport = self.transport
        buffered = getattr(transport, "dataBuffer", None)
        if buffered is None:
            return -1
        return len(buffered) + getattr(transport, "_tempDataLen", 0)

    def resumeProducing(self) -> None:
        self._send_paused = False
        timer = self._send_timer
        if timer is not None:
            self._send_timer = None
            if timer.active():
                timer.cancel()
        if self._producer is not None:
            self._producer.resumeProducing()
        self._update_reading()

    def _queue_full(self) -> bool:
        """
        Enough is waiting: ``max_pipelined`` requests, or a request with a
        body behind the one being answered (so at most one body beyond the
        one in progress is ever spooled).
        """
        queue = self.queue
        if len(queue) >= self.limits.max_pipelined:
            return True
        for index, request in enumerate(queue):
            if index and request.content is not None and request.content.size:
                return True
        return False

    def _update_reading(self) -> None:
        """Read from the client unless its answers are stuck or enough is queued."""
        if self._gone or self._closing:
            return
        pause = (
            self._send_paused
            or self._backlog
            or self._held_bytes > _HOLD_LIMIT
            # (one request queued, the common case, is never "full" unless
            # max_pipelined is 1: no call then)
            or (len(self.queue) >= self._full_from and self._queue_full())
        )
        if pause and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()
            if self._read_phase == _BODY:
                # Not the client's slowness: no body timeout while we do not read.
                self._read_phase = 0
        elif not pause and self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()
            body_of = self._body_of
            if (
                body_of is not None
                and not self._in_head
                and not (body_of.expect_continue and body_of.content.__class__ is StreamedBody)
            ):
                # (A client waiting for its 100 is not sending: the body
                # timeout starts with the 100, see on_headers_complete.)
                self._arm_read(_BODY, self.limits.body_timeout)

    def stopProducing(self) -> None:
        """The transport is going away: ``connectionLost`` follows."""

    # -- BodyControl (a streamed request body) ----------------------------------------

    def body_backlog(self, source: StreamedBody, full: bool) -> None:
        """The body being received is held whole by its source (``full``), or taken again."""
        request = self._body_of
        if request is None or request.content is not source:
            return
        self._backlog = full
        self._update_reading()

    def body_wanted(self, source: StreamedBody) -> None:
        """
        A consumer started on a body still to come (the backend exchange
        is under way, or the policy path collects it): ``100 Continue`` now,
        if the client waits for it (RFC 9110 §10.1.1).
        """
        queue = self.queue
        if not queue or self._closing:
            return
        request = queue[0]
        if request.content is source and request.expect_continue and not request.startedWriting:
            request.expect_continue = False
            self.send(_CONTINUE)
            if self._body_of is request and not self._reading_paused:
                # Not armed at the end of the header section (see there).
                self._arm_read(_BODY, self.limits.body_timeout)

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = {}
        self._header_count = self._header_bytes = 0
        self._in_head = True
        self._head_seen = 0
        if self._read_phase != _HEADER:
            # The header timeout counts from this read: armed at its end if
            # the header section is incomplete then (dataReceived). A head
            # that arrives whole in one read, the common case, needs none
            # (no clock read, no timer).
            self._read_phase = _HEADER
            self._head_due = True

    def on_url(self, part: bytes) -> None:
        # llhttp may hand the target over in pieces across reads.
        url = self._url = self._url + part
        if len(url) > self.limits.max_target:
            raise _Reject(414, "URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        count = self._header_count = self._header_count + 1
        size = self._header_bytes = self._header_bytes + len(name) + len(value) + 4
        limits = self.limits
        if count > limits.max_headers or size > limits.max_header_bytes:
            raise _Reject(431, "Request header fields too large")
        if self._body_of is not None:
            return  # a trailer field: counted, then dropped (RFC 9110 §6.5.1)
        if value and value[-1] in (32, 9):
            # llhttp strips leading whitespace only (RFC 9110 §5.5: OWS
            # around the value is not part of it).
            value = value.rstrip(b" \t")
        # Stored as Headers.addRawHeader would, without its CR/LF scrubbing
        # (llhttp refuses CR and LF in values) and per-call overhead.
        key = _canonical(name) or _encode_name(name)
        fields: dict[bytes, list[bytes]] = self._fields  # type: ignore[assignment]
        if key in fields:
            fields[key].append(value)
        else:
            fields[key] = [value]

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        version = parser.get_http_version()
        if version == "1.1":
            proto = b"HTTP/1.1"
        elif version == "1.0":
            proto = b"HTTP/1.0"
        elif version[:1] >= "2":
            raise _Reject(505, "HTTP version not supported")
        else:
            raise _Reject(400, "Bad request: HTTP/1.0 or HTTP/1.1 only")
        method = parser.get_method()
        fields: dict[bytes, list[bytes]] = self._fields  # type: ignore[assignment]
        host = fields.get(b"Host")
        if host is None:
            if proto == b"HTTP/1.1":
                raise _Reject(400, "Bad request: a Host header is required")
        elif len(host) > 1:
            raise _Reject(400, "Bad request: more than one Host header")
        elif not (_valid_hosts.get(host[0]) or _host_is_valid(host[0])) or (
            not host[0] and proto == b"HTTP/1.1"
        ):
            raise _Reject(400, "Bad request: invalid Host header")
        url = self._url
        # find, not ``in``: bytes.__contains__ first tries its argument as an
        # integer and builds (then drops) a TypeError for a bytes argument.
        if url.find(b"#") != -1:
            raise _Reject(400, "Bad request: a fragment in the request target")
        if url[:1] != b"/":
            # Not origin-form (the common case): absolute-form, asterisk-form.
            if b"@" in url.partition(b"://")[2].partition(b"/")[0]:
                raise _Reject(400, "Bad request: userinfo in the request target")
            if not (
                url[:7].lower() == b"http://"
                or url[:8].lower() == b"https://"
                or (url == b"*" and method == b"OPTIONS")
            ):
                if method == b"CONNECT":
                    raise _Reject(501, "CONNECT not implemented")
                raise _Reject(400, "Bad request: invalid request target")
        length: int | None = None
        chunked = False
        te = fields.get(b"Transfer-Encoding")
        if te is not None:
            if proto == b"HTTP/1.0":
                raise _Reject(400, "Bad request: Transfer-Encoding in an HTTP/1.0 request")
            codings = [c.strip().lower() for c in b",".join(te).split(b",")]
            if codings[-1] != b"chunked":
                # The length cannot be known (RFC 9112 §6.3).
                raise _Reject(400, "Bad request: chunked must be the final transfer coding")
            if len(codings) > 1:
                raise _Reject(501, "Transfer coding not implemented")
            chunked = True
        else:
            declared = fields.get(b"Content-Length")
            if declared:
                # One value of digits only: llhttp checked.
                length = int(declared[0])
        if (chunked or length) and b"Upgrade" in fields:
            # httptools would skip the body of an upgrade request (it
            # expects the connection to change protocols): refused rather
            # than forwarded without its body (an upgrade is passed through
            # for bodyless requests only, see switch_protocols).
            raise _Reject(400, "Bad request: Upgrade with a request body")
        expect = fields.get(b"Expect")
        if expect is not None and (len(expect) > 1 or expect[0].lower() != b"100-continue"):
            raise _Reject(417, "Expectation failed")
        headers = _new_headers(Headers)
        headers._rawHeaders = fields
        content: BoundedBody | StreamedBody
        if self._streams and (chunked or length):
            limits = self.limits
            content = StreamedBody(limits.max_body, None if chunked else length, self,
                                   limits.body_replay, limits.body_buffer)
            self._backlog = False
        else:
            content = BoundedBody(self.limits.max_body, length)
        request = H1Request(
            self,
            method,
            url,
            proto,
            headers,
            content,
            parser.should_keep_alive(),  # read here: after the message it says False
        )
        self.queue.append(request)
        self._url = b""  # the request's now: a later refusal names its own target
        if chunked or length:
            self._body_of = request
            # A refused size gets no 100: the answer comes at once.
            request.expect_continue = (
                expect is not None and proto == b"HTTP/1.1" and not request.content.exceeded  # type: ignore[union-attr]
            )
            if request.expect_continue and content.__class__ is StreamedBody:
                # The client waits for the 100, sent when the body is wanted
                # (body_wanted, which arms the body timeout): until then the
                # wait is ours (a retry interval, the counters), not a slow body.
                self._read_phase = 0
            else:
                self._arm_read(_BODY, self.limits.body_timeout)
        else:
            self._read_phase = 0

    def on_body(self, data: bytes) -> None:
        request = self._body_of
        if request is not None:
            request.content.write(data)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self._completed += 1
        request = self._body_of
        self._body_of = None
        self._read_phase = 0
        queue = self.queue
        if queue:
            queue[-1].complete = True
            if request is not None and request.content.__class__ is StreamedBody:
                self._backlog = False
                request.content.finish()  # type: ignore[union-attr]
            if self._reading_paused or len(queue) >= self._full_from:
                # (else nothing can have paused reading: see _update_reading)
                self._update_reading()

    # -- answering ---------------------------------------------------------------------

    def _advance(self) -> None:
        """Answer the queued requests in order, as far as they are ready."""
        if self._advancing:
            return
        self._advancing = True
        try:
            queue = self.queue
            while queue and not self._closing:
                request = queue[0]
                if request.rendered:
                    break  # its answer is in progress
                if request.error is not None:
                    request.rendered = True
                    self._answer_error(request, *request.error)
                    continue
                if not request.complete:
                    content = request.content
                    if content.__class__ is StreamedBody:
                        # Rendered at the end of its header section; the
                        # 100 goes out when a consumer starts on the body.
                        request.rendered = True
                        self._render(request)
                        continue
                    if content is None or not content.exceeded:
                        if request.expect_continue:
                            # Its turn, and its body is wanted (RFC 9110 §10.1.1).
                            request.expect_continue = False
                            self.send(_CONTINUE)
                        break
                    # Over the size limit: answered now, the body never read.
                request.rendered = True
                self._render(request)
        finally:
            self._advancing = False

    def _render(self, request: H1Request) -> None:
        try:
            body = self.resource.render(request)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - any bug in a resource is a 500, not a hung connection
            self._log.failure("Rendering {uri!r} failed", uri=request.uri)
            if request.channel is None or request.finished:
                return
            if request.startedWriting:
                self.close_now()
            else:
                request.discard_response_headers()
                self._answer_error(request, 500, "Internal server error")
            return
        if isinstance(body, bytes):
            if not request.responseHeaders.hasHeader(b"content-length"):
                request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()
        # else NOT_DONE_YET: the resource finishes it later.

    def _answer_error(self, request: H1Request, status: int, message: str) -> None:
        body = envelope(status, message)
        self.persistent = False
        request.keep_alive = False
        request.code = status
        request.code_message = None
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()
        refused = self.server.on_refused
        if refused is not None:
            refused(request, status, message, len(body))

    def request_done(self, request: H1Request) -> None:
        """Called by ``request.finish()``: the answer went out completely."""
        queue = self.queue
        if queue and queue[0] is request:
            queue.popleft()
        self._producer = None
        held = b""
        if request is self._upgrade_wait:
            # Answered without switching: what the client sent since is
            # HTTP/1.1 again (llhttp resumes after the upgrade request).
            self._upgrade_wait = None
            held = b"".join(self._held)
            self._held = []
            self._held_bytes = 0
        if self._gone:
            return
        if not self.persistent:
            self._close_after(request)
            return
        if self._reading_paused:
            # (Answering shortens the queue and nothing else: reading that
            # goes on stays on.)
            self._update_reading()
        if queue:
            self._advance()
        elif not self._in_head and self._body_of is None:
            self._arm_read(_KEEPALIVE, self.limits.keepalive_timeout)
        if held:
            self.dataReceived(held)

    # -- switching protocols (Upgrade) -------------------------------------------------

    def _hold(self, data: bytes) -> None:
        """Keep what arrives behind an upgrade request; stop reading past a bound."""
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > _HOLD_LIMIT:
            self._update_reading()

    def switch_protocols(
        self, request: H1Request, head: bytes, make_tunnel: Callable[[Any], Any]
    ) -> Any:
        """
        The upgrade request ``request`` is answered 101 (``head``): send it,
        let go of the transport (no producer, no timer, no HTTP any more)
        and hand it to the tunnel ``make_tunnel(transport)`` builds, which
        receives what the client sent after the request first. Returns the
        tunnel, or ``None`` when the request is not the one waiting (the
        client left, or it was no upgrade request).
        """
        if self._gone or self._closing or request is not self._upgrade_wait:
            return None
        queue = self.queue
        if queue and queue[0] is request:
            queue.popleft()
        self._upgrade_wait = None
        held = b"".join(self._held)
        self._held = []
        self._held_bytes = 0
        self._cancel_timers()
        self._read_phase = 0
        self._producer = None
        self.send(head)
        self._unregister()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()
        tunnel = self.tunnel = make_tunnel(self.transport)
        if held:
            tunnel.client_data(held)
        return tunnel

    def producer_registered(self, request: H1Request, producer: IPushProducer) -> None:
        self._producer = producer
        if self._send_paused:
            producer.pauseProducing()

    def producer_unregistered(self, request: H1Request) -> None:
        self._producer = None

    # -- refusing and closing ----------------------------------------------------------

    def _reject(self, status: int, message: str) -> None:
        """
        Stop parsing; answer ``status`` after the answers to the requests
        before this one, then close.
        """
        started = self._request_begun()
        self._broken = True
        self._in_head = False
        self._read_phase = 0
        self._log.debug(
            "HTTP/1.1 request from {client} refused: {status} {message}",
            client=str(self.peer),
            status=status,
            message=message,
        )
        request = self._body_of
        self._body_of = None
        if request is not None:
            content = request.content
            if content.__class__ is StreamedBody:
                # Its consumer (the backend exchange) is failed; the
                # resource answers the error if no response started.
                self._backlog = False
                content.fail(BodyError(status, message))  # type: ignore[union-attr]
            if request.rendered:
                return  # answered already (its body was over the limit), or answering
            request.error = (status, message)
            return
        if status == 408 and not started and not self.queue:
            # Nothing of a request arrived (nginx closes silently too).
            self.close_now()
            return
        # What arrived of the refused request, for its access-log line: the
        # target once llhttp passed it (so the method too), and the fields
        # read so far (its Host). A request accepted before it took its own.
        method = b""
        target = self._url
        version = b"HTTP/1.1"
        headers = _new_headers(Headers)
        headers._rawHeaders = {}
        if target:
            parser = self.parser
            method = parser.get_method()
            parsed = parser.get_http_version()
            if self._header_count or not started or parsed[:1] >= "2":
                # Past the request line (a field was read, or the section
                # ended; or llhttp stopped at an HTTP/2 preface, no earlier
                # request of which can have said 2.0), so its version is
                # this request's. (The answer says HTTP/1.1, and closes.)
                version = b"HTTP/" + parsed.encode("ascii")
            headers._rawHeaders = self._fields or {}
        stub = H1Request(self, method, target, version, headers, None, False)  # type: ignore[arg-type]
        stub.error = (status, message)
        stub.complete = True
        self.queue.append(stub)

    def _close_after(self, request: H1Request) -> None:
        """
        Close after the last answer. If input may still be arriving (a body
        we did not read, a refused request), close our side only and drain
        what comes for ``linger`` seconds, so the client reads the answer
        before the close (a close with unread input sends a reset that can
        destroy it, RFC 9112 §9.6).
        """
        unread = self._broken or not request.complete or self._in_head or self._body_of is not None
        self._broken = True
        transport = self.transport
        # Over TLS the attribute would be the TCP connection's (Twisted's TLS
        # protocol forwards unknown names to it): a TCP half-close under TLS,
        # without close_notify. close_now() is TLS's own half-close.
        half_close = None if self._tls else getattr(transport, "loseWriteConnection", None)
        if not unread or half_close is None or self._closing:
            self.close_now()
            return
        self._closing = True
        self._unregister()
        half_close()
        if self._reading_paused:
            self._reading_paused = False
            transport.resumeProducing()
        self._linger_until = self.clock.seconds() + self.limits.linger_total
        self._arm_read(_LINGER, self.limits.linger)

    def close_now(self) -> None:
        """
        Close the connection once what was written is sent.

        Over TLS, ``loseConnection`` sends close_notify and then waits for
        the client's close_notify (or its close) before closing TCP: TLS's
        half-close, so what the client still sends is read (and dropped),
        not answered with a reset. A client that neither answers nor closes
        is aborted after the linger (each read moves the deadline, up to
        ``linger_total``), so a closing connection never stays open for good.
        """
        self._broken = True
        self.persistent = False
        transport = self.transport
        if transport is None or self._gone or self._closing:
            return
        self._closing = True
        self._unregister()
        transport.loseConnection()
        if self._tls:
            if self._reading_paused:
                self._reading_paused = False
                transport.resumeProducing()
            self._linger_until = self.clock.seconds() + self.limits.linger_total
            self._arm_read(_LINGER, self.limits.linger)

    def _unregister(self) -> None:
        # A TLS transport closes only once no producer is registered.
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    def local_address(self) -> Any:
        address = self._local
        if address is None:
            address = self._local = self.transport.getHost()
        return address

    # -- timers ---------------------------------------------------------------------------

    def _arm_read(self, phase: int, delay: float) -> None:
        """
        Set the read-side deadline. One timer per connection, re-armed
        lazily: moving the deadline costs a clock read, and the timer, when
        it fires early, sleeps again until the deadline (most deadlines move
        before they are reached: every request moves it twice).
        """
        self._read_phase = phase
        deadline = self.clock.seconds() + delay
        self._read_deadline = deadline
        timer = self._read_timer
        if timer is None:
            self._read_timer = self.clock.callLater(delay, self._read_timeout)
        elif deadline < self._read_timer_at:
            timer.reset(delay)
        else:
            return
        self._read_timer_at = deadline

    def _read_timeout(self) -> None:
        self._read_timer = None
        phase = self._read_phase
        if self._gone or phase == 0:
            return
        left = self._read_deadline - self.clock.seconds()
        if left > 0:
            self._read_timer = self.clock.callLater(left, self._read_timeout)
            self._read_timer_at = self._read_deadline
            return
        self._read_phase = 0
        if phase == _KEEPALIVE:
            self.close_now()
        elif phase == _LINGER:
            self.transport.abortConnection()
        else:
            # A slow header section or body (the slowloris family).
            self._reject(408, "Request timeout")
            self._advance()

    def _send_timeout(self) -> None:
        self._send_timer = None
        if self._gone:
            return
        waiting = self._waiting_bytes()
        if 0 <= waiting < self._send_waiting:
            # The client reads, slowly: Twisted resumes only once its buffer
            # is empty, so a steady slow reader must not count as a stuck one.
            self._send_waiting = waiting
            self._send_timer = self.clock.callLater(self.limits.send_timeout, self._send_timeout)
            return
        self._log.info(
            "Client {client} read nothing for {timeout} s: connection aborted",
            client=str(self.peer),
            timeout=self.limits.send_timeout,
        )
        self.transport.abortConnection()

    def _cancel_timers(self) -> None:
        for timer in (self._read_timer, self._send_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._read_timer = self._send_timer = None

    def is_idle(self) -> bool:
        """No request in progress (between requests of a keep-alive connection); a tunnel never is."""
        return (
            not self.queue
            and not self._request_begun()
            and self._body_of is None
            and self.tunnel is None
        )

    def _request_begun(self) -> bool:
        """Bytes of a request's head arrived (it is not idle; a timeout answers 408)."""
        return self._in_head


def _parser_refusal(error: HttpParserError, start: bytes) -> tuple[int, str]:
    """
    The answer to what llhttp refused. ``start``: the refused message's
    first bytes, when known.
    """
    if isinstance(error, HttpParserInvalidMethodError):
        if _TOKEN.match(start) is not None:
            return 501, "Method not implemented"
        return 400, "Bad request"
    return 400, f"Bad request: {error}"


_C = TypeVar("_C", bound=H1Channel)


class H1Server(Factory):
    """
    Builds :class:`H1Channel` connections for one resource (the proxy's),
    and tracks them so a drain can close the idle ones (as
    :meth:`GatewaySite.close_idle_connections <gateway.proxy.GatewaySite.close_idle_connections>`).

    :param clock: schedules the timeouts.
    :param on_refused: called with ``(request, status, message, sent)``
        for every request the channel answers itself (a refusal, a timeout,
        a resource that raised), which the resource's access log and
        metrics never see: ``request`` is the :class:`H1Request` (for a
        request refused in its header section, one holding what arrived: the
        target and method once parsed, else empty; the fields read so far),
        ``sent`` the answer's body size.
    """

    def __init__(
        self,
        resource: Resource,
        clock: IReactorTime,
        limits: H1Limits | None = None,
        *,
        on_refused: Callable[[H1Request, int, str, int], None] | None = None,
    ) -> None:
        self.resource = resource
        self.on_refused = on_refused
        self.clock = clock
        self.limits = limits if limits is not None else H1Limits()
        self.channels: weakref.WeakSet[H1Channel] = weakref.WeakSet()
        #: connections accepted so far
        self.accepted = 0

    def buildProtocol(self, addr: Any) -> H1Channel:
        return self.new_channel(H1Channel)

    def new_channel(self, kind: Callable[[H1Server], _C]) -> _C:
        """
        A new connection of ``kind`` (an :class:`H1Channel` subclass, such
        as the TLS listener's, which may hand the connection over to HTTP/2),
        counted and tracked for the drain.
        """
        self.accepted += 1
        channel = kind(self)
        channel.factory = self
        self.channels.add(channel)
        return channel

    def close_idle_connections(self) -> int:
        """Close every connection between requests. Returns how many."""
        closed = 0
        for channel in list(self.channels):
            if channel.is_idle() and not channel._gone:
                channel.close_now()
                closed += 1
        return closed
