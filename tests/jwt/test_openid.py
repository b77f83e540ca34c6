"""
:class:`gateway.jwt.OpenIdKeys` against a real loopback identity provider
(twisted.web on 127.0.0.1) with the real fetch: keys fetched in the
background, refreshed on the injected clock, rotated keys picked up with
exactly one fetch, failures keeping the last good keys.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from gateway.jwt import OpenIdKeys, OpenIdKeysService, TokenValidator, http_fetch
from gateway.model import ObjectRef
from gateway.proxy._policies import PROCEED, Failure, PolicyRequest, run_inbound
from gateway.translate import KIND_API, PREFIX, GatewayConfig, RouteEntry, parse_backend
from gateway.translate.policy import Pipeline, ValidateJwt

from ._support import AUDIENCE, ISSUER, NOW, IdentityProvider, ec_key, jwk, rsa_key, sign

REFRESH = 3600.0
UNKNOWN_KID = 60.0
RETRY_MAX = 120.0


class OpenIdKeysTests(TestCase):
    """The background key cache, end to end over loopback HTTP."""

    def setUp(self) -> None:
        self.idp = IdentityProvider()
        self.rsa, self.ec = rsa_key(), ec_key()
        self.idp.keys = [jwk(self.rsa, "r1", "RS256"), jwk(self.ec, "e1", "ES256")]
        self.idp.start()
        self.addCleanup(self.idp.stop)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.keys = OpenIdKeys(self.clock, http_fetch(reactor), refresh_interval=REFRESH,
                               unknown_kid_interval=UNKNOWN_KID, retry_initial=5.0,
                               retry_max=RETRY_MAX, jitter=lambda: 0.0)
        self.addCleanup(self.keys.stop)
        self.validator = TokenValidator(self.keys, self.clock)
        self.step = ValidateJwt(header_name="Authorization", openid_config_urls=(self.idp.url,),
                                issuers=(ISSUER,), audiences=(AUDIENCE,))

    def validate(self, token: str) -> object:
        return self.validator.validate(token, self.step, None)  # type: ignore[arg-type]

    @inlineCallbacks
    def started(self) -> Generator[Deferred[Any], Any, None]:
        self.keys.watch_urls([self.idp.url])
        yield self.keys.idle()

    @inlineCallbacks
    def test_rs256_and_es256_via_openid_config(self) -> Generator[Deferred[Any], Any, None]:
        """Discovery → jwks_uri → JWKS is fetched once; RS256 and ES256 tokens then verify."""
        self.assertIn("not been fetched yet", self.validate(sign(self.rsa, "RS256", kid="r1")))
        yield self.started()
        self.assertEqual(self.idp.hits, {"/.well-known/openid-configuration": 1, "/jwks": 1})
        self.assertEqual(self.validate(sign(self.rsa, "RS256", kid="r1"))["sub"], "alice")  # type: ignore[index]
        self.assertIsInstance(self.validate(sign(self.ec, "ES256", kid="e1")), dict)
        self.assertIn("Signature validation failed",
                      self.validate(sign(rsa_key(), "RS256", kid="r1")))
        described = self.keys.describe()[self.idp.url]
        self.assertEqual((described["keys"], described["kids"], described["lastError"]),
                         (2, ["e1", "r1"], None))

    @inlineCallbacks
    def test_periodic_refresh(self) -> Generator[Deferred[Any], Any, None]:
        """Every refresh interval on the clock the keys are fetched again, in the background."""
        yield self.started()
        self.clock.advance(REFRESH - 1)
        self.assertEqual(self.idp.jwks_hits(), 1)
        self.clock.advance(1)
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 2)

    @inlineCallbacks
    def test_key_rotation(self) -> Generator[Deferred[Any], Any, None]:
        """
        The provider switches to a new kid: the first token with it is
        refused (key not found), one background fetch follows, then the
        token is accepted; further unknown kids within the interval fetch
        nothing.
        """
        yield self.started()
        new = rsa_key()
        self.idp.keys = [jwk(new, "r2", "RS256")]
        token = sign(new, "RS256", kid="r2")
        self.assertIn("signing key was not found", self.validate(token))
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 2)
        self.assertIsInstance(self.validate(token), dict)
        self.assertIn("signing key was not found", self.validate(sign(new, "RS256", kid="r3")))
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 2)
        # The old key is gone with the new document.
        self.assertIn("signing key was not found",
                      self.validate(sign(self.rsa, "RS256", kid="r1")))

    @inlineCallbacks
    def test_unknown_kid_rate_limited(self) -> Generator[Deferred[Any], Any, None]:
        """
        Right after the start-up fetch, an unknown kid still refreshes once
        (a rotation is fetched at once); further unknown kids refresh nothing
        until ``unknown_kid_interval`` passed since that refresh.
        """
        yield self.started()
        self.assertIn("not found", self.validate(sign(rsa_key(), "RS256", kid="zz")))
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 2)
        self.clock.advance(UNKNOWN_KID - 1)
        self.assertIn("not found", self.validate(sign(rsa_key(), "RS256", kid="zy")))
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 2)
        self.clock.advance(1)
        self.assertIn("not found", self.validate(sign(rsa_key(), "RS256", kid="zx")))
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 3)

    @inlineCallbacks
    def test_concurrent_unknown_kids_fetch_once(self) -> Generator[Deferred[Any], Any, None]:
        """Many tokens with unknown kids while a refresh runs cause exactly one fetch."""
        yield self.started()
        new = rsa_key()
        self.idp.keys = [jwk(new, "r2", "RS256")]
        self.clock.advance(UNKNOWN_KID)
        for kid in ("r2", "x", "y", "r2"):
            self.assertIsInstance(self.validate(sign(new, "RS256", kid=kid)), str)
        self.assertTrue(self.keys.describe()[self.idp.url]["fetching"])
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 2)
        self.assertEqual(self.keys.describe()[self.idp.url]["fetches"], 2)

    @inlineCallbacks
    def test_failures_keep_the_last_good_keys(self) -> Generator[Deferred[Any], Any, None]:
        """
        A JWKS answering 500, then garbage, then no keys, then a provider
        that is down: every failure is logged with the URL and reason,
        the old keys keep verifying, and the retry after backoff succeeds.
        """
        yield self.started()
        token = sign(self.rsa, "RS256", kid="r1", exp=int(NOW) + 86400)
        reasons = []
        for mode, reason in (("error", "HTTP 500"), ("garbage", "the JWKS is not JSON"),
                             ("empty", "no usable signature key")):
            self.idp.mode = mode
            with capturedLogs() as events:
                self.clock.advance(RETRY_MAX if reasons else REFRESH)
                yield self.keys.idle()
            warned = [e for e in events if e.get("log_level") is not None
                      and e["log_level"].name == "warn"]
            self.assertEqual(len(warned), 1, mode)
            self.assertEqual(warned[0]["url"], self.idp.url)
            self.assertIn(reason, warned[0]["reason"])
            self.assertIsInstance(self.validate(token), dict, mode)
            reasons.append(self.keys.describe()[self.idp.url]["lastError"])
        self.assertEqual(self.keys.describe()[self.idp.url]["failures"], 3)
        self.idp.mode = "ok"
        self.clock.advance(RETRY_MAX)
        yield self.keys.idle()
        described = self.keys.describe()[self.idp.url]
        self.assertEqual((described["failures"], described["lastError"]), (0, None))
        self.assertIsInstance(self.validate(token), dict)

    @inlineCallbacks
    def test_provider_down(self) -> Generator[Deferred[Any], Any, None]:
        """A provider that stopped listening: the fetch fails, the keys stay, a retry is scheduled."""
        yield self.started()
        url = self.idp.url
        yield self.idp.stop()
        self.clock.advance(REFRESH)
        yield self.keys.idle()
        described = self.keys.describe()[url]
        self.assertEqual(described["failures"], 1)
        self.assertIn("refused", str(described["lastError"]).lower())
        token = sign(self.rsa, "RS256", kid="r1", exp=int(NOW) + 86400)
        self.assertIsInstance(self.validate(token), dict)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    @inlineCallbacks
    def test_backoff_doubles(self) -> Generator[Deferred[Any], Any, None]:
        """Retries after failures wait 5, 10, 20 … seconds on the clock, capped."""
        self.idp.mode = "error"
        yield self.started()
        waits = []
        for _ in range(6):
            (call,) = self.clock.getDelayedCalls()
            waits.append(call.getTime() - self.clock.seconds())
            self.clock.advance(waits[-1])
            yield self.keys.idle()
        self.assertEqual(waits, [5.0, 10.0, 20.0, 40.0, 80.0, RETRY_MAX])

    @inlineCallbacks
    def test_dropped_url_stops_refreshing(self) -> Generator[Deferred[Any], Any, None]:
        """A URL the configuration no longer uses is forgotten: no timer, no fetch, no keys."""
        yield self.started()
        self.keys.watch_urls([])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(REFRESH * 3)
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 1)
        self.assertIsNone(self.keys.keys(self.idp.url))
        self.assertEqual(self.keys.describe(), {})

    @inlineCallbacks
    def test_dropped_while_fetching(self) -> Generator[Deferred[Any], Any, None]:
        """Dropping a URL whose fetch hangs cancels the fetch quietly and schedules nothing."""
        self.idp.mode = "hang"
        self.keys.watch_urls([self.idp.url])
        yield self.idp.hanging
        with capturedLogs() as events:
            self.keys.watch_urls([])
            yield self.keys.idle()
        self.assertEqual([e for e in events if e["log_level"].name == "warn"], [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @inlineCallbacks
    def test_unchanged_urls_are_not_refetched(self) -> Generator[Deferred[Any], Any, None]:
        """Watching the same URLs again (a new generation) starts no fetch; a new URL does."""
        yield self.started()
        self.keys.watch_urls([self.idp.url])
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 1)
        other = self.idp.url + "?tenant=2"
        self.keys.watch_urls([self.idp.url, other])
        yield self.keys.idle()
        self.assertEqual(self.idp.jwks_hits(), 2)
        self.assertEqual(sorted(self.keys.describe()), sorted([self.idp.url, other]))


class WiringTests(TestCase):
    """The cache following configurations, and the validator inside the policy executor."""

    def setUp(self) -> None:
        self.idp = IdentityProvider()
        self.rsa = rsa_key()
        self.idp.keys = [jwk(self.rsa, "r1", "RS256")]
        self.idp.start()
        self.addCleanup(self.idp.stop)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.keys = OpenIdKeys(self.clock, http_fetch(reactor))
        self.addCleanup(self.keys.stop)

    def config(self, step: ValidateJwt | None) -> Any:
        if step is None:
            return GatewayConfig()
        entry = RouteEntry(host="", path="/api", match=PREFIX, kind=KIND_API,
                           backend=parse_backend("http://127.0.0.1:9/"),
                           origin=ObjectRef("file", "api", "api"), modified=0.0, label="api",
                           pipelines={None: Pipeline(inbound=(step,))})
        return GatewayConfig(routes=(entry,))

    @inlineCallbacks
    def test_watch_and_executor(self) -> Generator[Deferred[Any], Any, None]:
        """
        ``watch(config)`` fetches the URLs of the configuration's steps; the
        executor's ``run_inbound`` with the validator admits a good token,
        refuses a bad one with the step's status and APIM's reason; the
        next configuration without the step stops the refreshes.
        """
        step = ValidateJwt(header_name="Authorization", openid_config_urls=(self.idp.url,),
                           failed_validation_httpcode=403, output_token_variable_name="jwt")
        self.keys.watch(self.config(step))
        yield self.keys.idle()
        validator = TokenValidator(self.keys, self.clock)

        good = PolicyRequest("GET", "/", headers=[
            ("authorization", "Bearer " + sign(self.rsa, "RS256", kid="r1"))])
        self.assertIs(run_inbound((step,), good, validator), PROCEED)
        self.assertEqual(good.variables["jwt"]["sub"], "alice")  # type: ignore[index]

        bad = PolicyRequest("GET", "/", headers=[
            ("authorization", "Bearer " + sign(rsa_key(), "RS256", kid="r1"))])
        failure = run_inbound((step,), bad, validator)
        assert isinstance(failure, Failure)
        self.assertEqual((failure.reason, failure.response.status), ("TokenInvalid", 403))
        self.assertIn("Signature validation failed", failure.message)

        self.keys.watch(self.config(None))
        self.assertEqual((self.keys.describe(), self.clock.getDelayedCalls()), ({}, []))

    def test_service_stops_the_cache(self) -> None:
        """Stopping the service cancels the refresh timers."""
        self.keys = OpenIdKeys(self.clock, lambda url: Deferred())
        service = OpenIdKeysService(self.keys)
        service.startService()
        self.keys.watch_urls(["https://idp.example/cfg"])
        service.stopService()
        self.assertEqual((self.keys.describe(), self.clock.getDelayedCalls()), ({}, []))
