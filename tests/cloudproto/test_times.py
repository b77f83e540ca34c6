"""Tests of :mod:`cloudproto`'s wire time format and entity kinds."""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.trial.unittest import TestCase

from cloudproto import ENTITY_LISTS, format_time, list_of, parse_time, secret_fields

WHEN = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc).timestamp()


class TimeTests(TestCase):
    """RFC 3339 UTC with microseconds."""

    def test_format(self) -> None:
        """A time is written in UTC with microseconds and ``Z``."""
        self.assertEqual(format_time(WHEN), "2025-01-02T03:04:05.678901Z")

    def test_roundTrip(self) -> None:
        """What is written reads back as the same instant."""
        self.assertEqual(parse_time(format_time(WHEN)), WHEN)

    def test_offsets(self) -> None:
        """Any explicit offset is honoured, and seconds without fraction are fine."""
        self.assertEqual(parse_time("2025-01-02T04:04:05.678901+01:00"), WHEN)
        self.assertEqual(parse_time("2025-01-02T03:04:05Z"), WHEN - 0.678901)

    def test_refused(self) -> None:
        """
        A time without an offset, a bare date, garbage and non-strings are
        refused. The gateway used to read an offset-less time as UTC and
        other ISO 8601 shapes (``20250102T030405``) as times; the service
        wrote only ``Z`` times, so the stricter reading loses nothing.
        """
        for bad in ("2025-01-02T03:04:05", "2025-01-02", "20250102T030405Z", "soon", "",
                    None, 1735787045):
            self.assertRaises(ValueError, parse_time, bad)


class KindTests(TestCase):
    """Entity kinds and their secret fields."""

    def test_lists(self) -> None:
        """Each event kind names its snapshot list; unknown kinds have none."""
        self.assertEqual(ENTITY_LISTS["namedValue"], "namedValues")
        self.assertEqual(list_of("api"), "apis")
        self.assertIsNone(list_of("operation"))
        self.assertIsNone(list_of(None))

    def test_secretFields(self) -> None:
        """
        Subscription keys, secret named values and certificate keys (also
        inside ``pem``) are secret; a plain named value is not.
        """
        self.assertEqual(secret_fields("subscriptions", {"primaryKey": "a", "secondaryKey": "b"}),
                         ("primaryKey", "secondaryKey"))
        self.assertEqual(secret_fields("namedValues", {"value": "v", "secret": True}), ("value",))
        self.assertEqual(secret_fields("namedValues", {"value": "v", "secret": False}), ())
        self.assertEqual(secret_fields("certificates", {"pem": "CERT", "key": "K"}), ("key",))
        self.assertEqual(
            secret_fields("certificates", {"pem": "-----BEGIN PRIVATE KEY-----"}), ("pem",)
        )
        self.assertEqual(secret_fields("apis", {"path": "x"}), ())


class LayerTests(TestCase):
    """cloudproto stands alone."""

    def test_importsNothingOfOurs(self) -> None:
        """cloudproto imports nothing of gateway, configservice or Twisted."""
        import ast
        import pathlib

        import cloudproto

        for path in pathlib.Path(cloudproto.__file__).parent.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    self.assertNotIn(name.split(".")[0], ("gateway", "configservice", "twisted"),
                                     f"{path.name} imports {name}")
