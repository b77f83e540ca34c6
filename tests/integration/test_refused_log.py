"""
Requests the strict HTTP/1.1 server refuses itself (malformed, over a
limit, timed out) get an access-log line and a count, on the real gateway:
they never reach the proxy resource, whose observer logs every other
answer.
"""

from __future__ import annotations

import socket
from typing import Any, ClassVar

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from .harness import GatewayTestCase, raw_exchange


def _stalled_head(port: int) -> bytes:
    """Half a header section, then nothing: read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        # (llhttp passes a field on once the next one starts: Host is read.)
        sock.sendall(b"GET /app/stalled HTTP/1.1\r\nHost: slow.example.com\r\nUser-Agent: t")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class RefusedAccessLogTests(GatewayTestCase):
    environ: ClassVar[dict[str, str]] = {"net.server.header-timeout": "1"}

    def access_lines(self) -> list[str]:
        return [e["access_line"] for e in self.events if "access_line" in e]

    def refused_lines(self) -> list[str]:
        return [line for line in self.access_lines() if "request_id=- " in line]

    @inlineCallbacks
    def test_malformed_request_logged(self) -> Any:
        """An obs-folded header: 400, logged with its method, target, Host and the answer's size."""
        raw = yield deferToThread(
            raw_exchange,
            self.port,
            b"GET /app/folded?q=1 HTTP/1.1\r\nHost: fold.example.com\r\nX-A: a\r\n b\r\n\r\n",
        )
        head, body = raw.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "), head)
        (line,) = self.refused_lines()
        self.assertEqual(
            line,
            f'127.0.0.1 "GET /app/folded?q=1 HTTP/1.1" 400 {len(body)} 0.000ms '
            "host=fold.example.com route=- backend=- request_id=- "
            "api=- operation=- product=- subscription=-",
        )

    @inlineCallbacks
    def test_binary_input_logged_with_dashes(self) -> Any:
        """A TLS ClientHello on the plain port: 400, method and target unknown (``-``)."""
        raw = yield deferToThread(raw_exchange, self.port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1")
        self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw[:100])
        (line,) = self.refused_lines()
        self.assertTrue(line.startswith('127.0.0.1 "- - HTTP/1.1" 400 '), line)
        self.assertIn(" host=- route=- ", line)

    @inlineCallbacks
    def test_header_timeout_logged(self) -> Any:
        """A header section that stops arriving: 408 at the header timeout, logged with what came."""
        raw = yield deferToThread(_stalled_head, self.port)
        self.assertTrue(raw.startswith(b"HTTP/1.1 408 "), raw[:100])
        (line,) = self.refused_lines()
        self.assertIn('"GET /app/stalled HTTP/1.1" 408 ', line)
        self.assertIn(" host=slow.example.com ", line)

    @inlineCallbacks
    def test_pipelined_refusal_after_an_answer(self) -> Any:
        """
        A good request and a malformed one in one write: answered in order,
        one line each (the refusal's is written as the first answer ends,
        the first's right after, in the same reactor step).
        """
        raw = yield deferToThread(
            raw_exchange,
            self.port,
            b"GET /app/first HTTP/1.1\r\nHost: a.example.com\r\n\r\n"
            b"GET /app/second HTTP/1.1\r\n\r\n",  # no Host on HTTP/1.1
        )
        self.assertEqual(raw.count(b"HTTP/1.1 200 "), 1)
        self.assertEqual(raw.count(b"HTTP/1.1 400 "), 1)
        self.assertLess(raw.index(b"HTTP/1.1 200 "), raw.index(b"HTTP/1.1 400 "))
        second, first = sorted(self.access_lines(), key=lambda line: "/app/first" in line)
        self.assertIn('"GET /app/first HTTP/1.1" 200 ', first)
        self.assertIn('"GET /app/second HTTP/1.1" 400 ', second)
        self.assertIn("request_id=- ", second)
        self.assertNotIn("request_id=- ", first)

    @inlineCallbacks
    def test_counted_by_status(self) -> Any:
        """Refusals are counted in apimgw_http_refused_total, not in the request metrics."""
        yield deferToThread(raw_exchange, self.port, b"GET /app/x HTTP/1.1\r\n\r\n")
        yield deferToThread(
            raw_exchange, self.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        metrics = yield self.admin("/metrics")
        text = metrics.body.decode()
        self.assertIn('apimgw_http_refused_total{status="400"} 1.0', text)
        self.assertIn('apimgw_http_refused_total{status="414"} 1.0', text)
        others = [
            line for line in text.splitlines()
            if '"414"' in line and not line.startswith("apimgw_http_refused")
        ]
        self.assertEqual(others, [])
        statuses = sorted(line.split('" ', 1)[1].split(" ", 1)[0] for line in self.refused_lines())
        self.assertEqual(statuses, ["400", "414"])

    @inlineCallbacks
    def test_version_and_an_invalid_host_as_logged(self) -> Any:
        """
        The refused request's own version once its request line was read;
        a Host that was refused for its spaces cannot forge fields.
        """
        yield deferToThread(
            raw_exchange,
            self.port,
            b"POST /app/x HTTP/1.0\r\nHost: a.example.com\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        yield deferToThread(
            raw_exchange,
            self.port,
            b"GET /app/y HTTP/1.1\r\nHost: a b route=FORGED request_id=FAKE\r\n\r\n",
        )
        http10, forged = self.refused_lines()
        self.assertIn('"POST /app/x HTTP/1.0" 400 ', http10)
        self.assertIn(
            '"GET /app/y HTTP/1.1" 400 ', forged
        )
        self.assertIn(" host=a%20b%20route=FORGED%20request_id=FAKE route=- ", forged)
        self.assertEqual(forged.count(" request_id="), 1)  # the real field only
