"""
A buffered, non-blocking line writer for the access log on stdout.

Why: through twisted.logger each access line built an event dict, ran the
observers, formatted a timestamp and made one blocking ``write`` on
stdout: about 85 µs per request, as much as proxying it. Here a line is
appended to an in-memory batch; the batch is written once per reactor
iteration (at its end, through :func:`gateway.dispatch.after_io`, queued
when the batch goes from empty to non-empty; ``callLater(0)`` on a reactor
without it) with as few ``write`` calls as possible, and the reactor thread
never blocks on stdout:

* a full pipe (``EAGAIN``) keeps the rest and waits for the fd to become
  writable (``reactor.addWriter``; a short timer where the fd cannot be
  polled), while new lines keep queueing;
* the pending bytes are bounded (``buffer``): beyond, lines are dropped,
  counted (``on_drop``, the ``apimgw_access_log_dropped_total`` metric) and
  one warning is logged per episode (and one line when it ends). The
  warning goes through twisted.logger, whose stdout observer writes with a
  blocking ``write``: it is logged when stdout has room again (a
  zero-timeout ``select`` says so), never while the pipe is full;
* :meth:`LogWriter.flush_now` writes everything, blocking at most
  ``timeout`` seconds: :class:`LogWriterService` calls it when the gateway
  stops (after the traffic listeners drained) and at the reactor's "after
  shutdown", so a SIGTERM loses no line.

stdout is shared with twisted.logger's own observer, which writes to the
same file with blocking semantics; ``O_NONBLOCK`` belongs to the open file
description, which a ``dup`` shares, so setting it on fd 1 (or a dup of it)
would make twisted.logger's writes fail with ``BlockingIOError`` when the
pipe is full. :func:`open_sink` therefore never changes fd 1's flags: a
pipe, FIFO or terminal is opened again through ``/proc/self/fd/1`` (a new
open file description on the same pipe) and only that one is non-blocking;
a socket is written with ``send(MSG_DONTWAIT)``; a regular file (or
``/dev/null``) never blocks, so fd 1 itself is written. On a pipe every
``write`` is at most ``PIPE_BUF`` bytes of whole lines, which POSIX makes
atomic: a line is never split, and so never interleaved with a line of
twisted.logger's. That holds only for lines of at most ``PIPE_BUF`` bytes,
so :meth:`LogWriter.write` cuts a longer line to :data:`MAX_LINE` bytes,
ending ``...[truncated N bytes]`` (whatever the sink, so the same request
logs the same line everywhere); :mod:`._accesslog` shortens the request
target first, so the fields after it and a JSON line's syntax survive.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IWriteDescriptor
from twisted.logger import Logger, formatTime
from zope.interface import implementer  # type: ignore[import-untyped]

from gateway.dispatch import after_io

#: The default bound on the bytes waiting to be written (the future
#: setting ``telemetry.logs.access.buffer``): at ~300 bytes a line, about
#: 14,000 lines, over a second of a busy gateway's log.
DEFAULT_BUFFER = 4 * 1024 * 1024

#: How long the final flush may block on a stdout nobody reads.
FLUSH_TIMEOUT = 5.0

#: The longest line written (its ``\n`` included): ``PIPE_BUF``, the most
#: one ``write`` on a pipe keeps whole (4096 on Linux; POSIX: at least 512).
MAX_LINE: int = select.PIPE_BUF

#: The retry delay when the fd cannot be watched for writability.
_RETRY = 0.01

_log = Logger(namespace="apimgw.access.writer")


class Sink(Protocol):
    """Where the bytes go: a non-blocking ``write`` and a pollable fd."""

    #: The largest write that keeps whole lines whole (``None``: any); a
    #: pipe's is ``PIPE_BUF`` (:data:`MAX_LINE`, the longest line too).
    max_write: int | None

    def write(self, data: bytes | memoryview) -> int:
        """Write what fits; raise :class:`BlockingIOError` when nothing does."""

    def fileno(self) -> int: ...


class FdSink:
    """
    An fd written with ``os.write``: non-blocking (its own open file
    description), or one that never blocks (a regular file).
    """

    def __init__(self, fd: int, *, max_write: int | None = None) -> None:
        self.fd = fd
        self.max_write = max_write

    def write(self, data: bytes | memoryview) -> int:
        return os.write(self.fd, data)

    def fileno(self) -> int:
        return self.fd


class SocketSink:
    """A socket on stdout (e.g. journald's): ``send(MSG_DONTWAIT)``, flags untouched."""

    max_write: int | None = None

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes | memoryview) -> int:
        return self.sock.send(data, socket.MSG_DONTWAIT)

    def fileno(self) -> int:
        return self.sock.fileno()


def open_sink(fd: int = 1) -> Sink | None:
    """
    A sink on ``fd`` that never blocks and leaves ``fd``'s own flags as
    they are (see the module docstring); ``None`` if there is none (the
    caller keeps logging through twisted.logger).
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return FdSink(fd)
    if stat.S_ISSOCK(mode):
        try:
            return SocketSink(socket.socket(fileno=os.dup(fd)))
        except OSError:
            return None
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if stat.S_ISCHR(mode) and os.path.samefile(f"/proc/self/fd/{own}", os.devnull):
        return FdSink(own)
    return FdSink(own, max_write=MAX_LINE)


def truncate_line(line: bytes, limit: int = MAX_LINE) -> bytes:
    """
    ``line`` (ending ``\\n``) cut to at most ``limit`` bytes, the cut
    marked ``...[truncated N bytes]`` (``N``: the bytes left out), at a UTF-8
    character boundary. A line that fits is returned as is.
    """
    if len(line) <= limit:
        return line
    body = line[:-1] if line.endswith(b"\n") else line
    # The marker's length depends on N; N is at most len(body).
    room = limit - 1 - len(b"...[truncated %d bytes]" % len(body))
    keep = max(0, room)
    while keep and (body[keep] & 0xC0) == 0x80:
        keep -= 1  # not inside a multi-byte character
    return body[:keep] + b"...[truncated %d bytes]\n" % (len(body) - keep)


def _writable(sink: Sink) -> bool:
    """Whether ``sink`` has room now (a zero-timeout ``select``)."""
    try:
        return bool(select.select([], [sink.fileno()], [], 0)[1])
    except (OSError, ValueError):
        return False


@implementer(IWriteDescriptor)
class _Writable:
    """What the reactor watches while the sink is full."""

    def __init__(self, writer: LogWriter) -> None:
        self._writer = writer

    def fileno(self) -> int:
        return self._writer.sink.fileno()

    def doWrite(self) -> None:
        self._writer._drain()

    def connectionLost(self, reason: Any) -> None:
        # A hang-up (the reader went away), or the reactor letting go of
        # every descriptor at shutdown: the same reason either way, so
        # nothing is discarded here; the next write tells (EPIPE drops).
        self._writer._lost()

    def logPrefix(self) -> str:
        return "apimgw.access.writer"


class LogWriter:
    """
    Batches whole lines and writes them once per reactor iteration without
    ever blocking the reactor (see the module docstring).

    :param reactor: ``callLater``, and ``addWriter``/``removeWriter`` if it
        has them (a test clock has not: a timer then retries).
    :param sink: where the bytes go (:func:`open_sink`).
    :param buffer: the most bytes pending; lines beyond are dropped.
    :param on_drop: called with the number of lines dropped.
    """

    def __init__(
        self,
        reactor: Any,
        sink: Sink,
        *,
        buffer: int = DEFAULT_BUFFER,
        on_drop: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.reactor = reactor
        self.sink = sink
        self.buffer = buffer
        self._on_drop = on_drop
        self._lines: list[bytes] = []
        #: Packed chunks not yet (fully) written, the first maybe partly.
        self._chunks: deque[bytes | memoryview] = deque()
        #: Bytes in ``_lines`` and ``_chunks``.
        self.pending = 0
        #: Lines dropped in all, and in the current episode.
        self.dropped = 0
        self._episode = 0
        self._warn_pending = False
        self._call: Any = None
        #: a flush is queued for the end of the reactor iteration
        #: (:func:`gateway.dispatch.after_io`)
        self._after_io = False
        self._watching: _Writable | None = None
        self._stamp_second = -1
        self._stamp = ""
        self._prefix = ("", "")

    def write(self, line: bytes) -> None:
        """
        Queue one whole line (with its ``\\n``); dropped past the bound,
        cut to :data:`MAX_LINE` bytes when longer (:func:`truncate_line`).
        """
        size = len(line)
        if size > MAX_LINE:
            line = truncate_line(line)
            size = len(line)
        if self.pending + size > self.buffer:
            self._drop(1)
            return
        self._lines.append(line)
        self.pending += size
        if self._call is None and self._watching is None and not self._after_io:
            if after_io(self.reactor, self._flush_after_io):
                self._after_io = True
            else:
                self._call = self.reactor.callLater(0, self._flush)

    def prefix(self, system: str) -> str:
        """
        twisted.logger's classic prefix, ``"<time> [<system>] "``, with the
        same time format as twistd's text observer; formatted once per
        second (the format has no finer field).
        """
        now = time.time()
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = formatTime(now, "%Y-%m-%dT%H:%M:%S%z")
            self._prefix = ("", "")
        cached_system, text = self._prefix
        if cached_system != system or not text:
            text = f"{self._stamp} [{system}] "
            self._prefix = (system, text)
        return text

    def _flush(self) -> None:
        self._call = None
        if self._watching is None:
            self._drain()

    def _flush_after_io(self) -> None:
        self._after_io = False
        if self._call is None and self._watching is None:
            self._drain()

    def _pack(self) -> None:
        """
        Move the queued lines into chunks of at most ``max_write`` bytes. A
        line is never longer (:meth:`write` cut it to :data:`MAX_LINE`), so
        no chunk, and no ``write`` of one, splits a line.
        """
        lines, self._lines = self._lines, []
        limit = self.sink.max_write
        if limit is None:
            self._chunks.append(b"".join(lines))
            return
        start = size = 0
        for i, line in enumerate(lines):
            if size and size + len(line) > limit:
                self._chunks.append(b"".join(lines[start:i]))
                start, size = i, 0
            size += len(line)
        self._chunks.append(b"".join(lines[start:]))

    def _drain(self) -> bool:
        """Write what the sink takes now; returns whether all of it went."""
        if self._warn_pending and _writable(self.sink):
            self._warn()
        if self._lines:
            self._pack()
        chunks = self._chunks
        while chunks:
            chunk = chunks[0]
            try:
                n = self.sink.write(chunk)
            except BlockingIOError:
                self._wait()
                return False
            except OSError as e:
                self._discard(e)
                return True
            self.pending -= n
            if n < len(chunk):
                chunks[0] = memoryview(chunk)[n:]
            else:
                chunks.popleft()
        self._unwatch()
        if self._episode:
            if self._warn_pending:  # stdout took everything: it has room
                self._warn()
            _log.info(
                "The access log is written again; {count} lines were dropped",
                count=self._episode,
            )
            self._episode = 0
        return True

    def _wait(self) -> None:
        """Resume when the sink is writable: watched by the reactor, or a timer."""
        if self._watching is not None:
            return
        add = getattr(self.reactor, "addWriter", None)
        if add is not None:
            self._watching = _Writable(self)
            try:
                add(self._watching)
                return
            except OSError:  # e.g. an fd epoll cannot watch
                self._watching = None
        if self._call is None:
            self._call = self.reactor.callLater(_RETRY, self._flush)

    def _unwatch(self) -> None:
        if self._watching is not None:
            self.reactor.removeWriter(self._watching)
            self._watching = None

    def _lost(self) -> None:
        self._watching = None
        if self._call is None:
            self._call = self.reactor.callLater(_RETRY, self._flush)

    def _discard(self, error: OSError | None = None) -> None:
        """Nothing pending can be delivered: count it all as dropped."""
        lines = len(self._lines) + sum(bytes(c).count(b"\n") for c in self._chunks)
        self._lines, self.pending = [], 0
        self._chunks.clear()
        self._unwatch()
        if lines:
            self._drop(lines, error)

    def _drop(self, lines: int, error: OSError | None = None) -> None:
        if not self._episode:
            if error is not None:
                # e.g. a broken pipe: twisted.logger's write fails at once too
                _log.warn("The access log cannot be written ({error}): lines dropped", error=error)
            else:
                # Logged once stdout can take the line (see _warn), not now:
                # twisted.logger writes stdout with a blocking write, and
                # stdout is full.
                self._warn_pending = True
        self._episode += lines
        self.dropped += lines
        self._on_drop(lines)

    def _warn(self) -> None:
        """The episode's one warning, when stdout has room for it."""
        self._warn_pending = False
        _log.warn(
            "The access log's output is not keeping up ({pending} bytes pending, bound "
            "{buffer}): {count} lines dropped so far (apimgw_access_log_dropped_total)",
            pending=self.pending,
            buffer=self.buffer,
            count=self._episode,
        )

    def flush_now(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """
        Write everything pending, waiting (at most ``timeout`` seconds in
        all) for a full sink to take it: at shutdown, when blocking is what
        we want. What is still pending then is dropped and counted.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        deadline = time.monotonic() + timeout
        while not self._drain():
            self._unwatch()
            left = deadline - time.monotonic()
            if left <= 0:
                self._discard()
                return
            select.select([], [self.sink.fileno()], [], left)
        self._unwatch()


class LogWriterService(Service):
    """
    Flushes a :class:`LogWriter` when the gateway stops. Add it before the
    traffic listeners: the gateway stops its children in reverse order, so
    the lines of the drained requests are written. The reactor's "after
    shutdown" flush is a backstop for lines logged later.
    """

    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer
        self._trigger: Any = None

    def startService(self) -> None:
        super().startService()
        add = getattr(self.writer.reactor, "addSystemEventTrigger", None)
        if add is not None and self._trigger is None:
            self._trigger = add("after", "shutdown", self.writer.flush_now)

    def stopService(self) -> None:
        super().stopService()
        self.writer.flush_now()


def twistd_logs_to_stdout(twistd_options: Any) -> bool:
    """
    Whether twistd sends its log to stdout: ``-n`` without ``--logfile``
    (or with ``--logfile -``), no ``--syslog``, no ``--logger``; the rule
    of twistd's own ``UnixAppLogger``. ``None`` (not under twistd): no.
    """
    if twistd_options is None:
        return False
    try:
        if twistd_options.get("syslog") or twistd_options.get("logger"):
            return False
        logfile = twistd_options.get("logfile")
        return bool(logfile == "-" or (twistd_options.get("nodaemon") and not logfile))
    except AttributeError:
        return False


def stdout_access_writer(
    reactor: Any,
    twistd_options: Any,
    *,
    buffer: int = DEFAULT_BUFFER,
    on_drop: Callable[[int], None] = lambda n: None,
    fd: int = 1,
) -> LogWriter | None:
    """
    The access log's writer on stdout when twistd logs there (``None``
    otherwise, and when stdout offers no non-blocking sink: the access log
    then stays on twisted.logger, e.g. into twistd's rotated log file).

    :param twistd_options: twistd's options (the plugin options'
        ``parent``), or ``None``.
    :param fd: stdout's fd (tests give a pipe's).
    """
    if not twistd_logs_to_stdout(twistd_options):
        return None
    sink = open_sink(fd)
    if sink is None:
        _log.info("stdout cannot be written without blocking: the access log uses twisted.logger")
        return None
    return LogWriter(reactor, sink, buffer=buffer, on_drop=on_drop)
