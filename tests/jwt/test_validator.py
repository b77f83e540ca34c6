"""
:class:`gateway.jwt.TokenValidator` on real tokens: signatures made with
joserfc over keys generated here, claims checked against a fake clock.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

from joserfc import jwt
from joserfc.jwk import OKPKey
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gateway.jwt import KeySet, TokenValidator, _validator, jwks_keys
from gateway.translate.policy import Expression, JwtClaim, JwtKey, ValidateJwt

from ._support import (
    AUDIENCE,
    ISSUER,
    NOW,
    claims,
    ec_key,
    jwk,
    rsa_key,
    rsa_n_e,
    sign,
    symmetric,
    unsigned,
)

URL = "https://idp.example/.well-known/openid-configuration"


class FakeKeys:
    """A :class:`~gateway.jwt.KeySource` holding fixed key sets; records refresh requests."""

    def __init__(self, sets: dict[str, KeySet] | None = None) -> None:
        self.sets = sets or {}
        self.asked: list[str] = []

    def keys(self, url: str) -> KeySet | None:
        return self.sets.get(url)

    def unknown_kid(self, url: str) -> None:
        self.asked.append(url)


RSA = rsa_key()
OTHER_RSA = rsa_key()
EC = ec_key()
SECRET, SECRET_KEY = symmetric(b"a shared secret of thirty-two b.")


def step(**fields: object) -> ValidateJwt:
    base: dict[str, object] = {
        "header_name": "Authorization",
        "issuer_signing_keys": (rsa_n_e(RSA), SECRET),
        "issuers": (ISSUER,),
        "audiences": (AUDIENCE,),
    }
    base.update(fields)
    return ValidateJwt(**base)  # type: ignore[arg-type]


class ValidatorTests(SynchronousTestCase):
    """Signature, lifetime, issuer, audience and required-claim checks."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.openid = FakeKeys()
        self.validator = TokenValidator(self.openid, self.clock)

    def check(self, token: str, s: ValidateJwt | None = None) -> object:
        return self.validator.validate(token, s if s is not None else step(), None)  # type: ignore[arg-type]

    def refused(self, token: str, s: ValidateJwt | None = None) -> str:
        result = self.check(token, s)
        self.assertIsInstance(result, str, f"accepted: {result!r}")
        assert isinstance(result, str)
        self.assertTrue(result.startswith("JWT Validation Failed: "), result)
        return result

    # --- signatures -------------------------------------------------------

    def test_rs256_with_n_and_e(self) -> None:
        """An RS256 token verifies with the ``n``/``e`` key; the claims come back."""
        result = self.check(sign(RSA, "RS256"))
        self.assertEqual(result["sub"], "alice")  # type: ignore[index]

    def test_rsa_family(self) -> None:
        """RS384, RS512 and PS256/384/512 verify with the same RSA key."""
        for alg in ("RS384", "RS512", "PS256", "PS384", "PS512"):
            self.assertIsInstance(self.check(sign(RSA, alg)), dict, alg)

    def test_hmac_with_base64_key(self) -> None:
        """HS256/384/512 tokens verify with the base64 symmetric key."""
        for alg in ("HS256", "HS384", "HS512"):
            self.assertIsInstance(self.check(sign(SECRET_KEY, alg)), dict, alg)

    def test_es256_from_a_key_set(self) -> None:
        """An ES256 token verifies with a P-256 key of the OpenID key set."""
        self.openid.sets[URL] = jwks_keys({"keys": [jwk(EC, "ec1", "ES256")]})
        s = step(issuer_signing_keys=(), openid_config_urls=(URL,))
        self.assertIsInstance(self.check(sign(EC, "ES256", kid="ec1"), s), dict)

    def test_verified_token_skips_the_signature_check(self) -> None:
        """A token seen before for the same step and keys is not verified again; claims still are."""
        calls = []
        real = _validator.verify_compact

        def counting(*args: object) -> object:
            calls.append(1)
            return real(*args)  # type: ignore[arg-type]

        self.patch(_validator, "verify_compact", counting)
        token = sign(RSA, "RS256", exp=int(NOW) + 100)
        s = step()
        self.assertIsInstance(self.check(token, s), dict)
        self.assertIsInstance(self.check(token, s), dict)
        self.assertEqual(len(calls), 1)
        self.clock.advance(101)
        self.assertIn("IDX10223", self.refused(token, s))
        self.assertIsInstance(self.check(token, step(clock_skew=200)), dict)
        self.assertEqual(len(calls), 2, "another step object verifies afresh")

    def test_verified_token_refused_once_its_key_is_rotated_out(self) -> None:
        """A verified token is checked again when the OpenID keys change: its key gone, it is refused."""
        self.openid.sets[URL] = jwks_keys({"keys": [jwk(RSA, "k1", "RS256")]})
        s = step(issuer_signing_keys=(), openid_config_urls=(URL,))
        token = sign(RSA, "RS256", kid="k1")
        self.assertIsInstance(self.check(token, s), dict)
        self.openid.sets[URL] = jwks_keys({"keys": [jwk(OTHER_RSA, "k2", "RS256")]})
        self.assertIn("signing key was not found", self.refused(token, s))

    def test_verified_token_not_shared_between_steps(self) -> None:
        """A token verified for one step is not accepted by a step with other keys."""
        token = sign(RSA, "RS256")
        self.assertIsInstance(self.check(token), dict)
        other = step(issuer_signing_keys=(rsa_n_e(OTHER_RSA),))
        self.assertIn("Signature validation failed", self.refused(token, other))

    def test_wrong_signature(self) -> None:
        """A token signed by another key is refused: signature validation failed."""
        message = self.refused(sign(OTHER_RSA, "RS256"))
        self.assertIn("IDX10503: Signature validation failed", message)

    def test_tampered_payload(self) -> None:
        """Changing the payload of a signed token breaks its signature."""
        header, _, signature = sign(RSA, "RS256").split(".")
        forged = sign(OTHER_RSA, "RS256", sub="mallory").split(".")[1]
        self.assertIn("Signature validation failed", self.refused(f"{header}.{forged}.{signature}"))

    def test_known_kid_wrong_key(self) -> None:
        """A token whose kid matches but whose signature does not: IDX10511, no refresh asked."""
        self.openid.sets[URL] = jwks_keys({"keys": [jwk(RSA, "k1", "RS256")]})
        s = step(issuer_signing_keys=(), openid_config_urls=(URL,))
        self.assertIn("IDX10511", self.refused(sign(OTHER_RSA, "RS256", kid="k1"), s))
        self.assertEqual(self.openid.asked, [])

    def test_unknown_kid_asks_for_refresh(self) -> None:
        """A kid no key has is refused as not found, and the step's URL is asked to refresh."""
        self.openid.sets[URL] = jwks_keys({"keys": [jwk(RSA, "k1", "RS256")]})
        s = step(issuer_signing_keys=(), openid_config_urls=(URL,))
        message = self.refused(sign(OTHER_RSA, "RS256", kid="k2"), s)
        self.assertIn("signing key was not found", message)
        self.assertIn("kid: 'k2'", message)
        self.assertEqual(self.openid.asked, [URL])

    def test_kidless_key_verifies_without_refresh(self) -> None:
        """A token with a kid that a key without id verifies is accepted; no refresh is asked."""
        self.openid.sets[URL] = jwks_keys({"keys": [jwk(EC, "ec1", "ES256")]})
        s = step(openid_config_urls=(URL,))
        self.assertIsInstance(self.check(sign(RSA, "RS256", kid="issuer-kid"), s), dict)
        self.assertEqual(self.openid.asked, [])

    def test_large_header(self) -> None:
        """A header carrying an x5c-sized value (over joserfc's 512-byte default) is accepted."""
        token = jwt.encode({"alg": "RS256", "x5c": ["A" * 3000]}, claims(), RSA, algorithms=["RS256"])
        self.assertIsInstance(self.check(token), dict)

    def test_keys_not_fetched_yet(self) -> None:
        """Before the first fetch of the step's URL, tokens are refused with a message saying so."""
        s = step(issuer_signing_keys=(), openid_config_urls=(URL,))
        self.assertIn("not been fetched yet", self.refused(sign(RSA, "RS256", kid="k1"), s))

    def test_static_key_ids(self) -> None:
        """A static key with an id verifies only tokens naming it; one without an id verifies any."""
        with_id = replace(rsa_n_e(RSA), id="mine")
        s = step(issuer_signing_keys=(with_id,))
        self.assertIsInstance(self.check(sign(RSA, "RS256", kid="mine"), s), dict)
        self.assertIn("signing key was not found", self.refused(sign(RSA, "RS256", kid="other"), s))
        self.assertIsInstance(self.check(sign(RSA, "RS256", kid="anything")), dict)

    def test_no_keys(self) -> None:
        """A step without any key refuses signed tokens (IDX10500)."""
        self.assertIn("IDX10500", self.refused(sign(RSA, "RS256"), step(issuer_signing_keys=())))

    def test_alg_none_refused_when_signed_tokens_required(self) -> None:
        """``alg: none`` is refused under require-signed-tokens (the default)."""
        self.assertIn("IDX10504", self.refused(unsigned()))

    def test_alg_none_accepted_when_allowed(self) -> None:
        """With require-signed-tokens false, an unsigned token passes on to the claim checks."""
        s = step(require_signed_tokens=False)
        self.assertIsInstance(self.check(unsigned(), s), dict)
        self.assertIn("IDX10223", self.refused(unsigned(exp=int(NOW) - 5), s))

    def test_alg_none_with_signature(self) -> None:
        """An ``alg: none`` token that carries a signature is malformed."""
        s = step(require_signed_tokens=False)
        self.assertIn("not a well-formed", self.refused(unsigned() + "c2ln", s))

    def test_unsupported_algorithm(self) -> None:
        """EdDSA is not among APIM's algorithms: refused, naming the algorithm."""
        okp = OKPKey.generate_key("Ed25519")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc: EdDSA is deprecated (RFC 9864)
            token = sign(okp, "EdDSA")
        self.assertIn("'EdDSA' is not supported", self.refused(token))

    def test_malformed(self) -> None:
        """Text that is not a compact JWS is refused as malformed, whatever it is."""
        for token in ("abc", "a.b", "a.b.c.d.e", "é.x.y", "eyJhbGciOiJSUzI1NiJ9.!!!.x"):
            self.assertIn("not a well-formed JWT", self.refused(token), token)

    # --- lifetime -----------------------------------------------------------

    def test_expired(self) -> None:
        """A token expired 10 s ago is refused (IDX10223); a clock skew of 30 s admits it."""
        token = sign(RSA, "RS256", exp=int(NOW) - 10)
        self.assertIn("IDX10223: Lifetime validation failed. The token is expired.",
                      self.refused(token))
        self.assertIsInstance(self.check(token, step(clock_skew=30)), dict)

    def test_expiry_follows_the_clock(self) -> None:
        """The same token is valid until its ``exp`` on the injected clock, then refused."""
        token = sign(RSA, "RS256", exp=int(NOW) + 100)
        self.assertIsInstance(self.check(token), dict)
        self.clock.advance(101)
        self.assertIn("IDX10223", self.refused(token))

    def test_not_yet_valid(self) -> None:
        """A token valid from 10 s from now is refused (IDX10222); a skew of 30 s admits it."""
        token = sign(RSA, "RS256", nbf=int(NOW) + 10)
        self.assertIn("IDX10222: Lifetime validation failed. The token is not yet valid.",
                      self.refused(token))
        self.assertIsInstance(self.check(token, step(clock_skew=30)), dict)

    def test_missing_expiration(self) -> None:
        """No ``exp`` is refused under require-expiration-time, accepted without it."""
        token = sign(RSA, "RS256", exp=None)
        self.assertIn("IDX10225", self.refused(token))
        self.assertIsInstance(self.check(token, step(require_expiration_time=False)), dict)

    def test_exp_not_a_number(self) -> None:
        """An ``exp`` that is not a number makes the token malformed."""
        self.assertIn("exp is not a number", self.refused(sign(RSA, "RS256", exp="tomorrow")))

    # --- issuer and audience --------------------------------------------------

    def test_issuer_mismatch(self) -> None:
        """Another issuer is refused (IDX10205); no issuer at all: IDX10211."""
        self.assertIn("IDX10205", self.refused(sign(RSA, "RS256", iss="https://evil.example")))
        self.assertIn("IDX10211", self.refused(sign(RSA, "RS256", iss=None)))

    def test_issuer_expression(self) -> None:
        """An issuer given as an expression is evaluated on the request."""
        seen: list[object] = []

        def evaluate(context: object) -> str:
            seen.append(context)
            return "https://dynamic.example"

        s = step(issuers=(Expression("@(...)", "string", evaluate),))
        token = sign(RSA, "RS256", iss="https://dynamic.example")
        self.assertIsInstance(self.validator.validate(token, s, "ctx"), dict)  # type: ignore[arg-type]
        self.assertEqual(seen, ["ctx"])

    def test_audience(self) -> None:
        """``aud`` as a string or a list passes when one value is allowed; else IDX10214/IDX10206."""
        self.assertIsInstance(self.check(sign(RSA, "RS256", aud=["x", AUDIENCE])), dict)
        self.assertIn("IDX10214", self.refused(sign(RSA, "RS256", aud="api://other")))
        self.assertIn("IDX10214", self.refused(sign(RSA, "RS256", aud=["x", "y"])))
        self.assertIn("IDX10206", self.refused(sign(RSA, "RS256", aud=None)))

    def test_no_audiences_configured(self) -> None:
        """Without ``audiences`` and ``issuers`` any audience and issuer pass."""
        s = step(audiences=(), issuers=())
        self.assertIsInstance(self.check(sign(RSA, "RS256", aud="zzz", iss="yyy"), s), dict)

    # --- required claims --------------------------------------------------------

    def test_required_claims_all(self) -> None:
        """``match="all"``: every listed value must be among the claim's values."""
        s = step(required_claims=(JwtClaim("roles", "all", None, ("read", "write")),))
        self.assertIsInstance(self.check(sign(RSA, "RS256", roles=["write", "read", "x"]), s), dict)
        message = self.refused(sign(RSA, "RS256", roles=["read"]), s)
        self.assertIn("Claim 'roles' does not hold all", message)

    def test_required_claims_any(self) -> None:
        """``match="any"``: one listed value is enough."""
        s = step(required_claims=(JwtClaim("roles", "any", None, ("admin", "write")),))
        self.assertIsInstance(self.check(sign(RSA, "RS256", roles=["write"]), s), dict)
        self.assertIn("does not hold any", self.refused(sign(RSA, "RS256", roles=["read"]), s))

    def test_required_claims_separator(self) -> None:
        """A separator splits a string claim into values (``scp`` style)."""
        s = step(required_claims=(JwtClaim("scp", "all", " ", ("read", "write")),))
        self.assertIsInstance(self.check(sign(RSA, "RS256", scp="write read"), s), dict)
        self.refused(sign(RSA, "RS256", scp="read"), s)
        whole = step(required_claims=(JwtClaim("scp", "all", None, ("read",)),))
        self.refused(sign(RSA, "RS256", scp="write read"), whole)

    def test_required_claim_missing(self) -> None:
        """A required claim that is absent is refused, naming the claim; no values: presence only."""
        s = step(required_claims=(JwtClaim("tid"),))
        self.assertIn("Required claim 'tid' was not found", self.refused(sign(RSA, "RS256"), s))
        self.assertIsInstance(self.check(sign(RSA, "RS256", tid="t1"), s), dict)

    def test_non_string_claim_values(self) -> None:
        """Numbers and booleans compare in their JSON text."""
        s = step(required_claims=(JwtClaim("level", "all", None, ("3",)),
                                  JwtClaim("admin", "all", None, ("true",))))
        self.assertIsInstance(self.check(sign(RSA, "RS256", level=3, admin=True), s), dict)

    # --- configuration-derived work ------------------------------------------------

    def test_keys_parsed_once_per_step(self) -> None:
        """A step's keys are parsed on its first token only, not per request."""
        calls: list[object] = []
        real = _validator.step_keys

        def counting(keys: object) -> object:
            calls.append(keys)
            return real(keys)  # type: ignore[arg-type]

        self.patch(_validator, "step_keys", counting)
        s = step()
        for _ in range(3):
            self.check(sign(RSA, "RS256"), s)
        self.assertEqual(len(calls), 1)
        self.check(sign(RSA, "RS256"), step())
        self.assertEqual(len(calls), 2)

    def test_bad_key_left_out_and_logged(self) -> None:
        """A key that is not base64 is left out with a log line; the step's other keys still work."""
        s = step(issuer_signing_keys=(JwtKey(value="!!not base64!!", id="bad"), rsa_n_e(RSA)))
        with capturedLogs() as events:
            self.assertIsInstance(self.check(sign(RSA, "RS256"), s), dict)
        self.assertTrue(any("left out" in e.get("log_format", "") and "bad" in e["problem"]
                            for e in events))
