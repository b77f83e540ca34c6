"""
The ``Date`` header (RFC 9110 §6.6.1): a server with a clock sends it in
its own answers, and a recipient adds it to a forwarded response that has
none. Formatted once per second, whatever the number of answers.
"""

from __future__ import annotations

from twisted.web.http import datetimeToString

__all__ = ["HTTP_DATE", "HttpDate"]


class HttpDate:
    """The IMF-fixdate of the second last asked for, and its header line."""

    __slots__ = ("line", "second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""
        self.line = b""

    def at(self, seconds: float) -> HttpDate:
        """
        This cache, holding the date of ``seconds`` (since the epoch):
        ``.line`` (``Date: <date>\\r\\n``) or ``.value``. Formatted when
        the second changed.
        """
        second = int(seconds)
        if second != self.second:
            self.value = datetimeToString(second)
            self.line = b"Date: %s\r\n" % self.value
            self.second = second
        return self


#: The process's one cache (the reactor thread is its only user).
HTTP_DATE = HttpDate()
