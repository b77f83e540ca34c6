"""
A bounded request-body spool.

twisted.web reads the whole request body before ``render`` runs. This spool
keeps it in memory up to a threshold, then in an anonymous temporary file,
and stops storing once the configured limit is exceeded (the request is then
answered 413), so neither memory nor disk grows with what a client sends.
"""

from __future__ import annotations

import io
import tempfile
from typing import IO

#: Bodies up to this size stay in memory.
MEMORY_THRESHOLD = 1024 * 1024


class _Empty(io.BytesIO):
    """The shared stand-in for a body nothing was written to (read-only use)."""

    def close(self) -> None:
        """Never closed: shared by every request without a body."""


_EMPTY: IO[bytes] = _Empty()


class BoundedBody:
    """File-like sink for twisted.web's ``request.content``."""

    __slots__ = ("limit", "size", "exceeded", "_file")

    def __init__(self, limit: int, declared_length: int | None = None) -> None:
        self.limit = limit
        self.size = 0
        self.exceeded = declared_length is not None and declared_length > limit
        # Created on the first write: most requests have no body at all.
        self._file: IO[bytes] = _EMPTY

    def write(self, data: bytes) -> None:
        if self.exceeded:
            return
        if self._file is _EMPTY:
            self._file = io.BytesIO()
        self.size += len(data)
        if self.size > self.limit:
            self.exceeded = True
            self._file.close()
            self._file = _EMPTY
            return
        if self.size > MEMORY_THRESHOLD and isinstance(self._file, io.BytesIO):
            spilled = tempfile.TemporaryFile()
            spilled.write(self._file.getvalue())
            self._file = spilled
        self._file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        if self._file is not _EMPTY:
            self._file.close()

    @property
    def file(self) -> IO[bytes]:
        """The stored body, positioned at the start (for sending)."""
        self._file.seek(0)
        return self._file
