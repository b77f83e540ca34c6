"""
The request object of our HTTP/1.1 server (:mod:`._h1`): what the proxy
resource renders (:class:`~gateway.proxy.ProxyRequest`), and the response
framing on the way out.

It is not a twisted.web ``Request``: only the attributes and methods of the
``ProxyRequest`` Protocol (which is what :class:`~gateway.proxy.ProxyResource`
and the policy path use), so a type checker verifies the two stay in step.
Headers are twisted.web's :class:`Headers`, so header code is shared with
the HTTP/2 path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers

from gateway.translate import ApiCall

from ._body import BoundedBody, StreamedBody
from ._httpdate import HTTP_DATE

if TYPE_CHECKING:
    from ._h1 import H1Channel

__all__ = ["H1Request"]

#: What ``_head`` reads when no header was set with ``setHeader``.
_NO_HEADERS: dict[bytes, list[bytes]] = {}

#: Responses that never have a body (RFC 9110 §6.4.1, §15.3.5, §15.4.5).
_NO_BODY_CODES = frozenset({204, 304})


def _status_line(code: int, message: bytes | None) -> bytes:
    reason = message if message is not None else RESPONSES.get(code, b"Unknown")
    return b"HTTP/1.1 %d %s\r\n" % (code, reason)


class H1Request:
    """
    One HTTP/1.1 request and its response.

    Created by the channel once the header section is complete and valid;
    the body (``content``) is filled as it arrives, and the resource renders
    the request once it is complete (or at once, when the body is refused
    for its size: it is then never read).

    The response always says ``HTTP/1.1`` (RFC 9110 §2.5: a server sends its
    own version); to an HTTP/1.0 client it is never chunked: a body of
    unknown length is delimited by the close instead.
    """

    #: Its method, target and ``Host`` passed the server's checks (a
    #: token; llhttp's target characters; the ``Host`` syntax): the text
    #: access log writes them as they are (``AccessLog.emit(checked=...)``).
    #: A refused request's are not read from here.
    fields_checked = True

    __slots__ = (
        "_chunked",
        "_forwarded",
        "_forwarded_id",
        "_no_body",
        "_producer",
        "_response_headers",
        "api_call",
        "channel",
        "client",
        "clientproto",
        "code",
        "code_message",
        "complete",
        "content",
        "error",
        "exchange",
        "expect_continue",
        "finished",
        "keep_alive",
        "method",
        "on_client_gone",
        "rendered",
        "requestHeaders",
        "sentLength",
        "startedWriting",
        "upgrade",
        "uri",
    )

    def __init__(
        self,
        channel: H1Channel,
        method: bytes,
        uri: bytes,
        clientproto: bytes,
        headers: Headers,
        content: BoundedBody | StreamedBody,
        keep_alive: bool,
    ) -> None:
        self.channel: Any = channel
        #: the peer, kept: a request whose client left still names it (499 lines)
        self.client = channel.peer
        self.method = method
        self.uri = uri
        self.clientproto = clientproto
        self.requestHeaders = headers
        #: created when first asked for (a proxied response is forwarded
        #: from the backend's list, see forward_response: most never are)
        self._response_headers: Headers | None = None
        self.content: BoundedBody | StreamedBody | None = content
        self.code = 200
        self.code_message: bytes | None = None
        self.sentLength = 0
        self.startedWriting = 0
        self.finished = False
        self.on_client_gone: Any = None
        self.api_call: ApiCall | None = None
        #: set by the proxy resource's policy path (as on ``GatewayRequest``)
        self.exchange: Any = None
        #: what the client asked for (``Connection``, the protocol version)
        self.keep_alive = keep_alive
        #: the whole request (body included) has been received
        self.complete = False
        #: handed to the resource
        self.rendered = False
        #: ``Expect: 100-continue`` not answered yet
        self.expect_continue = False
        #: a refusal (status, message) found in this request: answered
        #: instead of rendering it
        self.error: tuple[int, str] | None = None
        self._chunked = False
        self._no_body = method == b"HEAD"
        self._producer: IPushProducer | None = None
        #: the ``Upgrade`` header of a request that asks to switch
        #: protocols (``Connection: upgrade``, no body), else ``None``
        self.upgrade: bytes | None = None
        #: a backend's response headers, forwarded as a list (see
        #: :meth:`forward_response`); ``responseHeaders`` holds the rest
        self._forwarded: list[tuple[bytes, bytes]] = []
        self._forwarded_id: bytes | None = None

    # -- what the resource reads ---------------------------------------------

    def getClientAddress(self) -> Any:
        return self.client

    def getRequestHostname(self) -> bytes:
        """The Host header's name without its port, else the local address."""
        values = self.requestHeaders.getRawHeaders(b"host")
        if values and values[0]:
            host = values[0]
            if host[:1] == b"[":
                end = host.find(b"]")
                return host[: end + 1] if end > 0 else host
            return host.partition(b":")[0]
        channel = self.channel
        address = channel.local_address() if channel is not None else None
        return str(getattr(address, "host", "")).encode("ascii", "replace")

    # -- the response ------------------------------------------------------------

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        if self.startedWriting:
            return
        self.code = code
        self.code_message = message

    @property
    def responseHeaders(self) -> Headers:
        headers = self._response_headers
        if headers is None:
            headers = self._response_headers = Headers()
        return headers

    @responseHeaders.setter
    def responseHeaders(self, headers: Headers) -> None:
        self._response_headers = headers

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.responseHeaders.setRawHeaders(name, [value])

    def discard_response_headers(self) -> None:
        """Forget every response header set so far (an error answer replaces the response)."""
        self._response_headers = None
        self._forwarded = []
        self._forwarded_id = None

    def forward_response(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        request_id: bytes,
    ) -> None:
        """
        Start the answer with a backend's status and headers, ``headers``
        already stripped of hop-by-hop ones (``Transfer-Encoding`` among
        them: the framing is ours; names as the backend wrote them, and
        llhttp refused CR, LF and NUL in them), plus ``X-Request-Id:
        request_id`` unless the backend sent one. The list is written as
        it is by :meth:`_head` rather than copied into ``responseHeaders``
        and read back: the proxy's most common answer costs no ``Headers``
        work. Headers set with :meth:`setHeader` still go out too.
        """
        if self.startedWriting:
            return
        self.code = status
        self.code_message = reason or None
        self._forwarded = headers
        self._forwarded_id = request_id

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """
        Register the producer of the response body: paused while the client
        reads slower than it produces. Push producers only (the proxy's
        backend exchange is one).
        """
        if not streaming:
            raise ValueError("H1Request accepts push (streaming) producers only")
        self._producer = producer
        channel = self.channel
        if channel is not None:
            channel.producer_registered(self, producer)

    def unregisterProducer(self) -> None:
        self._producer = None
        channel = self.channel
        if channel is not None:
            channel.producer_unregistered(self)

    def write(self, data: bytes) -> None:
        if self.finished:
            return
        channel = self.channel
        if channel is None:
            return
        if not self.startedWriting:
            self.startedWriting = 1
            head = self._head()
            # The head and the first piece of body in one write: one
            # segment for a typical API answer.
            if data and not self._no_body:
                self.sentLength += len(data)
                if self._chunked:
                    channel.send(b"".join((head, b"%x\r\n" % len(data), data, b"\r\n")))
                else:
                    channel.send(head + data)
            else:
                channel.send(head)
            return
        if not data or self._no_body:
            return
        self.sentLength += len(data)
        if self._chunked:
            channel.send(b"".join((b"%x\r\n" % len(data), data, b"\r\n")))
        else:
            channel.send(data)

    def finish(self) -> None:
        if self.finished:
            return
        channel = self.channel
        if channel is None:
            self.finished = True
            return
        if not self.startedWriting:
            headers = self._response_headers
            if (
                not (headers is not None and headers.hasHeader(b"content-length"))
                and not any(name.lower() == b"content-length" for name, _ in self._forwarded)
                and self._body_allowed()
            ):
                # Nothing written: an empty body, said with a length rather
                # than an empty chunked body.
                self.setHeader(b"content-length", b"0")
            self.write(b"")
        if self._chunked:
            channel.send(b"0\r\n\r\n")
        self.finished = True
        self._producer = None
        channel.request_done(self)

    def switch_protocols(
        self,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        make_tunnel: Callable[[Any], Any],
    ) -> Any:
        """
        Answer ``101 Switching Protocols`` with ``headers`` (plus
        ``Connection: Upgrade``) and hand the connection to the tunnel that
        ``make_tunnel(transport)`` builds. Returns the tunnel, or ``None``
        when the connection cannot switch (the client left, the request is
        not an upgrade request, an answer started).
        """
        channel = self.channel
        if channel is None or self.startedWriting or self.upgrade is None:
            return None
        lines = [_status_line(101, reason or None)]
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"Connection: Upgrade\r\n\r\n")
        tunnel = channel.switch_protocols(self, b"".join(lines), make_tunnel)
        if tunnel is not None:
            self.startedWriting = 1
            self.code = 101
            self.finished = True
            self._producer = None
        return tunnel

    def loseConnection(self) -> None:
        """Close the connection now (a broken response: the client sees it truncated)."""
        channel = self.channel
        if channel is not None:
            channel.close_now()

    # -- channel side ------------------------------------------------------------

    def client_gone(self, reason: Failure) -> None:
        """The connection is gone: detach, and tell the resource once if it still cares."""
        self.channel = None
        callback = self.on_client_gone
        self.on_client_gone = None
        if callback is not None and not self.finished:
            callback(reason)

    def _body_allowed(self) -> bool:
        code = self.code
        return not (code in _NO_BODY_CODES or code < 200)

    def _head(self) -> bytes:
        """
        The status line and header section, deciding the framing: the
        resource's ``Content-Length``; else chunked to an HTTP/1.1 client;
        else (HTTP/1.0) the end of the body is the close.
        """
        channel = self.channel
        headers = self._response_headers
        # Read-only use: one pass over the headers set on this response.
        raw = headers._rawHeaders if headers is not None else _NO_HEADERS
        keep = self.keep_alive and channel.persistent and self.complete and self.error is None
        connection = raw.get(b"Connection")
        if connection is not None:
            if any(b"close" in value.lower() for value in connection):
                keep = False
            del raw[b"Connection"]
        lines = [_status_line(self.code, self.code_message)]
        append = lines.append
        for name, values in raw.items():
            if name == b"Transfer-Encoding":
                continue  # the framing is ours to choose
            for value in values:
                append(b"%s: %s\r\n" % (name, value))
        has_length = b"Content-Length" in raw
        forwarded = self._forwarded
        request_id = self._forwarded_id
        if forwarded:
            # The backend's headers (hop-by-hop ones dropped already) in
            # one join, and the two names that matter found in the block
            # lowered: a name holds no ":" and a value no CR LF, so
            # "\r\nname:" only matches a header line's name.
            block = b"\r\n".join(map(b": ".join, forwarded)) + b"\r\n"
            # (find, not ``in``: see the request target's check in _h1.)
            lowered = b"\r\n" + block.lower()
            if lowered.find(b"\r\ncontent-length:") != -1:
                has_length = True
            if (
                request_id
                and lowered.find(b"\r\nx-request-id:") == -1
                and b"X-Request-Id" not in raw
            ):
                block += b"X-Request-Id: %s\r\n" % request_id
            if lowered.find(b"\r\ndate:") == -1 and b"Date" not in raw:
                # A backend without a clock: the time we received it.
                block += HTTP_DATE.at(channel.clock.seconds()).line
            append(block)
        else:
            if request_id and b"X-Request-Id" not in raw:
                append(b"X-Request-Id: %s\r\n" % request_id)
            if b"Date" not in raw:
                append(HTTP_DATE.at(channel.clock.seconds()).line)  # an answer of our own
        if not self._body_allowed():
            self._no_body = True
        elif not has_length and not self._no_body:
            if self.clientproto == b"HTTP/1.1":
                self._chunked = True
            else:
                keep = False
        if self._chunked:
            append(b"Transfer-Encoding: chunked\r\n")
        if not keep:
            append(b"Connection: close\r\n")
            channel.persistent = False
        elif self.clientproto == b"HTTP/1.0":
            append(b"Connection: keep-alive\r\n")
        append(b"\r\n")
        return b"".join(lines)
