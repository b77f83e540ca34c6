"""Unit tests for small pieces of the proxy resource used by TLS and HTTP/2."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.proxy._resource import _cut, _without_port


class _Channel:
    def __init__(self, stream_id: int | None) -> None:
        self.streamID = stream_id
        self.aborted = False

    def abortConnection(self) -> None:  # noqa: N802
        self.aborted = True


class _Request:
    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.lost = False

    def loseConnection(self) -> None:  # noqa: N802
        self.lost = True


class HelperTests(SynchronousTestCase):
    def test_without_port(self) -> None:
        """The Host header's port is dropped for the redirect target, IPv6 brackets kept."""
        self.assertEqual(_without_port("example.com:8080"), "example.com")
        self.assertEqual(_without_port("example.com"), "example.com")
        self.assertEqual(_without_port("[::1]:8080"), "[::1]")
        self.assertEqual(_without_port("[::1]"), "[::1]")

    def test_cut_resets_an_http2_stream(self) -> None:
        """A broken response resets its HTTP/2 stream, and closes an HTTP/1.1 connection."""
        h2 = _Request(_Channel(3))
        _cut(h2)
        self.assertEqual((h2.channel.aborted, h2.lost), (True, False))
        h1 = _Request(_Channel(None))
        _cut(h1)
        self.assertEqual((h1.channel.aborted, h1.lost), (False, True))
