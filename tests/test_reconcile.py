"""
Tests for :mod:`gateway.reconcile` with TLS: the SNI map is built with the
route table in one generation, certificate expiry is judged by the
reconciler's clock, and an invalid rotation keeps the last valid version.
"""

from __future__ import annotations

import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import Certificate, ObjectRef, Route, RouteSet, SourceObject, Store
from gateway.reconcile import Reconciler
from gateway.testing.certs import CertificateAuthority, IssuedCertificate, private_key_pem
from gateway.tls import DEFAULT, EXACT, SNIMapBuilder, TLSSettings, generate_default_certificate

NOW = time.time()
CA = CertificateAuthority(now=NOW)
WWW = CA.issue("www.example.com")


def certificate(issued: IssuedCertificate, *, key_pem: str | None = None, modified: float = 1.0) -> SourceObject:
    body = Certificate(("www.example.com",), issued.chain_pem, key_pem or issued.key_pem)
    return SourceObject(ObjectRef("memory", "certificate", "www"), modified, body)


def routes(path: str) -> SourceObject:
    return SourceObject(
        ObjectRef("memory", "routes", "r"), 1.0, RouteSet((Route(path, "http://127.0.0.1:1"),))
    )


class ReconcilerTLSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = Store()
        self.builder = SNIMapBuilder(TLSSettings(), generate_default_certificate(NOW))
        self.reconciler = Reconciler(self.store, self.clock, sni=self.builder)
        self.reconciler.startService()
        self.addCleanup(self.reconciler.stopService)

    def rebuild(self) -> object:
        self.clock.advance(1)
        return self.reconciler.current

    def test_sni_map_swapped_with_routes(self) -> None:
        """
        A generation carries the SNI map of its certificates; a change of
        routes only keeps the certificate's OpenSSL context.
        """
        self.store.upsert(certificate(WWW))
        self.store.upsert(routes("/a"))
        first = self.rebuild()
        self.assertEqual(first.sni.select(b"www.example.com")[1], EXACT)
        self.store.upsert(routes("/b"))
        second = self.rebuild()
        self.assertEqual(second.number, first.number + 1)
        self.assertEqual(dict(second.sni._contexts), dict(first.sni._contexts))

    def test_invalid_rotation_keeps_last_valid(self) -> None:
        """A rotation to a mismatched key keeps serving the last valid certificate, with a problem."""
        self.store.upsert(certificate(WWW))
        self.rebuild()
        self.store.upsert(certificate(CA.issue("www.example.com"), key_pem=private_key_pem(), modified=2.0))
        generation = self.rebuild()
        entry, outcome = generation.sni.select(b"www.example.com")
        self.assertEqual((entry.fingerprint, outcome), (WWW.fingerprint, EXACT))
        [problem] = generation.config.problems
        self.assertIn("keeps serving", problem.message)

    def test_expiry_judged_by_the_clock(self) -> None:
        """A certificate loaded after its not-after (by the reconciler's clock) is not served."""
        self.clock.advance(40 * 86400)
        self.store.upsert(certificate(WWW))
        generation = self.rebuild()
        self.assertEqual(generation.sni.select(b"www.example.com")[1], DEFAULT)
        self.assertIn("expired", generation.config.problems[0].message)

    def test_without_tls(self) -> None:
        """A reconciler without an SNI builder builds generations without a map."""
        reconciler = Reconciler(self.store, self.clock)
        reconciler.startService()
        self.addCleanup(reconciler.stopService)
        self.store.upsert(certificate(WWW))
        self.clock.advance(1)
        self.assertIsNone(reconciler.current.sni)
        self.assertEqual(len(reconciler.current.config.certificates), 1)
