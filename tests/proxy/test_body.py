"""Tests for :class:`gateway.proxy._body.BoundedBody`, the request-body spool."""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase

from gateway.proxy import _body
from gateway.proxy._body import BoundedBody


class BoundedBodyTests(SynchronousTestCase):
    def test_small_body_kept_in_memory(self) -> None:
        """A body under the threshold is stored in memory and read back whole from the start."""
        body = BoundedBody(100)
        body.write(b"abc")
        body.write(b"def")
        self.assertEqual((body.size, body.exceeded), (6, False))
        self.assertIsInstance(body.file, io.BytesIO)
        self.assertEqual(body.file.read(), b"abcdef")

    def test_declared_length_over_limit(self) -> None:
        """A Content-Length above the limit marks the body exceeded before any byte arrives."""
        body = BoundedBody(10, declared_length=11)
        body.write(b"x" * 5)
        self.assertTrue(body.exceeded)
        self.assertEqual(body.size, 0)

    def test_chunked_body_over_limit_stops_storing(self) -> None:
        """A body without a declared length stops being stored once it passes the limit."""
        body = BoundedBody(10)
        body.write(b"x" * 8)
        body.write(b"x" * 8)
        body.write(b"x" * 8)
        self.assertTrue(body.exceeded)
        self.assertEqual(body.file.read(), b"")

    def test_large_body_spills_to_a_temporary_file(self) -> None:
        """Above the memory threshold the body moves to a temporary file, content intact."""
        self.patch(_body, "MEMORY_THRESHOLD", 16)
        body = BoundedBody(1000)
        body.write(b"a" * 10)
        body.write(b"b" * 10)
        self.assertNotIsInstance(body.file, io.BytesIO)
        self.assertEqual(body.file.read(), b"a" * 10 + b"b" * 10)
        body.close()

    def test_no_body_shares_one_empty_file(self) -> None:
        """A request without a body allocates no buffer, and closing it is harmless."""
        a, b = BoundedBody(10), BoundedBody(10)
        self.assertIs(a.file, b.file)
        a.close()
        self.assertEqual(b.file.read(), b"")
