"""
RESP2, the Redis wire format: encoding commands and parsing replies
incrementally.

Pure (no I/O): the connection feeds it whatever bytes arrived, across any
chunk boundary, and gets back the complete replies in order. Error replies
come back as :class:`ReplyError` values, not raised, because one failed
command in a pipeline must not disturb the replies after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ReplyError", "ReplyParser", "encode"]

Arg = bytes | str | int


class ReplyError:
    """An error reply (``-ERR ...``) as a value."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplyError) and other.message == self.message

    def __repr__(self) -> str:
        return f"ReplyError({self.message!r})"


#: A parsed reply: bulk/simple strings are bytes, arrays are lists.
Reply = bytes | int | list[Any] | None | ReplyError


def encode(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Incomplete(Exception):
    pass


class ReplyParser:
    """
    Feed bytes, get complete replies. A reply split across chunks waits in
    the buffer (parsing restarts from its first byte: replies here are small).
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Reply]:
        buffer = self._buffer + data if self._buffer else data
        replies: list[Reply] = []
        pos = 0
        end = len(buffer)
        try:
            while pos < end:
                reply, pos = self._parse(buffer, pos)
                replies.append(reply)
        except _Incomplete:
            pass
        self._buffer = buffer[pos:]
        return replies

    def _parse(self, buf: bytes, pos: int) -> tuple[Reply, int]:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            raise _Incomplete()
        kind = buf[pos]
        line = buf[pos + 1 : eol]
        pos = eol + 2
        if kind == 58:  # ':'
            return int(line), pos
        if kind == 36:  # '$'
            n = int(line)
            if n < 0:
                return None, pos
            if len(buf) < pos + n + 2:
                raise _Incomplete()
            return buf[pos : pos + n], pos + n + 2
        if kind == 42:  # '*'
            n = int(line)
            if n < 0:
                return None, pos
            items: list[Reply] = []
            for _ in range(n):
                item, pos = self._parse(buf, pos)
                items.append(item)
            return items, pos
        if kind == 43:  # '+'
            return line, pos
        if kind == 45:  # '-'
            return ReplyError(line.decode("utf-8", "replace")), pos
        raise ValueError(f"not RESP2: {buf[pos - len(line) - 3 : pos]!r}")
