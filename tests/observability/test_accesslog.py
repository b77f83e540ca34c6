"""
Tests for the access log (:class:`gateway.observability.AccessLog`) and the
redaction of secret query parameters in its lines.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gateway.observability import (
    DEFAULT_REDACTED_PARAMETERS,
    AccessLog,
    QueryRedactor,
)


class QueryRedactorTests(SynchronousTestCase):
    """Secret query parameter values never reach a log line; everything else does."""

    def setUp(self) -> None:
        self.redact = QueryRedactor()

    def test_default_list(self) -> None:
        """The documented default names are the ones redacted without any configuration."""
        self.assertEqual(
            DEFAULT_REDACTED_PARAMETERS, ("subscription-key", "access_token", "code", "sig")
        )
        for name in DEFAULT_REDACTED_PARAMETERS:
            self.assertEqual(self.redact(f"/p?{name}=s3cret&x=1"), f"/p?{name}=REDACTED&x=1")

    def test_no_query_is_the_same_string(self) -> None:
        """A target without a query comes back as the very same object (nothing is rebuilt)."""
        target = "/echo/resource"
        self.assertIs(self.redact(target), target)

    def test_harmless_query_is_the_same_string(self) -> None:
        """A query with no secret parameter comes back untouched, as the same object."""
        for target in ("/p?x=1&y=two", "/p?", "/p?codec=1&signature=2&xsig=3&sig_=4&a=code"):
            self.assertIs(self.redact(target), target)

    def test_every_occurrence_and_order(self) -> None:
        """Every occurrence is redacted; names, order and other values are kept."""
        self.assertEqual(
            self.redact("/p?a=1&sig=one&b=2&sig=two&code=3"),
            "/p?a=1&sig=REDACTED&b=2&sig=REDACTED&code=REDACTED",
        )

    def test_names_case_insensitive(self) -> None:
        """Names match whatever their case; the name is logged as the client wrote it."""
        self.assertEqual(
            self.redact("/p?Subscription-Key=k&ACCESS_TOKEN=t"),
            "/p?Subscription-Key=REDACTED&ACCESS_TOKEN=REDACTED",
        )

    def test_percent_encoded_names(self) -> None:
        """A percent-encoded name is decoded to match, and logged encoded as it came."""
        self.assertEqual(
            self.redact("/p?subscription%2Dkey=k&%73ig=s&%2573ig=kept"),
            "/p?subscription%2Dkey=REDACTED&%73ig=REDACTED&%2573ig=kept",
        )
        self.assertEqual(self.redact("/p?%53IG=s"), "/p?%53IG=REDACTED")

    def test_value_less_and_empty(self) -> None:
        """A parameter without ``=`` or with an empty value has nothing to hide and stays as is."""
        for target in ("/p?code&x=1", "/p?code=&x=1", "/p?x=1&sig"):
            self.assertEqual(self.redact(target), target)

    def test_value_with_equals_and_encoded_value(self) -> None:
        """The whole value goes, ``=`` padding and percent-escapes included."""
        self.assertEqual(self.redact("/p?sig=ab%2Bc%3D%3D==&x=1"), "/p?sig=REDACTED&x=1")

    def test_semicolon_separator(self) -> None:
        """``;`` separates parameters too (some backends read it so): a secret after one is redacted."""
        self.assertEqual(self.redact("/p?x=1;sig=s"), "/p?x=1;sig=REDACTED")

    def test_configured_names_add_to_the_defaults(self) -> None:
        """Configured names (trimmed, any case) are redacted beside the defaults."""
        redact = QueryRedactor([" Api-Key ", "", "token"])
        self.assertEqual(
            redact("/p?api-key=a&TOKEN=b&sig=c&x=d"), "/p?api-key=REDACTED&TOKEN=REDACTED&sig=REDACTED&x=d"
        )

    def test_from_setting(self) -> None:
        """The setting's comma-separated text becomes the extra names."""
        redact = QueryRedactor.from_setting("api-key, password,,")
        self.assertEqual(redact.names, frozenset(DEFAULT_REDACTED_PARAMETERS) | {"api-key", "password"})
        self.assertEqual(QueryRedactor.from_setting("").names, frozenset(DEFAULT_REDACTED_PARAMETERS))


class AccessLogRedactionTests(SynchronousTestCase):
    """The emitted access-log lines, text and JSON, carry no secret value."""

    def emit(self, fmt: str, path: str, **kw: Any) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        log = AccessLog(fmt, observer=events.append, **kw)
        log.emit(
            client="127.0.0.1", method="GET", path=path, protocol="HTTP/1.1", status=200,
            bytes=10, duration=0.001, host="h", route="api:echo", backend="http://b",
            request_id="rid",
        )
        return events

    def test_text_line_redacted(self) -> None:
        """The text line shows the parameter names with REDACTED values."""
        (event,) = self.emit("text", "/echo?subscription-key=k3y&x=1")
        self.assertIn('"GET /echo?subscription-key=REDACTED&x=1 HTTP/1.1" 200', event["access_line"])
        self.assertNotIn("k3y", event["access_line"])

    def test_json_line_redacted(self) -> None:
        """The JSON line's path is redacted the same way."""
        (event,) = self.emit("json", "/echo?access_token=t0k&x=1")
        line = format(event["access"])
        self.assertEqual(json.loads(line)["path"], "/echo?access_token=REDACTED&x=1")
        self.assertNotIn("t0k", line)

    def test_configured_names(self) -> None:
        """Names given to the access log are redacted beside the defaults."""
        (event,) = self.emit("text", "/p?api-key=s3&code=c0", redact="api-key")
        self.assertIn("/p?api-key=REDACTED&code=REDACTED ", event["access_line"])

    def test_none_emits_nothing(self) -> None:
        """The ``none`` format logs nothing at all."""
        self.assertEqual(self.emit("none", "/p?sig=s"), [])


class AccessLogEscapingTests(SynchronousTestCase):
    """
    A text line's method, target and host cannot end a field early or forge
    another: what the strict HTTP/1.1 server did not check is
    percent-encoded; JSON escapes by itself.
    """

    def emit(self, fmt: str = "text", checked: bool = False, **fields: str) -> dict[str, Any]:
        events: list[dict[str, Any]] = []
        call = {
            "client": "127.0.0.1", "method": "GET", "path": "/p", "protocol": "HTTP/2",
            "status": 404, "bytes": 10, "duration": 0.001, "host": "h", "route": "-",
            "backend": "-", "request_id": "rid", **fields,
        }
        AccessLog(fmt, observer=events.append).emit(**call, checked=checked)  # type: ignore[arg-type]
        (event,) = events
        return event

    def test_forged_fields_encoded(self) -> None:
        """Spaces, quotes, backslashes, controls and non-ASCII in unchecked fields are %XX."""
        line = self.emit(
            host="a b route=FORGED request_id=FAKE",
            path='/x" 200 1 0.1ms host=y',
            method="GE T",
        )["access_line"]
        self.assertEqual(
            line,
            '127.0.0.1 "GE%20T /x%22%20200%201%200.1ms%20host=y HTTP/2" 404 10 1.000ms '
            "host=a%20b%20route=FORGED%20request_id=FAKE route=- backend=- request_id=rid "
            "api=- operation=- product=- subscription=-",
        )
        line = self.emit(host="é\t\\\x7f")["access_line"]
        self.assertIn(" host=%C3%A9%09%5C%7F route=- ", line)

    def test_safe_fields_unchanged(self) -> None:
        """Every character the strict server lets through a Host or a method stays as it is."""
        host = "[::1]:8080"
        path = "/a-b_c.~!$&'()*+,;=:@%41/{x}|^`?q=1"
        line = self.emit(host=host, path=path)["access_line"]
        self.assertIn(f'"GET {path} HTTP/2" 404 ', line)
        self.assertIn(f" host={host} ", line)

    def test_checked_fields_as_they_are_but_quotes(self) -> None:
        """A checked target is taken as it is, except the quote and backslash llhttp passes."""
        line = self.emit(checked=True, path="/ok/{x}")["access_line"]
        self.assertIn('"GET /ok/{x} HTTP/2"', line)
        line = self.emit(checked=True, path='/a"b\\c')["access_line"]
        self.assertIn('"GET /a%22b%5Cc HTTP/2"', line)

    def test_json_escapes_itself(self) -> None:
        """JSON lines keep the values (json.dumps escapes them)."""
        event = self.emit("json", host="a b", path='/x"y')
        fields = json.loads(format(event["access"]))
        self.assertEqual((fields["host"], fields["path"]), ("a b", '/x"y'))
