"""Tests of :mod:`cloudproto`'s rules for an API's subscription key names."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cloudproto import DEFAULT_KEY_NAMES, KEY_NAME_PARTS, MAX_KEY_NAME, key_name_error


class KeyNameTests(TestCase):
    """``subscriptionKeyParameterNames``: header an HTTP token, query unreserved characters."""

    def test_defaults(self) -> None:
        """APIM's defaults, one per part, are themselves good names and cannot be changed."""
        self.assertEqual(KEY_NAME_PARTS, ("header", "query"))
        self.assertEqual(
            dict(DEFAULT_KEY_NAMES),
            {"header": "Ocp-Apim-Subscription-Key", "query": "subscription-key"},
        )
        for part in KEY_NAME_PARTS:
            self.assertIsNone(key_name_error(part, DEFAULT_KEY_NAMES[part]))

        def change() -> None:
            DEFAULT_KEY_NAMES["header"] = "X"  # type: ignore[index]

        self.assertRaises(TypeError, change)

    def test_goodHeaders(self) -> None:
        """Any RFC 9110 token is a header name, up to the length limit."""
        for name in ("X-Key", "x_key", "K", "!#$%&'*+.^_`|~-", "a1", "X" * MAX_KEY_NAME):
            self.assertIsNone(key_name_error("header", name), name)

    def test_goodQueries(self) -> None:
        """Letters, digits, ``.``, ``_``, ``~`` and ``-`` make a query name."""
        for name in ("k", "catalog_key", "a.b~c-d", "K9", "q" * MAX_KEY_NAME):
            self.assertIsNone(key_name_error("query", name), name)

    def test_badHeaders(self) -> None:
        """
        A space, a separator, a character outside ASCII (Latin-1 or not:
        one outside Latin-1 could not even be encoded) is refused, naming
        the rule and the name.
        """
        for name in ("X Key", "X-Key:", "X-Kéy", "\u2603", "(k)", "a/b", "a\tb", "a@b", "k=v"):
            self.assertEqual(
                key_name_error("header", name),
                f"must be an HTTP header name (letters, digits and !#$%&'*+.^_`|~-), not {name!r}",
            )

    def test_badQueries(self) -> None:
        """
        A name the gateway could not find as the literal ``name=`` in a raw
        query (one splitting it, or needing percent-encoding) is refused;
        so are the header-only token characters.
        """
        for name in ("a&b", "a=b", "a+b", "a#b", "my key", "schlüssel", "a%20b", "a!b", "a*b"):
            error = key_name_error("query", name)
            self.assertIsNotNone(error, name)
            assert error is not None
            self.assertTrue(
                error.startswith("must be letters, digits, '.', '_', '~' or '-'"), error
            )
            self.assertTrue(error.endswith(f"not {name!r}"), error)

    def test_emptyLongAndNotText(self) -> None:
        """An empty name, one over the limit, and a non-string are refused for either part."""
        for part in KEY_NAME_PARTS:
            self.assertEqual(key_name_error(part, ""), "must not be empty")
            self.assertEqual(
                key_name_error(part, "k" * (MAX_KEY_NAME + 1)),
                f"must be at most {MAX_KEY_NAME} characters",
            )
            self.assertEqual(key_name_error(part, 7), "must be a string, not int")
            self.assertEqual(key_name_error(part, None), "must be a string, not NoneType")

    def test_unknownPart(self) -> None:
        """A part other than header or query is the caller's mistake: ``ValueError``."""
        error = self.assertRaises(ValueError, key_name_error, "cookie", "k")
        self.assertIn("'cookie'", str(error))
