"""
How the proxy ends a response: APIM's error envelope, a truncation the
client can see, and asking a keep-alive client to reconnect while draining.
Shared by the plain path and the policy path.
"""

from __future__ import annotations

import json
from typing import Any

from ._contracts import ProxyRequest

__all__ = ["close_after_response", "cut", "envelope", "finish_streamed", "start_streamed"]


def envelope(status: int, message: str, **extra: str) -> bytes:
    """The APIM error body: ``{"statusCode": N, "message": "..."}``."""
    body: dict[str, Any] = {"statusCode": status, "message": message}
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def cut(request: ProxyRequest) -> None:
    """
    End a response whose headers went out but whose body cannot be
    completed, so that the client sees it is truncated: on HTTP/1.1 close
    the connection; on HTTP/2 reset the stream (closing it would end the
    stream cleanly and pass the truncated body off as complete, and would
    take the connection's other streams down).
    """
    channel = request.channel
    if channel is not None and getattr(channel, "streamID", None) is not None:
        channel.abortConnection()
    else:
        request.loseConnection()


def close_after_response(request: ProxyRequest) -> None:
    """
    While draining: ask the keep-alive client to reconnect (to another
    replica). HTTP/2 has no ``Connection`` header (the h2 library strips
    it) and its channel is a stream, not a connection: its connection is
    closed once idle, at the end of the drain.
    """
    request.setHeader(b"connection", b"close")
    channel = request.channel
    if channel is not None and hasattr(channel, "persistent"):
        channel.persistent = False


def finish_streamed(request: ProxyRequest, producer: Any) -> None:
    """
    End a response whose body was streamed from the backend: release its
    producer, send the headers if no body byte went out (HEAD, 204, 304, or
    an empty body), and finish.
    """
    if producer is not None:
        request.unregisterProducer()
    if not request.startedWriting:
        request.write(b"")
    request.finish()


def start_streamed(
    request: ProxyRequest,
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    request_id: bytes,
    draining: bool,
    producer: Any,
) -> None:
    """
    Start a response whose body streams from the backend: status, the
    headers to forward (hop-by-hop ones already removed), ``x-request-id``
    unless the backend gave one, ``Connection: close`` while draining, and
    the backend exchange as the push producer (backpressure).
    """
    forward = getattr(request, "forward_response", None)
    if forward is not None:
        # Our HTTP/1.1 server writes the list as it is: no Headers object
        # filled and read back for every response.
        forward(status, reason, headers, request_id)
    else:
        request.setResponseCode(status, reason or None)
        response_headers = request.responseHeaders
        for name, value in headers:
            response_headers.addRawHeader(name, value)
        if not response_headers.hasHeader(b"x-request-id"):
            response_headers.setRawHeaders(b"x-request-id", [request_id])
    if draining:
        close_after_response(request)
    request.registerProducer(producer, True)
