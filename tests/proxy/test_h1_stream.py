"""
Streamed request bodies on our HTTP/1.1 server (:mod:`gateway.proxy._h1`,
:class:`gateway.proxy._body.StreamedBody`), over a ``StringTransport`` with
a fake clock: a resource that declares ``streams_request_body`` is rendered
at the end of the header section and takes the body as it arrives; what it
does not take pauses the client's reads; the size limit, a bad chunk, a
timeout and a client that leaves fail the body; ``100 Continue`` waits for
the consumer; the replay buffer bounds rewinds.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gateway.proxy._body import HIGH_WATER, REPLAY_LIMIT, BodyError, StreamedBody
from gateway.proxy._h1limits import H1Limits

from .test_h1 import Connected


class Consumer:
    """Takes a body; answers the request with what it got once the body ends."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.pieces: list[bytes] = []
        self.finished = False
        self.error: BodyError | None = None

    def body_received(self, data: bytes) -> None:
        self.pieces.append(data)

    def body_finished(self) -> None:
        self.finished = True
        body = b"got %d" % sum(map(len, self.pieces))
        self.request.setHeader(b"content-length", b"%d" % len(body))
        self.request.write(body)
        self.request.finish()

    def body_failed(self, error: BodyError) -> None:
        # As the proxy does: the body's status, if the client is still there.
        self.error = error
        if self.request.channel is not None:
            self.request.setResponseCode(error.status)
            self.request.setHeader(b"content-length", b"0")
            self.request.finish()


class Streaming(Resource):
    """Rendered at the end of the header section; starts the body at once unless ``wait``."""

    isLeaf = True
    streams_request_body = True

    def __init__(self, wait: bool = False) -> None:
        super().__init__()
        self.wait = wait
        self.consumers: list[Consumer] = []
        self.sources: list[Any] = []

    def render(self, request: Any) -> Any:
        content = request.content
        if not isinstance(content, StreamedBody):
            return b"no body"
        consumer = Consumer(request)
        self.consumers.append(consumer)
        self.sources.append(content)
        if not self.wait:
            content.start(consumer)
        return NOT_DONE_YET


def _res(c: Connected) -> Streaming:
    return cast(Streaming, c.resource)


def _post(length: int, extra: bytes = b"") -> bytes:
    return b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n%s\r\n" % (length, extra)


CHUNKED = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


class StreamedBodyOnTheChannelTests(SynchronousTestCase):
    def test_rendered_at_the_end_of_the_header_section(self) -> None:
        """The resource runs before the body; pieces reach it as they arrive; keep-alive after."""
        c = Connected(resource=Streaming())
        c.send(_post(10) + b"abc")
        [consumer] = _res(c).consumers
        self.assertEqual(consumer.pieces, [b"abc"])
        self.assertFalse(consumer.finished)
        c.send(b"defghij")
        self.assertEqual(b"".join(consumer.pieces), b"abcdefghij")
        [(status, headers, body)] = c.responses()
        self.assertEqual((status, body), (200, b"got 10"))
        self.assertNotIn(b"connection", headers)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(c.responses()[0][2], b"no body")

    def test_chunked(self) -> None:
        """A chunked body arrives without its framing."""
        c = Connected(resource=Streaming())
        c.send(CHUNKED + b"3\r\nabc\r\n")
        c.send(b"2\r\nde\r\n0\r\n\r\n")
        [consumer] = _res(c).consumers
        self.assertEqual(b"".join(consumer.pieces), b"abcde")
        self.assertEqual(c.responses()[0][2], b"got 5")

    def test_backlog_pauses_reading_and_the_body_timeout(self) -> None:
        """A body nobody takes stops the client's reads at the high-water mark, and no 408 runs meanwhile."""
        limits = H1Limits(body_timeout=10)
        c = Connected(limits, resource=Streaming(wait=True))
        c.send(_post(4 * HIGH_WATER) + b"x" * (HIGH_WATER - 1))
        self.assertEqual(c.transport.producerState, "producing")
        c.send(b"x")
        self.assertEqual(c.transport.producerState, "paused")
        c.clock.advance(60)
        self.assertEqual(c.take(), b"")  # no 408: the wait is ours
        [source] = _res(c).sources
        [consumer] = _res(c).consumers
        source.start(consumer)
        self.assertEqual(c.transport.producerState, "producing")
        self.assertEqual(sum(map(len, consumer.pieces)), HIGH_WATER)
        c.clock.advance(11)
        [(status, _, _)] = c.responses()
        self.assertEqual(status, 408)  # the client's own wait counts again
        self.assertEqual(consumer.error.status, 408)  # type: ignore[union-attr]

    def test_paused_consumer(self) -> None:
        """A consumer that pauses holds the body in the source; resuming delivers it in order."""
        c = Connected(resource=Streaming())
        c.send(_post(2 * HIGH_WATER))
        [source] = _res(c).sources
        [consumer] = _res(c).consumers
        source.pauseProducing()
        c.send(b"a" * HIGH_WATER)
        self.assertEqual(c.transport.producerState, "paused")
        source.resumeProducing()
        self.assertEqual(c.transport.producerState, "producing")
        c.send(b"b" * HIGH_WATER)
        self.assertEqual(b"".join(consumer.pieces), b"a" * HIGH_WATER + b"b" * HIGH_WATER)
        self.assertTrue(consumer.finished)

    def test_continue_when_the_consumer_starts(self) -> None:
        """``100 Continue`` goes out when the body is wanted, not at render."""
        c = Connected(resource=Streaming(wait=True))
        c.send(_post(3, b"Expect: 100-continue\r\n"))
        self.assertEqual(c.take(), b"")
        _res(c).sources[0].start(_res(c).consumers[0])
        self.assertEqual(c.take(), b"HTTP/1.1 100 Continue\r\n\r\n")
        c.send(b"abc")
        self.assertEqual(c.responses()[0][2], b"got 3")

    def test_no_body_timeout_before_the_continue(self) -> None:
        """
        A client waiting for its 100 gets no 408 while the body is not
        wanted, even after the channel paused and resumed reading (its
        answers backed up); the body timeout starts with the 100.
        """
        c = Connected(H1Limits(body_timeout=10), resource=Streaming(wait=True))
        c.send(_post(3, b"Expect: 100-continue\r\n"))
        c.channel.pauseProducing()
        c.channel.resumeProducing()
        c.clock.advance(30)
        self.assertEqual(c.take(), b"")
        _res(c).sources[0].start(_res(c).consumers[0])
        self.assertEqual(c.take(), b"HTTP/1.1 100 Continue\r\n\r\n")
        c.clock.advance(11)
        self.assertEqual(c.responses()[0][0], 408)

    def test_no_continue_for_an_early_answer(self) -> None:
        """A request answered without its body gets no 100, and the connection closes after the answer."""
        c = Connected(resource=Streaming(wait=True))
        c.send(_post(3, b"Expect: 100-continue\r\n"))
        request = _res(c).consumers[0].request
        request.setHeader(b"content-length", b"2")
        request.write(b"no")
        request.finish()
        [(status, headers, body)] = c.responses()
        self.assertEqual((status, body, headers[b"connection"]), (200, b"no", b"close"))

    def test_over_the_limit_mid_stream(self) -> None:
        """A chunked body growing past max_body fails its consumer with 413; the rest is not delivered."""
        c = Connected(H1Limits(max_body=10), resource=Streaming())
        c.send(CHUNKED + b"8\r\n12345678\r\n")
        c.send(b"8\r\n12345678\r\n")
        [consumer] = _res(c).consumers
        self.assertEqual((consumer.error.status, b"".join(consumer.pieces)), (413, b"12345678"))  # type: ignore[union-attr]

    def test_bad_chunk_mid_stream(self) -> None:
        """Broken chunk framing fails the consumer with 400."""
        c = Connected(resource=Streaming())
        c.send(CHUNKED + b"3\r\nabc\r\n")
        c.send(b"zz\r\n")
        self.assertEqual(_res(c).consumers[0].error.status, 400)  # type: ignore[union-attr]
        [(status, headers, _)] = c.responses()
        self.assertEqual((status, headers[b"connection"]), (400, b"close"))

    def test_client_gone(self) -> None:
        """A client that leaves mid-body fails the consumer (499)."""
        c = Connected(resource=Streaming())
        c.send(_post(10) + b"abc")
        c.lose()
        self.assertEqual(_res(c).consumers[0].error.status, 499)  # type: ignore[union-attr]

    def test_other_resources_still_get_the_whole_body(self) -> None:
        """A resource that does not declare streams_request_body is rendered once the body is complete."""
        c = Connected()
        c.send(_post(6) + b"abc")
        self.assertEqual(c.resource.seen, [])
        c.send(b"def")
        self.assertEqual(c.responses()[0][2], b"POST /up abcdef")


class Collect:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.finished = False

    def body_received(self, data: bytes) -> None:
        self.pieces.append(data)

    def body_finished(self) -> None:
        self.finished = True

    def body_failed(self, error: BodyError) -> None:
        raise AssertionError(error)


class StreamedBodyTests(SynchronousTestCase):
    def test_rewind_within_the_replay_buffer(self) -> None:
        """What was delivered is delivered again after a rewind, then the rest."""
        source = StreamedBody(10**9, None)
        first = Collect()
        source.start(first)
        source.write(b"a" * 1000)
        source.write(b"b" * 1000)
        self.assertTrue(source.rewind())
        again = Collect()
        source.start(again)
        source.write(b"c")
        source.finish()
        self.assertEqual(b"".join(again.pieces), b"a" * 1000 + b"b" * 1000 + b"c")
        self.assertTrue(again.finished)

    def test_no_rewind_past_the_replay_buffer(self) -> None:
        source = StreamedBody(10**9, None)
        source.start(Collect())
        source.write(b"x" * REPLAY_LIMIT)
        source.write(b"y")
        self.assertFalse(source.rewind())

    def test_discard(self) -> None:
        """After discard, pieces are dropped and never hold the connection."""
        source = StreamedBody(10**9, None)
        source.discard()
        source.write(b"x" * (4 * HIGH_WATER))
        self.assertEqual(source._buffered, 0)
