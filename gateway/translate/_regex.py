"""
Regular expressions from configuration, compiled with RE2 (google-re2):
matching takes time linear in the input, whatever the pattern. Python's
``re`` backtracks, so a pattern such as ``/(a+)+b`` against a long path
would hold the reactor thread for seconds per request; the Gateway API
leaves the dialect to the implementation (Envoy-based ones use RE2 too).
RE2 refuses backreferences and lookarounds.
"""

from __future__ import annotations

from typing import Protocol

import re2  # type: ignore[import-untyped]  # no stubs published

__all__ = ["LinearPattern", "RegexError", "compile_linear"]

_OPTIONS = re2.Options()
# An invalid pattern is our caller's error to report, not a line on stderr.
_OPTIONS.log_errors = False


class LinearPattern(Protocol):
    """What routing uses of a compiled pattern."""

    @property
    def pattern(self) -> str: ...

    def fullmatch(self, text: str) -> object | None: ...


class RegexError(ValueError):
    """A pattern RE2 does not accept; the message says why."""


def compile_linear(pattern: str) -> LinearPattern:
    """
    :raises RegexError: not RE2 syntax (backreferences, lookarounds, an
        unbalanced group, ...).
    """
    try:
        compiled: LinearPattern = re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        detail = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise RegexError(f"{detail} (RE2 syntax)") from None
    return compiled
