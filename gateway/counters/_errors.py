"""
What can go wrong talking to Redis, as exceptions the fallback can tell
apart: Redis *answered* with an error (:class:`RedisError`), or Redis could
not be asked (:class:`RedisUnavailable`: not connected, connection lost,
no answer in time).
"""

from __future__ import annotations

__all__ = ["RedisAuthError", "RedisError", "RedisNoScript", "RedisTimeout", "RedisUnavailable"]


class RedisError(Exception):
    """Redis answered with an error reply (the message is Redis's own)."""


class RedisNoScript(RedisError):
    """``NOSCRIPT``: the script is not in Redis's cache (restart, flush): send it with EVAL."""


class RedisAuthError(RedisError):
    """Redis refused the password (``WRONGPASS``) or wants one (``NOAUTH``)."""


class RedisUnavailable(Exception):
    """Redis could not be asked, or did not answer: the command's effect is unknown."""


class RedisTimeout(RedisUnavailable):
    """Redis did not answer within the command (or connect) timeout."""


def error_from_reply(message: str) -> RedisError:
    """The exception for an error reply, by its code (the first word)."""
    code = message.split(" ", 1)[0]
    if code == "NOSCRIPT":
        return RedisNoScript(message)
    if code in ("WRONGPASS", "NOAUTH") or "invalid password" in message:
        return RedisAuthError(message)
    return RedisError(message)
