"""
Secret named values: compiled steps send the real value but never show it
(``repr``, :func:`describe`, problem messages); and :func:`describe`'s
readable forms.
"""

from __future__ import annotations

import copy
import json
import pickle

from twisted.trial.unittest import SynchronousTestCase

from gateway.translate.policy import (
    API,
    REQUEST,
    CompiledDocument,
    Cors,
    Expression,
    IpFilter,
    JwtKey,
    RedactedStr,
    SetHeader,
    SetMethod,
    SetVariable,
    ValidateJwt,
    compile_document,
    compile_scopes,
    describe,
)

from .test_expressions import FakeContext

SECRET = "s3cr3t-T0ken"
NAMED = {"token": SECRET, "tenant": "contoso"}
SECRETS = frozenset({"token"})


def inbound(body: str) -> CompiledDocument:
    """``body`` as the inbound section, compiled with :data:`NAMED` (``token`` secret)."""
    return compile_document(f"<policies><inbound>{body}</inbound></policies>", NAMED, SECRETS)


def only_step(document: CompiledDocument) -> object:
    """The single inbound step of a document that must have no problem."""
    assert not document.problems, [str(p) for p in document.problems]
    assert document.inbound is not None and len(document.inbound) == 1
    return document.inbound[0]


class SecretTests(SynchronousTestCase):
    """A secret named value is sent for real and shown as ``{{name}}``."""

    def test_set_header_repr_and_describe_hide_the_secret(self) -> None:
        """A set-header value from a secret shows ``{{token}}`` in repr and describe; the runtime value is real."""
        step = only_step(inbound('<set-header name="Authorization">'
                                 "<value>Bearer {{token}}</value></set-header>"))
        assert isinstance(step, SetHeader)
        self.assertNotIn(SECRET, repr(step))
        self.assertIn("Bearer {{token}}", repr(step))
        self.assertNotIn(SECRET, json.dumps(describe(step)))
        self.assertEqual(describe(step)["values"], ["Bearer {{token}}"])
        value = step.values[0]
        assert isinstance(value, str)
        self.assertEqual(value, f"Bearer {SECRET}")
        self.assertEqual(str(value), f"Bearer {SECRET}")
        self.assertEqual(step, SetHeader(REQUEST, "Authorization", "override", (f"Bearer {SECRET}",)))

    def test_non_secret_values_stay_plain(self) -> None:
        """A named value not listed as secret is shown as its value, in a plain str."""
        step = only_step(inbound("<set-header name=\"x\"><value>{{tenant}}</value></set-header>"))
        assert isinstance(step, SetHeader)
        self.assertIs(type(step.values[0]), str)
        self.assertIn("contoso", repr(step))

    def test_default_call_shape_treats_nothing_as_secret(self) -> None:
        """compile_document(text, named_values) still works and shows values, as before."""
        document = compile_document("<policies><inbound><set-header name=\"x\"><value>{{token}}"
                                    "</value></set-header></inbound></policies>", NAMED)
        self.assertIn(SECRET, repr(document))

    def test_expression_source_hides_the_secret(self) -> None:
        """An expression a secret went into shows ``{{token}}`` as its source but compares with the secret."""
        step = only_step(inbound(
            '<set-variable name="ok" value="@(context.Request.Headers.GetValueOrDefault('
            '&quot;x-key&quot;, &quot;&quot;) == &quot;{{token}}&quot;)"/>'))
        assert isinstance(step, SetVariable) and isinstance(step.value, Expression)
        self.assertNotIn(SECRET, repr(step))
        self.assertNotIn(SECRET, describe(step)["value"])
        self.assertIn('"{{token}}"', step.value.source)
        self.assertIs(step.value.evaluate(FakeContext(headers={"x-key": SECRET})), True)
        self.assertIs(step.value.evaluate(FakeContext(headers={"x-key": "guess"})), False)

    def test_signing_key_hidden(self) -> None:
        """A validate-jwt key from a secret shows as ``{{token}}``; the key itself is the secret."""
        step = only_step(inbound('<validate-jwt header-name="Authorization"><issuer-signing-keys>'
                                 "<key>{{token}}</key></issuer-signing-keys></validate-jwt>"))
        assert isinstance(step, ValidateJwt)
        self.assertEqual(step.issuer_signing_keys, (JwtKey(SECRET),))
        self.assertNotIn(SECRET, repr(step))
        self.assertEqual(describe(step)["issuer_signing_keys"],
                         [{"policy": "JwtKey", "value": "{{token}}"}])

    def test_normalized_secret_stays_hidden(self) -> None:
        """A secret the compiler normalizes (strip, upper-case) is still redacted, as ``***``."""
        document = compile_document("<policies><inbound><set-method>{{m}}</set-method></inbound></policies>",
                                    {"m": "patch"}, {"m"})
        step = only_step(document)
        assert isinstance(step, SetMethod)
        self.assertEqual(step.method, "PATCH")
        self.assertNotIn("PATCH", repr(step))
        self.assertEqual(describe(step)["method"], "***")
        cors = only_step(compile_document(
            "<policies><inbound><cors><allowed-origins><origin>{{o}}</origin></allowed-origins>"
            "</cors></inbound></policies>", {"o": "https://hidden.example/"}, {"o"}))
        assert isinstance(cors, Cors)
        self.assertEqual(cors.allowed_origins, ("https://hidden.example",))
        self.assertNotIn("hidden", repr(cors))

    def test_problems_do_not_quote_the_secret(self) -> None:
        """A problem about a value a secret went into names ``{{token}}``, never the value."""
        document = compile_document(
            '<policies><inbound><set-variable name="v" value="@({{token}})"/></inbound>'
            '<backend><forward-request timeout="{{token}}"/></backend></policies>',
            {"token": "hunter2"}, SECRETS)
        problems = [str(p) for p in document.problems]
        self.assertEqual(len(problems), 2)
        self.assertNotIn("hunter2", " ".join(problems))
        self.assertIn("'{{token}}'", problems[0])
        self.assertEqual(problems[1], "policies/backend/forward-request/@timeout: "
                                      "must be an integer, not '{{token}}'")

    def test_compile_scopes_passes_secrets_on(self) -> None:
        """The assembled pipeline of compile_scopes hides a secret of any scope."""
        pipeline, problems = compile_scopes(
            {API: "<policies><inbound><base/><set-header name=\"k\"><value>{{token}}</value>"
                  "</set-header></inbound></policies>"}, NAMED, SECRETS)
        self.assertEqual(problems, ())
        self.assertNotIn(SECRET, repr(pipeline))
        self.assertNotIn(SECRET, json.dumps(describe(pipeline)))
        self.assertEqual(pipeline.inbound, (SetHeader(REQUEST, "k", "override", (SECRET,)),))


class RedactedStrTests(SynchronousTestCase):
    """The value type that carries a secret."""

    def test_is_the_value_but_shows_the_template(self) -> None:
        """It equals and hashes as the value; repr shows the template; it cannot be changed."""
        value = RedactedStr("abc", "{{k}}")
        self.assertEqual(value, "abc")
        self.assertEqual(hash(value), hash("abc"))
        self.assertEqual(f"{value}", "abc")
        self.assertEqual(repr(value), "'{{k}}'")
        self.assertEqual(repr(RedactedStr("abc")), "'***'")
        self.assertRaises(AttributeError, setattr, value, "shown", "abc")

    def test_copy_and_pickle_keep_the_redaction(self) -> None:
        """Copies (and a pickle round trip) still show the template, not the value."""
        value = RedactedStr("abc", "{{k}}")
        for other in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
            self.assertEqual(other, "abc")
            self.assertEqual(repr(other), "'{{k}}'")


class DescribeTests(SynchronousTestCase):
    """describe: plain data for people."""

    def test_ip_filter_addresses(self) -> None:
        """IpFilter shows addresses and ranges as text, v4 and v6, and keeps integers for matching."""
        step = IpFilter("forbid", ((4, 0x0A000001, 0x0A000001), (4, 0x0A000100, 0x0A0001FF),
                                   (6, 1, 1), (6, 0x20010DB8 << 96, (0x20010DB8 << 96) + 0xFF)))
        self.assertEqual(step.addresses, ("10.0.0.1", "10.0.1.0-10.0.1.255", "::1",
                                          "2001:db8::-2001:db8::ff"))
        self.assertEqual(describe(step), {"policy": "IpFilter", "action": "forbid",
                                          "addresses": list(step.addresses)})

    def test_defaults_omitted_and_json_ready(self) -> None:
        """Fields at their default are left out and the result is JSON as is."""
        document = inbound('<set-header name="x" exists-action="delete"/>')
        described = describe(document)
        self.assertEqual(described["inbound"], [{"policy": "SetHeader", "target": REQUEST,
                                                  "name": "x", "exists_action": "delete"}])
        self.assertEqual(described["backend"], "inherited")
        json.dumps(described)
