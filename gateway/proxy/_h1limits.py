"""
Limits and timeouts of the HTTP/1.1 server protocol (:mod:`._h1`).

The defaults follow nginx where nginx has an equivalent, because operators
compare a gateway with it: ``client_header_timeout`` 60 s,
``keepalive_timeout`` 75 s, ``client_body_timeout`` 60 s, ``send_timeout``
60 s, ``large_client_header_buffers`` 8 KiB per line. The header section
limit is larger than one nginx buffer (32 KiB, nginx's four buffers), since
API clients send long bearer tokens and cookies.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._body import HIGH_WATER, REPLAY_LIMIT
from ._site import DEFAULT_MAX_BODY
from ._splice import IDLE_TIMEOUT

__all__ = ["H1Limits"]


@dataclass(frozen=True)
class H1Limits:
    """
    What one HTTP/1.1 connection may send and how long it may take.

    Sizes are in bytes, times in seconds.
    """

    #: the request target (URL); above it: ``414 URI Too Long``
    max_target: int = 8 * 1024
    #: the whole header section, names and values (plus 4 bytes a line for
    #: ``: `` and CRLF); above it: ``431 Request Header Fields Too Large``
    max_header_bytes: int = 32 * 1024
    #: header lines (trailers included); above it: 431
    max_headers: int = 100
    #: the request body (the proxy answers 413 above it, as twisted.web's
    #: channel with :class:`~gateway.proxy.GatewaySite` does)
    max_body: int = DEFAULT_MAX_BODY
    #: requests parsed ahead of the one being answered (pipelining); once
    #: reached the connection stops reading until the answers catch up
    max_pipelined: int = 16
    #: from a request's first byte (or the connection's opening) until its
    #: header section is complete; exceeded: ``408`` and close
    header_timeout: float = 60.0
    #: between two reads of a request body; exceeded: ``408`` and close
    body_timeout: float = 60.0
    #: while the client reads nothing of a response we are sending (the
    #: transport paused us); exceeded: the connection is aborted
    send_timeout: float = 60.0
    #: between a response and the next request's first byte; exceeded: the
    #: connection is closed (no answer: there is no request)
    keepalive_timeout: float = 75.0
    #: after an answer that leaves a request body unread (413, a refused
    #: ``Expect``): how long the input is drained before the close, so the
    #: client's unread bytes do not turn the close into a reset that
    #: destroys the answer (RFC 9112 §9.6, nginx's ``lingering_timeout``)
    linger: float = 5.0
    #: the whole of a linger (nginx's ``lingering_time``): a client that
    #: keeps sending an unwanted body is read for this long at most, each
    #: read moving the deadline by ``linger``
    linger_total: float = 30.0
    #: a streamed request body held for a backend that is absent or paused
    #: before the client stops being read (the memory an upload costs)
    body_buffer: int = HIGH_WATER
    #: a streamed request body kept after it went to the backend, so a
    #: retry (a stale pooled connection, another endpoint) can send it
    #: again; a body that sent more is not retried
    body_replay: int = REPLAY_LIMIT
    #: after a 101: nothing either way for this long closes the tunnel
    upgrade_idle_timeout: float = IDLE_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_pipelined < 1:
            raise ValueError(f"max_pipelined must be at least 1, not {self.max_pipelined}")
