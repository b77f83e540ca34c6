"""Tests of gateway tokens and of durations (pure functions)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone

from twisted.trial.unittest import TestCase

from configservice._times import iso, parse_duration, parse_expiry
from configservice._tokens import (
    MAX_LIFETIME,
    TokenError,
    expiry_stamp,
    issue,
    new_key,
    parse_token,
    token_expiry,
    verify,
)

NOW = datetime(2025, 3, 1, 12, 0, 30, tzinfo=timezone.utc).timestamp()


class TokenFormatTests(TestCase):
    def test_format_and_signature(self) -> None:
        """A token is GatewayKey <id>&<yyyyMMddHHmm>&base64(HMAC-SHA512(key, "<id>\\n<expiry>"))."""
        key = new_key()
        token = issue("gw-1", key, "202503301200")
        expected = base64.b64encode(
            hmac.new(key.encode(), b"gw-1\n202503301200", hashlib.sha512).digest()
        ).decode()
        self.assertEqual(token, f"GatewayKey gw-1&202503301200&{expected}")

    def test_keys_are_random_64_bytes(self) -> None:
        """A new key is 64 random bytes in base64, different each time."""
        self.assertEqual(len(base64.b64decode(new_key())), 64)
        self.assertNotEqual(new_key(), new_key())

    def test_parse_round_trip(self) -> None:
        """Parsing an issued token gives back its gateway, stamp and expiry time."""
        token = parse_token(issue("gw", new_key(), "202503301200"))
        self.assertEqual((token.gateway_id, token.stamp), ("gw", "202503301200"))
        self.assertEqual(iso(token.expires), "2025-03-30T12:00:00.000000Z")

    def test_parse_without_scheme(self) -> None:
        """The bare <id>&<expiry>&<signature> form parses too."""
        signature = issue("gw", new_key(), "202503301200").split("&")[2]
        self.assertEqual(parse_token(f"gw&202503301200&{signature}").gateway_id, "gw")

    def test_malformed(self) -> None:
        """Missing, wrong-scheme, wrong-shape and bad-date tokens raise TokenError with a reason."""
        for value, reason in [
            (None, "missing"),
            ("", "missing"),
            ("Bearer gw&202503301200&c2ln", "scheme"),
            ("GatewayKey gw&202503301200", "malformed"),
            ("GatewayKey gw&2025033012&c2ln", "yyyyMMddHHmm"),
            ("GatewayKey gw&202513301200&c2ln", "not a valid date"),
            ("GatewayKey gw&202503301200&", "empty signature"),
            ("GatewayKey g w&202503301200&c2ln", "malformed"),
        ]:
            with self.assertRaises(TokenError, msg=repr(value)) as raised:
                parse_token(value)
            self.assertIn(reason, str(raised.exception), repr(value))

    def test_verify_with_either_key(self) -> None:
        """A token verifies against a key set holding its key, and not against others."""
        primary, secondary, other = new_key(), new_key(), new_key()
        token = parse_token(issue("gw", secondary, "202503301200"))
        self.assertTrue(verify(token, [primary, secondary]))
        self.assertFalse(verify(token, [primary, other]))

    def test_verify_rejects_changed_fields(self) -> None:
        """Changing the gateway id or the expiry of a signed token breaks its signature."""
        key = new_key()
        _, _, signature = issue("gw", key, "202503301200").split("&")
        self.assertFalse(verify(parse_token(f"GatewayKey gw&202504301200&{signature}"), [key]))
        self.assertFalse(verify(parse_token(f"GatewayKey gx&202503301200&{signature}"), [key]))


class ExpiryTests(TestCase):
    def test_rounds_down_to_the_minute(self) -> None:
        """The expiry stamp is UTC, rounded down to the minute."""
        self.assertEqual(expiry_stamp(NOW), "202503011200")
        self.assertEqual(token_expiry(NOW + 86400, NOW), "202503021200")

    def test_thirty_days_is_the_limit(self) -> None:
        """Exactly 30 days is accepted; a minute more is refused."""
        self.assertEqual(token_expiry(NOW + MAX_LIFETIME, NOW), "202503311200")
        self.assertRaises(ValueError, token_expiry, NOW + MAX_LIFETIME + 60, NOW)

    def test_past_refused(self) -> None:
        """An expiry in the past, or that rounds down to now or earlier, is refused."""
        self.assertRaises(ValueError, token_expiry, NOW - 60, NOW)
        self.assertRaises(ValueError, token_expiry, NOW + 20, NOW)

    def test_durations(self) -> None:
        """ISO 8601 and short durations parse to seconds; years, months and empty ones do not."""
        self.assertEqual(parse_duration("P29D"), 29 * 86400)
        self.assertEqual(parse_duration("PT12H"), 12 * 3600)
        self.assertEqual(parse_duration("P1DT2H30M"), 86400 + 2 * 3600 + 1800)
        self.assertEqual(parse_duration("P2W"), 14 * 86400)
        self.assertEqual(parse_duration("30d"), 30 * 86400)
        self.assertEqual(parse_duration("90m"), 5400)
        for bad in ("P1Y", "P1M", "P", "PT", "P1DT", "30x", "soon"):
            self.assertRaises(ValueError, parse_duration, bad)

    def test_expiry_as_datetime_or_duration(self) -> None:
        """An expiry is a duration from now or an ISO 8601 date-time (UTC when no offset)."""
        self.assertEqual(parse_expiry("P1D", NOW), NOW + 86400)
        self.assertEqual(parse_expiry("2025-03-02T00:00:00Z", NOW),
                         datetime(2025, 3, 2, tzinfo=timezone.utc).timestamp())
        self.assertEqual(parse_expiry("2025-03-02T00:00:00", NOW),
                         datetime(2025, 3, 2, tzinfo=timezone.utc).timestamp())
        self.assertEqual(parse_expiry("2025-03-02T01:00:00+01:00", NOW),
                         datetime(2025, 3, 2, tzinfo=timezone.utc).timestamp())
        self.assertRaises(ValueError, parse_expiry, "tomorrow", NOW)
