"""Tests for the ``/config`` dump of certificates."""

from __future__ import annotations

import json
import time

from twisted.trial.unittest import SynchronousTestCase

from gateway.model import Certificate, ObjectRef, Route, RouteSet, SourceObject
from gateway.observability import describe_generation
from gateway.reconcile import Generation
from gateway.routing import RouteTable
from gateway.testing.certs import CertificateAuthority
from gateway.translate import translate


class CertificateDumpTests(SynchronousTestCase):
    def test_certificates_described_without_keys(self) -> None:
        """
        Each certificate is listed with subject, issuer, SANs, validity,
        fingerprint, served hosts and default flag; no PEM or key appears,
        and a route's httpsRedirect is shown.
        """
        now = time.time()
        issued = CertificateAuthority().issue("www.example.com")
        objects = [
            SourceObject(
                ObjectRef("file", "certificate", "www"), now,
                Certificate(("www.example.com",), issued.chain_pem, issued.key_pem, True),
            ),
            SourceObject(
                ObjectRef("file", "routes", "routes"), now,
                RouteSet((Route("/", "http://127.0.0.1:1", https_redirect=True),)),
            ),
        ]
        config = translate(objects, now=now)
        generation = Generation(3, config, RouteTable.build(config.routes), now)
        dump = describe_generation(generation)
        [certificate] = dump["certificates"]
        self.assertEqual(
            {k: certificate[k] for k in ("object", "hosts", "default", "subject", "sans")},
            {"object": "file:certificate/www", "hosts": ["www.example.com"], "default": True,
             "subject": "CN=www.example.com", "sans": ["www.example.com"]},
        )
        self.assertEqual(certificate["fingerprintSha256"], issued.fingerprint)
        self.assertEqual(certificate["issuer"], "CN=apimgw test CA")
        self.assertTrue(certificate["notAfter"].endswith("Z"))
        self.assertIs(certificate["keptLastValid"], False)
        self.assertEqual(dump["defaultCertificate"], {"object": "file:certificate/www"})
        self.assertIs(dump["routes"][0]["httpsRedirect"], True)
        text = json.dumps(dump)
        self.assertNotIn("BEGIN", text)
        self.assertNotIn("PRIVATE", text)
