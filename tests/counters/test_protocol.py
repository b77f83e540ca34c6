"""
The pure parts of the Redis client: RESP2 encoding and incremental
parsing, URL parsing; and the connection's timeout watchdog on a fake
clock and transport.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gateway.counters import RedisTimeout, RedisUnavailable, parse_redis_url
from gateway.counters._connection import RedisProtocol
from gateway.counters._errors import RedisAuthError, RedisError, RedisNoScript
from gateway.counters._resp import ReplyError, ReplyParser, encode


class RespTests(SynchronousTestCase):
    """RESP2 both ways."""

    def test_encode(self) -> None:
        """Commands are arrays of bulk strings; str and int arguments are encoded."""
        self.assertEqual(encode([b"GET", "k\u00e9", 12]), b"*3\r\n$3\r\nGET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n12\r\n")

    def test_every_reply_kind_at_every_split(self) -> None:
        """Replies split at any byte come out whole and in order."""
        wire = b"+OK\r\n:-7\r\n$5\r\nhe\r\no\r\n$-1\r\n*3\r\n:1\r\n*1\r\n$0\r\n\r\n-ERR x\r\n*-1\r\n-NOSCRIPT no\r\n"
        expected = [b"OK", -7, b"he\r\no", None, [1, [b""], ReplyError("ERR x")], None, ReplyError("NOSCRIPT no")]
        for split in range(len(wire) + 1):
            parser = ReplyParser()
            got = parser.feed(wire[:split]) + parser.feed(wire[split:])
            self.assertEqual(got, expected, split)

    def test_not_resp(self) -> None:
        """Bytes that are not RESP raise ValueError (the connection is then dropped)."""
        self.assertRaises(ValueError, ReplyParser().feed, b"HTTP/1.1 400\r\n")


class UrlTests(SynchronousTestCase):
    """redis:// and rediss:// URLs."""

    def test_forms(self) -> None:
        """Host, port, db, user, password (percent-decoded) and TLS are read; defaults apply."""
        a = parse_redis_url("redis://localhost")
        self.assertEqual((a.host, a.port, a.db, a.tls, a.username, a.password), ("localhost", 6379, 0, False, None, None))
        b = parse_redis_url("rediss://u:p%40ss@redis.example:6380/3")
        self.assertEqual((b.host, b.port, b.db, b.tls, b.username, b.password), ("redis.example", 6380, 3, True, "u", "p@ss"))
        c = parse_redis_url("redis://:fromurl@[::1]:7000", password="apart")
        self.assertEqual((c.host, c.port, c.username, c.password), ("::1", 7000, None, "apart"))

    def test_password_not_in_repr(self) -> None:
        """The password does not appear in the address's repr or str (log lines)."""
        a = parse_redis_url("redis://:hunter2@h:1/0")
        self.assertNotIn("hunter2", repr(a) + str(a))

    def test_bad_urls(self) -> None:
        """Wrong scheme, no host, a database that is not a number: ValueError."""
        for url in ["http://h", "redis://", "redis://h/x", "redis://h:port"]:
            self.assertRaises(ValueError, parse_redis_url, url)


class ConnectionTests(SynchronousTestCase):
    """The pipelined connection on a fake clock and transport."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.lost: list[Exception] = []
        self.protocol = RedisProtocol(self.clock, self.lost.append)
        self.transport = StringTransport()
        self.transport.abortConnection = lambda: self.protocol.connectionLost()  # type: ignore[method-assign]
        self.protocol.makeConnection(self.transport)

    def test_replies_match_commands_in_order(self) -> None:
        """Replies fire the waiting commands in order; error replies fail only their own command."""
        d1 = self.protocol.command([b"PING"], 1)
        d2 = self.protocol.command([b"EVALSHA", b"x", 0], 1)
        d3 = self.protocol.command([b"AUTH", b"p"], 1)
        d4 = self.protocol.command([b"GET", b"k"], 1)
        self.assertEqual(self.transport.value().count(b"*"), 4)  # all written at once
        self.protocol.dataReceived(b"+PONG\r\n-NOSCRIPT No matching script\r\n-WRONGPASS bad\r\n$1\r\nv")
        self.assertEqual(self.successResultOf(d1), b"PONG")
        self.failureResultOf(d2, RedisNoScript)
        self.failureResultOf(d3, RedisAuthError)
        self.assertNoResult(d4)
        self.protocol.dataReceived(b"\r\n")
        self.assertEqual(self.successResultOf(d4), b"v")

    def test_one_watchdog_times_out_the_oldest(self) -> None:
        """A late reply aborts the connection: every waiting command fails with RedisTimeout."""
        d1 = self.protocol.command([b"PING"], 0.25)
        self.clock.advance(0.2)
        d2 = self.protocol.command([b"PING"], 0.25)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.protocol.dataReceived(b"+PONG\r\n")
        self.successResultOf(d1)
        self.clock.advance(0.1)  # d1's deadline: answered; the watchdog re-arms for d2
        self.assertNoResult(d2)
        self.clock.advance(0.15)
        self.failureResultOf(d2, RedisTimeout)
        self.assertIsInstance(self.lost[0], RedisTimeout)
        self.assertRaises(RedisUnavailable, self.protocol.command, [b"PING"], 1)

    def test_error_kinds(self) -> None:
        """Plain errors are RedisError, neither unavailable nor auth."""
        d = self.protocol.command([b"X"], 1)
        self.protocol.dataReceived(b"-ERR unknown command\r\n")
        f = self.failureResultOf(d, RedisError)
        self.assertNotIsInstance(f.value, (RedisNoScript, RedisAuthError))
