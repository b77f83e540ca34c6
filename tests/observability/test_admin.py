"""
Tests for the admin port's resource, its optional bearer token for
``/config`` and its listener.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from gateway.observability import AdminListener, AdminResource, AdminToken, GatewayMetrics, Health
from gateway.settings import SETTINGS
from gateway.testing.waiting import wait_for


class _Generations:
    """Stands for the reconciler: no live generation yet."""

    current = None


def _resource(token: str | None = None) -> AdminResource:
    return AdminResource(GatewayMetrics(clock=lambda: 0.0), Health(), _Generations(), token=token)


def _get(resource: AdminResource, path: bytes, authorization: bytes | None = None) -> DummyRequest:
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.path = path
    if authorization is not None:
        request.requestHeaders.setRawHeaders(b"authorization", [authorization])
    body = resource.render(request)
    request.write(body)
    request.finish()
    return request


def _status(request: DummyRequest) -> int:
    return request.responseCode or 200


class AdminTokenTests(SynchronousTestCase):
    """The expected token, given literally or as a file that is re-read when it changes."""

    def test_literal(self) -> None:
        """A literal token matches itself only (surrounding blanks trimmed)."""
        token = AdminToken(" s3cret-token ")
        self.assertIsNone(token.path)
        self.assertTrue(token.matches(b"s3cret-token"))
        for wrong in (b"s3cret-toke", b"s3cret-token2", b"", b"S3CRET-TOKEN"):
            self.assertFalse(token.matches(wrong))

    def test_file_reread_when_it_changes(self) -> None:
        """A path names a file whose (trimmed) content is the token, read again after a change."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("first-token\n")
        token = AdminToken(os.path.abspath(path))
        self.assertEqual(token.path, os.path.abspath(path))
        self.assertTrue(token.matches(b"first-token"))
        with open(path, "w") as f:
            f.write("second-token-longer\n")
        self.assertFalse(token.matches(b"first-token"))
        self.assertTrue(token.matches(b"second-token-longer"))

    def test_missing_or_empty_file_refuses_everything(self) -> None:
        """A file that is missing or empty lets nobody in (fail closed), and says why once."""
        events: list[dict[str, Any]] = []
        path = os.path.abspath(self.mktemp())
        token = AdminToken(path, observer=events.append)
        self.assertFalse(token.matches(b""))
        self.assertFalse(token.matches(path.encode()))
        self.assertEqual(len(events), 1)
        with open(path, "w") as f:
            f.write("\n")
        self.assertFalse(token.matches(b""))
        self.assertEqual(len(events), 2)

    def test_relative_path(self) -> None:
        """A value starting with ``.`` is a relative path, not a token."""
        self.assertEqual(AdminToken("./admin-token").path, "./admin-token")


class AdminResourceTests(SynchronousTestCase):
    """The admin paths, and the token check on ``/config``."""

    def test_open_without_token(self) -> None:
        """With no token configured, ``/config`` answers 200 to anyone (the documented default)."""
        request = _get(_resource(), b"/config")
        self.assertEqual(_status(request), 200)
        self.assertIn("routes", json.loads(b"".join(request.written)))

    def test_config_needs_the_token(self) -> None:
        """
        No token or a wrong one is 401 with ``WWW-Authenticate: Bearer`` and
        the APIM envelope; the right one is 200.
        """
        resource = _resource("s3cret-token")
        for authorization, error in (
            (None, None),
            (b"Bearer wrong", b'error="invalid_token"'),
            (b"Basic czNjcmV0LXRva2Vu", None),
            (b"Bearer", None),
        ):
            request = _get(resource, b"/config", authorization)
            self.assertEqual(_status(request), 401, authorization)
            (challenge,) = request.responseHeaders.getRawHeaders(b"www-authenticate")
            self.assertTrue(challenge.startswith(b"Bearer realm="), challenge)
            if error is not None:
                self.assertIn(error, challenge)
            body = json.loads(b"".join(request.written))
            self.assertEqual(body["statusCode"], 401)
            self.assertIn("admin token", body["message"])
            self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])
        for authorization in (b"Bearer s3cret-token", b"bearer  s3cret-token "):
            request = _get(resource, b"/config", authorization)
            self.assertEqual(_status(request), 200, authorization)

    def test_probes_and_metrics_stay_open(self) -> None:
        """``/metrics``, ``/healthz`` and ``/readyz`` need no token: probes and scrapers send none."""
        resource = _resource("s3cret-token")
        self.assertEqual(_status(_get(resource, b"/metrics")), 200)
        self.assertEqual(_status(_get(resource, b"/healthz")), 200)
        self.assertEqual(_status(_get(resource, b"/readyz")), 503)
        self.assertTrue(resource.protected)
        self.assertFalse(_resource().protected)


class AdminListenerTests(TestCase):
    """The listener: loopback by default, and a warning when it is exposed without a token."""

    def listen(self, description: str, token: str | None) -> Any:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        listener = AdminListener(reactor, description, _resource(token))
        listener.startService()
        self.addCleanup(listener.stopService)
        d = wait_for(lambda: listener.port is not None, 5, "the admin port listening", interval=0.01)
        return d.addCallback(lambda _: (listener, [e for e in events if e.get("log_level") is not None
                                                   and e["log_level"].name == "warn"]))

    @inlineCallbacks
    def test_default_is_loopback(self) -> Any:
        """The default admin description binds 127.0.0.1 only, and warns about nothing."""
        (default,) = [s.default for s in SETTINGS if s.name == "gateway.listen.admin"]
        self.assertEqual(default, "tcp:8082:interface=127.0.0.1")
        listener, warnings = yield self.listen(default.replace(":8082:", ":0:"), None)
        self.assertEqual(listener.port.getHost().host, "127.0.0.1")
        self.assertEqual(warnings, [])

    @inlineCallbacks
    def test_all_interfaces_without_token_warns(self) -> Any:
        """Listening on every interface with ``/config`` open logs one warning naming the setting."""
        listener, warnings = yield self.listen("tcp:0", None)
        self.assertEqual(listener.port.getHost().host, "0.0.0.0")
        (warning,) = warnings
        self.assertIn("gateway.admin.token", warning["log_format"])

    @inlineCallbacks
    def test_all_interfaces_with_token_is_quiet(self) -> Any:
        """With a token, listening on every interface is not warned about."""
        _, warnings = yield self.listen("tcp:0", "s3cret-token")
        self.assertEqual(warnings, [])

    def test_port_in_use_stops_the_reactor(self) -> None:
        """A port that cannot be bound is logged and stops the process, as for the traffic ports."""
        from twisted.internet.error import CannotListenError
        from twisted.internet.testing import MemoryReactor

        class Refusing(MemoryReactor):
            stopped = False

            def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
                raise CannotListenError(interface, port, OSError("address in use"))

            def stop(self) -> None:
                self.stopped = True

        fake = Refusing()
        listener = AdminListener(fake, "tcp:8082:interface=127.0.0.1", _resource(None))
        listener.startService()
        self.assertTrue(fake.stopped)
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)
        self.assertIsNone(listener.port)
