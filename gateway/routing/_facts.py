"""
What routing may ask about a request beyond its host, path and method.

Only Gateway API routes (entries with variants) match on headers and query
parameters, so routing asks through this small protocol, lazily: the proxy
hands an adapter that parses the query string only when a variant asks,
and the plain path never touches it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["RequestFacts"]


class RequestFacts(Protocol):
    """The request's headers and query parameters, as routing reads them."""

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case), decoded latin-1; ``None`` when absent."""

    def query(self, name: str) -> str | None:
        """The first value of query parameter ``name``, as sent (no percent-decoding); ``None`` when absent."""
