"""
The watch wire format: one JSON event per line of a chunked response,
parsed incrementally as the bytes arrive, whatever the chunk boundaries;
and the list response an informer starts a watch from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from ._errors import WatchStreamError, api_error

__all__ = ["MAX_EVENT_BYTES", "ObjectList", "WatchEvent", "WatchProtocol", "WatchStreamDecoder"]

JSON = dict[str, Any]

#: The longest watch event line accepted: the largest object etcd stores is
#: 1.5 MiB; JSON escaping and the envelope stay well below this.
MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class WatchEvent:
    """
    One watch event.

    :ivar type: ``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK`` (only
        ``object.metadata.resourceVersion`` is meaningful) or ``ERROR``
        (``object`` is a Status).
    """

    type: str
    object: JSON

    @property
    def resource_version(self) -> str | None:
        return ((self.object.get("metadata") or {}).get("resourceVersion")) or None


@dataclass(frozen=True)
class ObjectList:
    """
    One list response.

    :ivar resource_version: the version the list is consistent at: where a
        watch that follows it starts.
    :ivar continue_token: set when more pages follow (``limit``).
    """

    items: list[JSON]
    resource_version: str
    continue_token: str | None = None
    remaining: int | None = None


class WatchStreamDecoder:
    """
    Splits a watch stream into events, whatever the chunk boundaries.

    The API server writes one JSON object per line, but TCP and chunked
    encoding cut the bytes anywhere: in the middle of a line, of a UTF-8
    sequence, or between ``\\r`` and nothing at all. Bytes are buffered
    until a newline; a JSON string cannot contain a raw newline, so every
    newline ends an event. Work is linear in the stream's length: pieces
    without a newline are kept in a list and joined once.
    """

    def __init__(self, max_line: int = MAX_EVENT_BYTES) -> None:
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._max_line = max_line

    def feed(self, data: bytes) -> list[WatchEvent]:
        """The events completed by ``data``, in order."""
        events = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            piece = data[start:end]
            if self._pending:
                self._pending.append(piece)
                piece = b"".join(self._pending)
                self._pending, self._pending_size = [], 0
            event = self._decode(piece)
            if event is not None:
                events.append(event)
            start = end + 1
        if start < len(data):
            rest = data[start:]
            self._pending_size += len(rest)
            if self._pending_size > self._max_line:
                raise WatchStreamError(f"watch event longer than {self._max_line} bytes")
            self._pending.append(rest)
        return events

    def finish(self) -> list[WatchEvent]:
        """At the end of the stream: an unterminated last line, if any, as an event."""
        pending = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        event = self._decode(pending)
        return [] if event is None else [event]

    @staticmethod
    def _decode(line: bytes) -> WatchEvent | None:
        if not line.strip():
            return None
        try:
            data = json.loads(line)
        except ValueError as e:
            raise WatchStreamError(f"not JSON: {e}") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("type"), str)
            or not isinstance(data.get("object"), dict)
        ):
            raise WatchStreamError("not a watch event")
        return WatchEvent(data["type"], data["object"])


class WatchProtocol(Protocol):
    """Receives a watch response body and hands out events as lines complete."""

    def __init__(self, on_event: Callable[[WatchEvent], None], done: Deferred[None]) -> None:
        self._decoder = WatchStreamDecoder()
        self._on_event = on_event
        self._done = done
        self._failure: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        if self._failure is not None:
            return
        try:
            for event in self._decoder.feed(data):
                self._handle(event)
        except Exception:
            self.abort(Failure())

    def _handle(self, event: WatchEvent) -> None:
        if event.type == "ERROR":
            # Upstream sends one ERROR and closes; the Status says why
            # (410 Expired: relist).
            code = int(event.object.get("code") or 500)
            raise api_error(code, event.object)
        self._on_event(event)

    def abort(self, failure: Failure) -> None:
        """Stop reading and end the watch with ``failure``."""
        if self._failure is None:
            self._failure = failure
        if self.transport is not None:
            self.transport.stopProducing()
        if not self._done.called:
            self._done.errback(self._failure)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._done.called:
            return
        if self._failure is not None:
            self._done.errback(self._failure)
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            try:
                for event in self._decoder.finish():
                    self._handle(event)
            except Exception:
                self._done.errback(Failure())
                return
            self._done.callback(None)
        else:
            self._done.errback(reason)
