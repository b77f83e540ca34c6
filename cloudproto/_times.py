"""
The time format of the wire: modification times (``modified``), heartbeat
and instance times.

RFC 3339 in UTC with microseconds, ``2025-01-02T03:04:05.678901Z``: it
sorts as text, survives a database round trip unchanged, and means the
same instant to every gateway, where it decides "last one wins" conflicts.
A reader accepts any RFC 3339 date-time with an explicit offset (``Z`` or
``±hh:mm``); a time without an offset, or a bare date, is refused: on the
wire it would be read in whatever zone the reader assumed.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

__all__ = ["format_time", "parse_time"]

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def format_time(seconds: float) -> str:
    """``seconds`` since the epoch as ``2025-01-02T03:04:05.678901Z``."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """
    A wire time as seconds since the epoch.

    :raises ValueError: not an RFC 3339 date-time with an offset.
    """
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    value = text.upper()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value).timestamp()
