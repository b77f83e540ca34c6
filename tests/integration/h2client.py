"""
A blocking HTTP/2 client on any connected socket (plain for h2c with prior
knowledge, or TLS after ALPN chose ``h2``), built on the ``h2`` library and
run in a test's thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events


@dataclass
class H2Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    alpn: str | None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


def h2_streams(
    sock: Any,
    scheme: str,
    authority: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    streams: int = 1,
    *,
    preface_pieces: Sequence[int] = (),
    alpn: str | None = None,
) -> list[H2Response]:
    """
    Send ``streams`` identical requests on ``sock``, concurrently (one
    stream each), and read until every response is complete; the
    connection is then closed with GOAWAY (the socket is the caller's).

    :param preface_pieces: send the first bytes (the connection preface and
        the client's settings) in pieces of these sizes, a short pause
        apart, so that the server reads them separately; the rest follows
        whole.
    :param alpn: recorded in the responses.
    """
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    opening = conn.data_to_send()
    for size in preface_pieces:
        piece, opening = opening[:size], opening[size:]
        sock.sendall(piece)
        # The pause lets the server read each piece on its own (not a
        # guarantee: the unit tests feed pieces to the channel directly).
        time.sleep(0.05)
    sock.sendall(opening)
    results: dict[int, dict[str, Any]] = {}
    for _ in range(streams):
        stream = conn.get_next_available_stream_id()
        request_headers = [
            (":method", method),
            (":path", path),
            (":scheme", scheme),
            (":authority", authority),
            *(headers or []),
        ]
        if body:
            request_headers.append(("content-length", str(len(body))))
        conn.send_headers(stream, request_headers, end_stream=not body)
        if body:
            conn.send_data(stream, body, end_stream=True)
        results[stream] = {"headers": [], "body": b"", "done": False}
    sock.sendall(conn.data_to_send())
    while not all(r["done"] for r in results.values()):
        data = sock.recv(65536)
        if not data:
            raise AssertionError("connection closed before the responses completed")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                results[event.stream_id]["headers"] = [
                    (k.decode(), v.decode()) for k, v in event.headers
                ]
            elif isinstance(event, h2.events.DataReceived):
                results[event.stream_id]["body"] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                results[event.stream_id]["done"] = True
            elif isinstance(event, h2.events.StreamReset):
                raise AssertionError(f"stream {event.stream_id} was reset")
        sock.sendall(conn.data_to_send())
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    responses = []
    for result in results.values():
        status = int(dict(result["headers"])[":status"])
        responses.append(H2Response(status, result["headers"], result["body"], alpn))
    return responses
