"""
Times on the wire and in the database: ISO 8601 UTC strings, durations.

Modification times are stored as text with microseconds, in UTC, so they
sort as strings, survive restarts unchanged and mean the same thing to every
gateway (they decide "last one wins" conflicts there).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from cloudproto import format_time

__all__ = ["iso", "parse_datetime", "parse_duration", "parse_expiry"]

_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_SHORT = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[wdhms])$", re.IGNORECASE)
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def iso(seconds: float) -> str:
    """
    ``seconds`` since the epoch as ``2025-01-02T03:04:05.678901Z``: the
    wire's time format (:func:`cloudproto.format_time`), which gateways
    parse with :func:`cloudproto.parse_time`.
    """
    return format_time(seconds)


def parse_datetime(text: str) -> float:
    """
    An ISO 8601 date-time as seconds since the epoch; one without an offset
    is taken as UTC (as the APIM management API does). This reads what an
    operator types (a token's expiry); the wire's stricter format is
    :func:`cloudproto.parse_time`.

    :raises ValueError: not an ISO 8601 date-time.
    """
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def parse_duration(text: str) -> float:
    """
    A duration in seconds: ISO 8601 (``P29D``, ``PT12H``, ``P1DT2H30M``,
    ``P2W``) or the short form of the command line (``30d``, ``12h``,
    ``90m``, ``45s``, ``2w``). Years and months are refused: their length
    depends on the date.

    :raises ValueError: not such a duration, or an empty one (``P``).
    """
    text = text.strip()
    short = _SHORT.match(text)
    if short:
        return float(short["n"]) * _UNITS[short["unit"].lower()]
    match = _DURATION.match(text)
    if match is None or text.upper() in ("P", "PT") or text.upper().endswith("T"):
        raise ValueError(f"not a duration: {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return sum(value * _UNITS[unit] for unit, value in parts.items())


def parse_expiry(text: str, now: float) -> float:
    """
    An expiry given as a duration from ``now`` or as an absolute ISO 8601
    date-time, as seconds since the epoch.

    :raises ValueError: neither form.
    """
    text = text.strip()
    if text[:1] in ("P", "p") or _SHORT.match(text):
        return now + parse_duration(text)
    return parse_datetime(text)
