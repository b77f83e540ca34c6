"""
Tests for the buffered, non-blocking access-log writer
(:mod:`gateway.observability._logwriter`) on real pipes, with the real
reactor, and through a started gateway.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import textwrap
import threading
from typing import Any, cast

from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer  # type: ignore[import-untyped]

from gateway.observability import (
    AccessLog,
    GatewayMetrics,
    LogWriter,
    LogWriterService,
    build_access_log,
    open_sink,
)
from gateway.observability._logwriter import (
    MAX_LINE,
    SocketSink,
    truncate_line,
    twistd_logs_to_stdout,
)
from gateway.testing.waiting import wait_for
from tests.integration.harness import GatewayTestCase, request_sync

#: twistd's classic text line: "<time> [apimgw.access#info] <line>".
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"
PREFIX = re.compile(STAMP + r" \[apimgw\.access#info\] ")


def pipe() -> tuple[int, int]:
    """An os.pipe() closed at the end of the test's process use."""
    r, w = os.pipe()
    return r, w


@implementer(IReadDescriptor)
class PipeReader:
    """Reads a pipe's read end on the reactor; ``pause``/``resume`` stop and restart reading."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.data = bytearray()
        self.reading = False

    def resume(self) -> None:
        if not self.reading:
            self.reading = True
            cast(Any, reactor).addReader(self)

    def pause(self) -> None:
        if self.reading:
            self.reading = False
            cast(Any, reactor).removeReader(self)

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        self.data += chunk

    def connectionLost(self, reason: Any) -> None:
        self.reading = False

    def logPrefix(self) -> str:
        return "PipeReader"

    def lines(self) -> list[bytes]:
        return bytes(self.data).splitlines(keepends=True)


def numbered(i: int, width: int = 60) -> bytes:
    """Line ``i``: its number, padding, and a newline (unique, checkable)."""
    return f"line {i:07d} ".encode() + b"x" * width + b"\n"


class PipeTestCase(TestCase):
    """A real pipe whose read end a :class:`PipeReader` reads on the reactor."""

    timeout = 60

    def setUp(self) -> None:
        self.r, self.w = pipe()
        self.reader = PipeReader(self.r)
        sink = open_sink(self.w)
        assert sink is not None
        self.sink = sink
        self.addCleanup(self._close)

    def _close(self) -> None:
        self.reader.pause()
        for fd in (self.r, self.w, self.sink.fileno()):
            try:
                os.close(fd)
            except OSError:
                pass

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> Deferred[Any]:
        return wait_for(predicate, timeout, f"condition {predicate!r}", interval=0.01)


class OrderTests(PipeTestCase):
    @inlineCallbacks
    def test_lines_in_order_and_whole_across_iterations(self) -> Any:
        """
        20,000 lines written over 200 reactor iterations (far more than the
        pipe holds) come out complete, in order, none split or repeated.
        """
        writer = LogWriter(reactor, self.sink)
        self.reader.resume()
        expected = []
        for batch in range(200):
            for i in range(batch * 100, (batch + 1) * 100):
                line = numbered(i)
                expected.append(line)
                writer.write(line)
            yield deferLater(reactor, 0, lambda: None)
        yield self.wait_for(lambda: len(self.reader.data) == sum(map(len, expected)))
        self.assertEqual(self.reader.lines(), expected)
        self.assertEqual((writer.pending, writer.dropped), (0, 0))

    def test_the_shared_fd_stays_blocking(self) -> None:
        """
        The sink of a pipe is its own open file description: fd ``w`` (what
        twisted.logger's observer writes to) keeps blocking semantics, and
        the sink never blocks.
        """
        self.assertNotEqual(self.sink.fileno(), self.w)
        self.assertTrue(os.get_blocking(self.w))
        self.assertFalse(os.get_blocking(self.sink.fileno()))
        self.assertEqual(self.sink.max_write, select.PIPE_BUF)


class BlockedPipeTests(PipeTestCase):
    @inlineCallbacks
    def test_full_pipe_never_blocks_the_reactor(self) -> Any:
        """
        With the reader paused, about 580 KB of lines (nine times what the
        pipe holds) are accepted without blocking; the reactor keeps
        running timers while they wait; once the reader resumes every line
        comes out, whole and in order.
        """
        writer = LogWriter(reactor, self.sink)
        expected = [numbered(i) for i in range(8000)]
        for n, line in enumerate(expected):
            writer.write(line)
            if n % 1000 == 999:
                yield deferLater(reactor, 0, lambda: None)
        # The pipe is full and lines wait in memory: the reactor still runs.
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertGreater(writer.pending, 0)
        self.assertLess(len(self.reader.data), sum(map(len, expected)))
        self.assertIsNotNone(writer._watching)  # waiting on writability, not polling
        self.reader.resume()
        yield self.wait_for(lambda: writer.pending == 0)
        yield self.wait_for(lambda: len(self.reader.data) == sum(map(len, expected)))
        self.assertEqual(self.reader.lines(), expected)
        self.assertEqual(writer.dropped, 0)
        self.assertIsNone(writer._watching)


class BoundTests(PipeTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.warnings: list[dict[str, Any]] = []
        self.infos: list[dict[str, Any]] = []
        self.order: list[Any] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") != "apimgw.access.writer":
                return
            self.order.append(event["log_level"])
            if event["log_level"] == LogLevel.warn:
                self.warnings.append(event)
            elif event["log_level"] == LogLevel.info:
                self.infos.append(event)

        observer = cast(Any, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.metrics = GatewayMetrics(CollectorRegistry())

    def dropped_metric(self) -> float | None:
        return self.metrics.registry.get_sample_value("apimgw_access_log_dropped_total")

    @inlineCallbacks
    def test_bound_drops_counts_and_warns_once(self) -> Any:
        """
        With the pipe full and ``buffer`` bytes pending, further lines are
        dropped and counted in ``apimgw_access_log_dropped_total``; the lines
        kept come out whole and in order when the reader resumes; the
        episode's one warning is logged once the pipe has room (not while it
        is full), then its end with the count.
        """
        line_size = len(numbered(0))
        writer = LogWriter(
            reactor, self.sink, buffer=100 * line_size, on_drop=self.metrics.access_log_dropped.inc
        )
        # Fill the pipe (the reader is paused) until lines wait in memory.
        sent = []
        i = 0
        while writer._watching is None:
            for _ in range(50):
                writer.write(numbered(i))
                sent.append(numbered(i))
                i += 1
            yield deferLater(reactor, 0, lambda: None)
        # Now fill the bound, then 300 more lines that cannot fit.
        while writer.pending + line_size <= writer.buffer:
            writer.write(numbered(i))
            sent.append(numbered(i))
            i += 1
        for j in range(i, i + 300):
            writer.write(numbered(j))
        self.assertEqual(writer.dropped, 300)
        self.assertEqual(self.dropped_metric(), 300.0)
        # The warning waits until stdout has room: twisted.logger's stdout
        # write is blocking, and the pipe is full.
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((self.warnings, self.infos), ([], []))
        self.reader.resume()
        yield self.wait_for(lambda: len(self.reader.data) == sum(map(len, sent)))
        self.assertEqual(self.reader.lines(), sent)
        (warning,) = self.warnings
        self.assertEqual(warning["count"], 300)
        (end,) = self.infos
        self.assertEqual(end["count"], 300)
        self.assertEqual(self.order, [LogLevel.warn, LogLevel.info])
        # A new line after the episode is written again.
        writer.write(b"after\n")
        yield self.wait_for(lambda: self.reader.data.endswith(b"after\n"))
        self.assertEqual(self.dropped_metric(), 300.0)

    def test_a_closed_reader_drops_and_counts(self) -> None:
        """
        A pipe nobody will ever read (read end closed) drops the pending
        lines with one warning, and counts them; the reactor is not involved.
        """
        writer = LogWriter(reactor, self.sink, on_drop=self.metrics.access_log_dropped.inc)
        os.close(self.r)
        for i in range(10):
            writer.write(numbered(i))
        writer.flush_now(timeout=1)
        self.assertEqual(self.dropped_metric(), 10.0)
        self.assertEqual((writer.pending, len(self.warnings) >= 1), (0, True))


class ShutdownTests(PipeTestCase):
    def test_stop_flushes_what_is_pending(self) -> None:
        """
        Stopping the :class:`LogWriterService` writes the lines queued in
        this iteration before any reactor turn (the ``callLater(0)`` has not
        run): nothing is left in memory.
        """
        writer = LogWriter(reactor, self.sink)
        service = LogWriterService(writer)
        service.startService()
        expected = [numbered(i) for i in range(100)]
        for line in expected:
            writer.write(line)
        service.stopService()
        self.assertEqual(writer.pending, 0)
        data = os.read(self.r, 1 << 20)
        self.assertEqual(data.splitlines(keepends=True), expected)

    def test_stop_waits_for_a_slow_reader(self) -> None:
        """
        With more pending than the pipe holds, the final flush waits (it
        may block: the gateway is stopping) until a slow reader took it all.
        """
        writer = LogWriter(reactor, self.sink)
        expected = [numbered(i) for i in range(5000)]
        for line in expected:
            writer.write(line)
        got = bytearray()

        def read() -> None:
            os.set_blocking(self.r, True)
            while True:
                chunk = os.read(self.r, 4096)
                if not chunk:
                    return
                got.extend(chunk)

        thread = threading.Thread(target=read)
        thread.start()
        writer.flush_now(timeout=30)
        self.assertEqual(writer.pending, 0)
        os.close(self.sink.fileno())
        os.close(self.w)
        thread.join(30)
        self.assertEqual(bytes(got).splitlines(keepends=True), expected)

    def test_stop_gives_up_after_the_timeout(self) -> None:
        """Nobody reading: the final flush gives up after its timeout and counts the loss."""
        counted: list[int] = []
        writer = LogWriter(reactor, self.sink, on_drop=counted.append)
        for i in range(2000):  # 140 KB, more than the pipe holds
            writer.write(numbered(i))
        writer.flush_now(timeout=0.1)
        self.assertEqual(writer.pending, 0)
        self.assertGreater(sum(counted), 0)
        self.assertEqual(sum(counted), writer.dropped)


class SigtermTests(SynchronousTestCase):
    def test_sigterm_loses_no_line(self) -> None:
        """
        A process with the writer on its stdout (a pipe) that queues 50,000
        lines (650 KB), fills the pipe and is sent SIGTERM in the same
        reactor turn writes all of them before it exits: the reactor letting
        go of the watched fd at shutdown discards nothing, and the "after
        shutdown" flush writes the rest.
        """
        script = textwrap.dedent(
            """
            import os, signal
            from twisted.internet import reactor
            from gateway.observability import LogWriter, LogWriterService, open_sink

            writer = LogWriter(reactor, open_sink(1))
            LogWriterService(writer).startService()

            def burst():
                for i in range(50000):
                    writer.write(b"line %07d\\n" % i)
                writer._flush()  # this turn's flush: the pipe is full, the writer waits
                os.kill(os.getpid(), signal.SIGTERM)

            reactor.callWhenRunning(burst)
            reactor.run()
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, timeout=60, check=True
        ).stdout
        self.assertEqual(out.splitlines(), [b"line %07d" % i for i in range(50000)])


class StdoutChoiceTests(SynchronousTestCase):
    def test_when_twistd_logs_to_stdout(self) -> None:
        """twistd's own rule: -n without a log file, or --logfile -; never with syslog or a logger."""
        self.assertTrue(twistd_logs_to_stdout({"nodaemon": True, "logfile": None}))
        self.assertTrue(twistd_logs_to_stdout({"nodaemon": True, "logfile": "-"}))
        self.assertFalse(twistd_logs_to_stdout({"nodaemon": True, "logfile": "/var/log/x"}))
        self.assertFalse(twistd_logs_to_stdout({"nodaemon": False, "logfile": None}))
        self.assertFalse(twistd_logs_to_stdout({"nodaemon": True, "logfile": None, "syslog": True}))
        self.assertFalse(twistd_logs_to_stdout(None))

    def test_regular_file_written_directly(self) -> None:
        """A regular file never blocks: its fd itself is the sink, flags untouched."""
        with open(self.mktemp(), "wb") as f:
            sink = open_sink(f.fileno())
            assert sink is not None
            self.assertEqual((sink.fileno(), sink.max_write), (f.fileno(), None))
            self.assertTrue(os.get_blocking(f.fileno()))


CALL: dict[str, Any] = {
    "client": "10.0.0.1",
    "method": "GET",
    "path": "/echo/x?sig=s3cret&y=1",
    "protocol": "HTTP/1.1",
    "status": 200,
    "bytes": 12,
    "duration": 0.0015,
    "host": "h",
    "route": "api:echo",
    "backend": "http://b:1",
    "request_id": "rid-1",
}


class SocketSinkTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_socket_stdout(self) -> Any:
        """
        stdout a socket (journald's stream, a socketpair here): written with
        ``send(MSG_DONTWAIT)``, the socket itself left blocking; with the
        reader paused past the socket's buffer the lines wait, then all
        come out in order.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        sink = open_sink(ours.fileno())
        assert isinstance(sink, SocketSink)
        self.addCleanup(sink.sock.close)
        self.assertTrue(os.get_blocking(ours.fileno()))
        reader = PipeReader(theirs.fileno())
        self.addCleanup(reader.pause)
        writer = LogWriter(reactor, sink)
        expected = [numbered(i) for i in range(20000)]  # 1.5 MB
        for line in expected:
            writer.write(line)
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertGreater(writer.pending, 0)
        self.assertTrue(os.get_blocking(ours.fileno()))
        reader.resume()
        total = sum(map(len, expected))
        yield wait_for(lambda: len(reader.data) == total, 20, "all lines", interval=0.01)
        self.assertEqual(reader.lines(), expected)

    def test_dev_null(self) -> None:
        """/dev/null is written without a PIPE_BUF split (it never blocks)."""
        fd = os.open(os.devnull, os.O_WRONLY)
        self.addCleanup(os.close, fd)
        sink = open_sink(fd)
        assert sink is not None
        self.addCleanup(os.close, sink.fileno())
        self.assertIsNone(sink.max_write)
        self.assertTrue(os.get_blocking(fd))


class AccessLogWriterFormatTests(PipeTestCase):
    """The writer path writes what twistd's text observer wrote for the same call."""

    def emit_both(self, fmt: str) -> tuple[str, str]:
        import io

        from twisted.logger import textFileLogObserver

        out = io.StringIO()
        AccessLog(fmt, observer=cast(Any, textFileLogObserver(out))).emit(**CALL)
        writer = LogWriter(reactor, self.sink)
        AccessLog(fmt, writer=writer).emit(**CALL)
        writer.flush_now()
        return out.getvalue(), os.read(self.r, 65536).decode()

    def assertSameLine(self, old: str, new: str) -> None:
        self.assertRegex(new, PREFIX)
        self.assertTrue(new.endswith("\n") and new.count("\n") == 1)
        # the same but for the time (the two may straddle a second)
        self.assertEqual(old.split(" ", 1)[1], new.split(" ", 1)[1])
        self.assertRegex(old, PREFIX)

    def test_text(self) -> None:
        """Text: the same line, the secret redacted, and no twisted.logger event."""
        old, new = self.emit_both("text")
        self.assertSameLine(old, new)
        self.assertIn("/echo/x?sig=REDACTED&y=1 ", new)

    def test_json(self) -> None:
        """JSON: the same object after the same prefix."""
        old, new = self.emit_both("json")
        self.assertSameLine(old, new)
        self.assertNotIn("s3cret", new)


class GatewayWriterTests(GatewayTestCase):
    """Requests through a started gateway produce their lines on the configured fd."""

    @inlineCallbacks
    def test_lines_on_the_fd(self) -> Any:
        """
        With the access log built by :func:`build_access_log` as under
        ``twistd -n`` (stdout here being a pipe), each request's line
        arrives on the pipe, in order, redacted, and none goes through
        twisted.logger.
        """
        r, w = os.pipe()
        reader = PipeReader(r)
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.addCleanup(reader.pause)
        reader.resume()
        access_log = build_access_log(
            self.gateway,
            reactor,
            "text",
            twistd_options={"nodaemon": True, "logfile": None},
            on_drop=self.gateway.metrics.access_log_dropped.inc,
            fd=w,
        )
        # tap builds the access log before the listeners (see the report);
        # here it is swapped in on the started gateway.
        self.gateway.listeners["http"].resource._observer.access_log = access_log
        ids = [f"wr-{i}" for i in range(30)]
        for rid in ids:
            response = yield deferToThread(
                request_sync,
                self.port,
                "GET",
                "/app/x?code=c0de",
                headers=[("x-request-id", rid)],
            )
            self.assertEqual(response.status, 200)
        yield wait_for(lambda: reader.data.count(b"\n") == len(ids), 10, "lines", interval=0.01)
        lines = reader.lines()
        self.assertEqual([x.split(b"request_id=")[1].split()[0].decode() for x in lines], ids)
        for line in lines:
            self.assertRegex(
                line.decode(),
                PREFIX.pattern + r'127\.0\.0\.1 "GET /app/x\?code=REDACTED HTTP/1\.1" 200 \d+ '
                r"[\d.]+ms host=127\.0\.0\.1:\d+ route=\S+ backend=http://\S+ request_id=wr-\d+ "
                r"api=- operation=- product=- subscription=-\n$",
            )
        self.assertEqual([e for e in self.events if "access_line" in e], [])
        self.assertEqual(
            self.gateway.metrics.registry.get_sample_value("apimgw_access_log_dropped_total"), 0.0
        )


class LongLineTests(PipeTestCase):
    """
    Lines longer than ``PIPE_BUF`` would be split across writes, and so
    could interleave with another writer's output on the pipe: they are cut
    to :data:`MAX_LINE` bytes, visibly, the access log's JSON staying JSON.
    """

    def written(self) -> list[bytes]:
        data = b""
        while True:
            try:
                chunk = os.read(self.r, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return data.splitlines(keepends=True)

    def test_long_line_cut_between_whole_lines(self) -> None:
        """An 8 KiB line comes out as 4096 bytes ending with the marker; its neighbours whole."""
        writer = LogWriter(reactor, self.sink)
        long = b"L" * 8192 + b"\n"
        for line in (numbered(1), long, numbered(2)):
            writer.write(line)
        writer.flush_now()
        os.set_blocking(self.r, False)
        first, cut, second = self.written()
        self.assertEqual((first, second), (numbered(1), numbered(2)))
        self.assertEqual(len(cut), MAX_LINE)
        kept = MAX_LINE - len(b"...[truncated 4126 bytes]\n")
        self.assertEqual(cut, b"L" * kept + b"...[truncated %d bytes]\n" % (8192 - kept))
        self.assertEqual(writer.pending, 0)

    def test_cut_at_a_character_boundary(self) -> None:
        """A cut never splits a UTF-8 character."""
        line = "é".encode() * 5000 + b"\n"
        cut = truncate_line(line)
        self.assertLessEqual(len(cut), MAX_LINE)
        text = cut.decode("utf-8")
        self.assertRegex(text, r"^é+\.\.\.\[truncated \d+ bytes\]\n$")
        kept = len(text.split("...")[0].encode())
        self.assertIn(f"[truncated {10000 - kept} bytes]", text)
        short = numbered(3)
        self.assertIs(truncate_line(short), short)

    def emit(self, fmt: str, path: str) -> bytes:
        writer = LogWriter(reactor, self.sink)
        AccessLog(fmt, writer=writer).emit(**{**CALL, "path": path})
        writer.flush_now()
        os.set_blocking(self.r, False)
        [line] = self.written()
        return line

    def test_text_target_shortened(self) -> None:
        """Text: an 8 KiB target is cut in place; status, request_id and the ids after it stay."""
        line = self.emit("text", "/echo/" + "t" * 8192).decode()
        self.assertLessEqual(len(line.encode()), MAX_LINE)
        self.assertRegex(line, PREFIX)
        self.assertRegex(line, r'"GET /echo/t+\.\.\.\[truncated \d+ bytes\] HTTP/1\.1" 200 12 ')
        self.assertTrue(
            line.endswith(" request_id=rid-1" + " api=- operation=- product=- subscription=-\n")
        )

    def test_json_target_shortened(self) -> None:
        """JSON: an 8 KiB target is cut in the value, the line stays JSON and says truncated."""
        for path in ("/echo/" + "t" * 8192, '/echo/"\\' * 2000, "/echo/\u00e9" * 2000):
            line = self.emit("json", path)
            self.assertLessEqual(len(line), MAX_LINE)
            text = PREFIX.sub("", line.decode(), count=1)
            fields = json.loads(text)
            self.assertIs(fields["truncated"], True)
            kept, marker = fields["path"].split("...[truncated ")
            self.assertTrue(path.startswith(kept) and kept.startswith("/echo/"))
            self.assertEqual(marker, f"{len(path.encode()) - len(kept.encode())} bytes]")
            self.assertEqual((fields["status"], fields["requestId"]), (200, "rid-1"))

    def test_short_json_line_unchanged(self) -> None:
        """A line that fits has no truncated field."""
        fields = json.loads(PREFIX.sub("", self.emit("json", "/echo/x").decode(), count=1))
        self.assertNotIn("truncated", fields)
        self.assertEqual(fields["path"], "/echo/x")
