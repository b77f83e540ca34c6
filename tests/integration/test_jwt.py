"""
``validate-jwt`` through the real gateway (issue 9): tokens signed with
locally generated RSA, EC and symmetric keys, a loopback identity provider
serving the discovery document and the JWKS, and a key rotation the gateway
picks up with one background fetch while requests keep being answered.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.jwt._support import (
    AUDIENCE,
    ISSUER,
    IdentityProvider,
    ec_key,
    jwk,
    rsa_key,
    sign,
    symmetric,
)

from .harness import GatewayTestCase

SECRET = b"0123456789abcdef0123456789abcdef"

CONFIG = """\
apis:
  - name: secure
    path: secure
    serviceUrl: {backend}/api
  - name: hmac
    path: hmac
    serviceUrl: {backend}/api
policies:
  - scope: api
    apiId: secure
    xml: |
      <policies>
        <inbound>
          <validate-jwt header-name="Authorization" require-scheme="Bearer">
            <openid-config url="{openid}" />
            <audiences><audience>{audience}</audience></audiences>
            <issuers><issuer>{issuer}</issuer></issuers>
            <required-claims>
              <claim name="scp" match="any" separator=" "><value>orders.read</value></claim>
            </required-claims>
          </validate-jwt>
        </inbound>
        <backend><forward-request /></backend>
        <outbound />
      </policies>
  - scope: api
    apiId: hmac
    xml: |
      <policies>
        <inbound>
          <validate-jwt query-parameter-name="token" failed-validation-httpcode="403"
                        failed-validation-error-message="Nope">
            <issuer-signing-keys><key>{secret}</key></issuer-signing-keys>
          </validate-jwt>
        </inbound>
        <backend><forward-request /></backend>
        <outbound />
      </policies>
"""


def _times(**extra: object) -> dict[str, object]:
    now = int(time.time())
    values: dict[str, object] = {"nbf": now - 60, "exp": now + 3600, "scp": "orders.read profile"}
    values.update(extra)
    return values


class ValidateJwtTests(GatewayTestCase):
    """Tokens are checked against keys the gateway fetched in the background."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.idp = IdentityProvider()
        self.rsa, self.ec = rsa_key(), ec_key()
        self.idp.keys = [jwk(self.rsa, "r1", "RS256"), jwk(self.ec, "e1", "ES256")]
        self.idp.start()
        self.addCleanup(self.idp.stop)
        self.write_config(
            CONFIG.format(
                backend=self.backend_url,
                openid=self.idp.url,
                audience=AUDIENCE,
                issuer=ISSUER,
                secret=base64.b64encode(SECRET).decode("ascii"),
            )
        )
        yield self.wait_for(lambda: self.gateway.openid_keys.keys(self.idp.url) is not None)

    def bearer(self, token: str) -> Any:
        return self.get("/secure/x", headers=[("Authorization", f"Bearer {token}")])

    @inlineCallbacks
    def test_rsa_and_ec_tokens_accepted(self) -> Any:
        """RS256 and ES256 tokens from the provider's keys pass; the backend gets the Authorization header."""
        for key, alg, kid in ((self.rsa, "RS256", "r1"), (self.ec, "ES256", "e1")):
            token = sign(key, alg, kid=kid, **_times())
            r = yield self.bearer(token)
            self.assertEqual((alg, r.status), (alg, 200))
            sent = dict((k.lower(), v) for k, v in r.json()["headers"])
            self.assertEqual(sent["authorization"], f"Bearer {token}")

    @inlineCallbacks
    def test_refusals(self) -> Any:
        """Missing, expired, wrong audience, missing claim, wrong scheme, forged: 401, backend not called."""
        forged = sign(rsa_key(), "RS256", kid="r1", **_times())
        cases = {
            "missing": None,
            "expired": f"Bearer {sign(self.rsa, 'RS256', kid='r1', **_times(exp=int(time.time()) - 10))}",
            "audience": f"Bearer {sign(self.rsa, 'RS256', kid='r1', **_times(aud='api://other'))}",
            "claim": f"Bearer {sign(self.rsa, 'RS256', kid='r1', **_times(scp='profile'))}",
            "scheme": f"Basic {sign(self.rsa, 'RS256', kid='r1', **_times())}",
            "forged": f"Bearer {forged}",
        }
        messages = {}
        for name, value in cases.items():
            headers = [("Authorization", value)] if value is not None else []
            r = yield self.get("/secure/x", headers=headers)
            self.assertEqual((name, r.status), (name, 401))
            messages[name] = r.json()["message"]
        self.assertEqual(messages["missing"], "JWT not present.")
        self.assertEqual(messages["scheme"], "JWT not present.")
        self.assertIn("Lifetime validation failed", messages["expired"])
        self.assertIn("Audience validation failed", messages["audience"])
        self.assertIn("scp", messages["claim"])
        self.assertIn("Signature validation failed", messages["forged"])
        self.assertEqual(self.backend_site.connections, 0)

    @inlineCallbacks
    def test_symmetric_key_in_query_with_own_code_and_message(self) -> Any:
        """issuer-signing-keys with a base64 HS256 key, the token in the query; failures use the policy's code and message."""
        _, oct_key = symmetric(SECRET)
        token = sign(oct_key, "HS256", **_times())
        r = yield self.get(f"/hmac/x?token={token}")
        self.assertEqual(r.status, 200)
        bad = sign(symmetric(b"another-secret-another-secret-00")[1], "HS256", **_times())
        r = yield self.get(f"/hmac/x?token={bad}")
        self.assertEqual((r.status, r.json()["message"]), (403, "Nope"))

    @inlineCallbacks
    def test_key_rotation_fetched_once_in_the_background(self) -> Any:
        """
        The provider rotates to a new kid: the first token with it is refused
        at once (no blocking fetch), one background fetch follows, then it
        passes; another unknown kid soon after fetches nothing more.
        """
        self.assertEqual(self.idp.jwks_hits(), 1)
        new = rsa_key()
        self.idp.keys = [jwk(new, "r2", "RS256")]
        token = sign(new, "RS256", kid="r2", **_times())
        r = yield self.bearer(token)
        self.assertEqual(r.status, 401)
        self.assertIn("signing key was not found", r.json()["message"])
        yield self.wait_for(lambda: self.idp.jwks_hits() == 2)
        yield self.wait_for(lambda: not self.gateway.openid_keys.describe()[self.idp.url]["fetching"])
        r = yield self.bearer(token)
        self.assertEqual(r.status, 200)
        r = yield self.bearer(sign(new, "RS256", kid="r3", **_times()))
        self.assertEqual(r.status, 401)
        r = yield self.bearer(token)
        self.assertEqual(r.status, 200)
        self.assertEqual(self.idp.jwks_hits(), 2)

    @inlineCallbacks
    def test_config_shows_the_key_cache(self) -> Any:
        """/config lists each openid-config URL with its key ids and fetch counts."""
        r = yield self.admin("/config")
        state = r.json()["openidKeys"][self.idp.url]
        self.assertEqual((sorted(state["kids"]), state["fetches"]), (["e1", "r1"], 1))
