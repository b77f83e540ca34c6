"""
The config feed over HTTPS: ``apimgw-config`` listening with a strports
``ssl:`` description and a certificate from a test CA, the cloud source
trusting that CA through ``ca`` (``config.service.ca``); and the one
warning when the token would travel over plain HTTP to a remote host.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gateway.model import Store
from gateway.sources.cloud import CloudSource, cleartext_remote
from gateway.testing.certs import CertificateAuthority

from .test_source import GATEWAY, CloudTestCase


class HttpsFeedTests(CloudTestCase):
    """The service's gateway listener on TLS, with a certificate for ``localhost``."""

    @inlineCallbacks
    def setUp(self) -> Any:
        self.ca = CertificateAuthority()
        issued = self.ca.issue("localhost")
        directory = tempfile.mkdtemp()
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        with open(cert, "w") as f:
            f.write(issued.chain_pem)
        with open(key, "w") as f:
            f.write(issued.key_pem)
        self.ca_file = os.path.join(directory, "ca.pem")
        with open(self.ca_file, "w") as f:
            f.write(self.ca.cert_pem)
        self.options = ["--listen",
                        f"ssl:0:interface=127.0.0.1:certKey={cert}:privateKey={key}"]
        yield super().setUp()

    def endpoint(self, port: int | None = None) -> str:
        return f"https://localhost:{port or self.gateway_port}"

    @inlineCallbacks
    def test_feedOverHttps(self) -> Any:
        """
        A source trusting the service's CA fetches the snapshot, follows the
        feed and sends its heartbeat over TLS, and warns about nothing.
        """
        store = Store()
        source = self.source(store, ca=self.ca_file)
        yield source.when_synced()
        self.assertIsNotNone(self.api_of(store, "echo"))
        yield self.assigned_api("late", "late")
        yield self.settle(lambda: self.api_of(store, "late") is not None)

        @inlineCallbacks
        def listed() -> Any:
            answer = yield self.ok("GET", f"/gateways/{GATEWAY}/instances")
            return answer["count"] == 1

        yield self.wait_for(listed)
        self.assertEqual(self.logged("in clear"), [])

    @inlineCallbacks
    def test_untrustedCertificateRefused(self) -> Any:
        """
        Without the CA the service's certificate is not trusted: nothing is
        applied and the failure is logged as unreachable, not ignored.
        """
        store = Store()
        source = self.source(store)
        yield self.settle(lambda: self.logged("cannot be reached"))
        self.assertNoResult(source.when_synced())
        self.assertEqual(store.objects(), ())

    def test_badCaRefusedAtStart(self) -> None:
        """A CA setting that holds no certificate fails the construction, not the first request."""
        with self.assertRaises(ValueError):
            CloudSource(Store(), self.endpoint(), self.token_value, reactor=None,
                        ca="-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")


class CleartextWarningTests(TestCase):
    """The warning about a token sent over plain HTTP to a remote host."""

    def test_cleartextRemote(self) -> None:
        """Plain http:// to a remote name or address is cleartext; loopback and https are not."""
        for endpoint in ("http://config.example.com", "http://10.0.0.5:8090",
                         "HTTP://config.example.com/", "http://[2001:db8::1]:80"):
            self.assertTrue(cleartext_remote(endpoint), endpoint)
        for endpoint in ("https://config.example.com", "http://127.0.0.1:8090",
                         "http://127.9.9.9", "http://localhost:8090", "http://[::1]:8090",
                         "http://api.localhost"):
            self.assertFalse(cleartext_remote(endpoint), endpoint)

    def _start(self, endpoint: str) -> list[str]:
        from twisted.internet import reactor
        from twisted.internet.task import Clock
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        token = "GatewayKey gw&209912312359&" + "A" * 86 + "=="
        source = CloudSource(Store(), endpoint, token, reactor=reactor, clock=Clock())
        source.startService()
        source.stopService()
        source.startService()  # a restart does not repeat it
        source.stopService()
        return [m for m in (formatEvent(e) for e in events) if "in clear" in m]

    def test_warnedOnceForCleartext(self) -> None:
        """Starting with plain http:// to a remote host logs one clear warning naming it."""
        (line,) = self._start("http://192.0.2.1:9")
        self.assertIn("http://192.0.2.1:9", line)
        self.assertIn("https://", line)

    def test_quietForLoopbackAndHttps(self) -> None:
        """Loopback over http and any host over https start without the warning."""
        self.assertEqual(self._start("http://127.0.0.1:9"), [])
        self.assertEqual(self._start("https://192.0.2.1:9"), [])
