"""
Tests of :mod:`cloudproto`'s token grammar, signature and lifetime: the one
set of rules both the gateway and the configuration service apply.

The ``Disagreement`` cases are tokens the gateway's old parser
(``gateway/sources/_cloudtoken.py``) and the service's
(``configservice/_tokens.py``) read differently; each test states the rule
that now holds on both sides.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone

from twisted.trial.unittest import TestCase

import cloudproto
from cloudproto import (
    MAX_LIFETIME,
    TokenError,
    check_lifetime,
    format_token,
    issue,
    looks_like_token,
    parse_token,
    sign,
    stamp_seconds,
    token_expiry,
    verify,
)

KEY = base64.b64encode(bytes(range(64))).decode()
STAMP = "202503301200"
SIGNATURE = sign(KEY, "gw", STAMP)
NOW = datetime(2025, 3, 1, 12, 0, 30, tzinfo=timezone.utc).timestamp()


def _reason(value: str | None) -> str:
    try:
        parse_token(value)
    except TokenError as e:
        return str(e)
    raise AssertionError(f"{value!r} parsed")


class GrammarTests(TestCase):
    """The token grammar."""

    def test_signature(self) -> None:
        """The signature is base64(HMAC-SHA512(key, "<id>\\n<stamp>")) with the key's UTF-8 bytes."""
        expected = base64.b64encode(
            hmac.new(KEY.encode(), b"gw\n" + STAMP.encode(), hashlib.sha512).digest()
        ).decode()
        self.assertEqual(sign(KEY, "gw", STAMP), expected)
        self.assertEqual(issue("gw", KEY, STAMP), f"GatewayKey gw&{STAMP}&{expected}")

    def test_roundTrip(self) -> None:
        """A parsed token gives back its parts, its expiry and the header it came from."""
        token = parse_token(issue("gw", KEY, STAMP))
        self.assertEqual((token.gateway_id, token.stamp, token.signature),
                         ("gw", STAMP, SIGNATURE))
        self.assertEqual(token.expires, datetime(2025, 3, 30, 12, tzinfo=timezone.utc).timestamp())
        self.assertEqual(token.header(), issue("gw", KEY, STAMP))

    def test_bareValue(self) -> None:
        """The value without the scheme word parses to the same token."""
        self.assertEqual(parse_token(f"gw&{STAMP}&{SIGNATURE}"),
                         parse_token(f"GatewayKey gw&{STAMP}&{SIGNATURE}"))

    def test_signatureNotInRepr(self) -> None:
        """A token's repr (what a careless log line shows) leaves its signature out."""
        self.assertNotIn(SIGNATURE, repr(parse_token(issue("gw", KEY, STAMP))))

    def test_malformed(self) -> None:
        """Each malformed part is refused with a reason naming it."""
        for value, reason in [
            (None, "missing"),
            ("  ", "missing"),
            (f"Bearer gw&{STAMP}&{SIGNATURE}", "scheme"),
            (f"GatewayKey gw&{STAMP}", "expected"),
            (f"GatewayKey gw&2025033012&{SIGNATURE}", "yyyyMMddHHmm"),
            (f"GatewayKey gw&202513301200&{SIGNATURE}", "not a valid date"),
            (f"GatewayKey gw&{STAMP}&", "empty signature"),
            (f"GatewayKey -gw&{STAMP}&{SIGNATURE}", "gateway id"),
            (f"GatewayKey gw&{STAMP}&{SIGNATURE[:-4]}", "64 bytes"),
        ]:
            self.assertIn(reason, _reason(value), repr(value))

    def test_looksLikeToken(self) -> None:
        """A value with the scheme word or a ``&`` is a token; anything else a file path."""
        self.assertTrue(looks_like_token(f"GatewayKey gw&{STAMP}&{SIGNATURE}"))
        self.assertTrue(looks_like_token(f"gatewaykey x"))
        self.assertTrue(looks_like_token(f"gw&{STAMP}&{SIGNATURE}"))
        self.assertFalse(looks_like_token("/var/run/secrets/apim/token"))
        self.assertFalse(looks_like_token("token.txt"))

    def test_stampDigitsAscii(self) -> None:
        """A stamp is 12 ASCII digits: other Unicode digits are refused."""
        self.assertRaises(ValueError, stamp_seconds, "２０２５０３３０１２００")
        self.assertIn("yyyyMMddHHmm", _reason(f"gw&２０２５０３３０１２００&{SIGNATURE}"))


class DisagreementTests(TestCase):
    """Tokens the two old parsers read differently, and the rule that now holds."""

    def test_schemeCaseInsensitive(self) -> None:
        """
        The scheme word is matched without regard to case (HTTP auth
        schemes are case-insensitive); the gateway used to refuse
        ``gatewaykey``, the service accepted it.
        """
        self.assertEqual(parse_token(f"gatewaykey gw&{STAMP}&{SIGNATURE}").gateway_id, "gw")
        self.assertEqual(parse_token(f"GATEWAYKEY  gw&{STAMP}&{SIGNATURE}").gateway_id, "gw")

    def test_ampersandInSignature(self) -> None:
        """
        A fourth ``&`` part is a malformed token; the gateway used to take
        it as part of the signature.
        """
        self.assertIn("expected", _reason(f"GatewayKey gw&{STAMP}&{SIGNATURE}&more"))

    def test_gatewayIdCharacters(self) -> None:
        """
        The gateway id is an entity id, safe in a URL path; the gateway
        used to accept any characters but ``&`` and white space
        (``gw/1``, ``gw%2F``, ``gw?x``), which the service refused.
        """
        for gateway_id in ("gw/1", "gw%2F", "gw?x", "é", "x" * 81):
            self.assertIn("gateway id", _reason(f"{gateway_id}&{STAMP}&{SIGNATURE}"), gateway_id)

    def test_signatureShape(self) -> None:
        """
        The signature is base64 of 64 bytes; the service used to accept any
        non-empty text (``a b``, ``c2ln``), the gateway any text without
        white space.
        """
        for signature in ("c2ln", "not base64!", SIGNATURE[:-2] + "!!", SIGNATURE + "AAAA"):
            self.assertIn("signature", _reason(f"gw&{STAMP}&{signature}"), signature)
        self.assertIn("signature", _reason(f"GatewayKey gw&{STAMP}&a b"))

    def test_tabAfterScheme(self) -> None:
        """
        The scheme is separated by spaces (the HTTP grammar), not tabs: the
        gateway used to accept a tab, the service read it as part of the id.
        """
        self.assertIn("gateway id", _reason(f"GatewayKey\tgw&{STAMP}&{SIGNATURE}"))

    def test_sameOnBothSides(self) -> None:
        """The gateway and the service parse with this very function."""
        from configservice import _tokens
        from gateway.sources.cloud import _token

        self.assertIs(_tokens.parse_token, cloudproto.parse_token)
        self.assertIs(_token.parse_token, cloudproto.parse_token)


class LifetimeTests(TestCase):
    """Expiry and the 30-day limit."""

    def test_issueLimit(self) -> None:
        """An expiry 30 days ahead is issued; a minute more, or one in the past, is not."""
        self.assertEqual(token_expiry(NOW + MAX_LIFETIME, NOW), "202503311200")
        self.assertRaises(ValueError, token_expiry, NOW + MAX_LIFETIME + 60, NOW)
        self.assertRaises(ValueError, token_expiry, NOW - 60, NOW)

    def test_checkLifetime(self) -> None:
        """
        A token is refused once expired, and when its expiry lies more than
        30 days (and a few minutes of clock skew) ahead: no issuer makes one.
        """
        token = parse_token(format_token("gw", STAMP, SIGNATURE))
        check_lifetime(token, token.expires - 1)
        check_lifetime(token, token.expires - MAX_LIFETIME)
        self.assertIn("expired", self._refused(token, token.expires))
        self.assertIn("30 days", self._refused(token, token.expires - MAX_LIFETIME - 3600))

    def _refused(self, token: cloudproto.Token, now: float) -> str:
        with self.assertRaises(TokenError) as raised:
            check_lifetime(token, now)
        return str(raised.exception)

    def test_verify(self) -> None:
        """A token verifies with either of its gateway's keys, not with another or changed."""
        other = base64.b64encode(bytes(64)).decode()
        token = parse_token(issue("gw", KEY, STAMP))
        self.assertTrue(verify(token, [other, KEY]))
        self.assertFalse(verify(token, [other]))
        moved = parse_token(format_token("gw", "202504301200", token.signature))
        self.assertFalse(verify(moved, [KEY]))
