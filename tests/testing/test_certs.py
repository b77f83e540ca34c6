"""
Tests for :mod:`gateway.testing.certs`, the certificate builders the suite
(and users' own tests) rely on.
"""

from __future__ import annotations

import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.trial.unittest import SynchronousTestCase

from gateway.testing.certs import CertificateAuthority, private_key_pem, self_signed


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class CertificateAuthorityTests(SynchronousTestCase):
    def test_issued_leaf(self) -> None:
        """
        An issued certificate is signed by the CA, names its DNS SANs, has the
        first name as CN, is valid now, and its key matches it.
        """
        ca = CertificateAuthority()
        issued = ca.issue("www.example.com", "*.example.com")
        leaf = issued.certificate
        leaf.verify_directly_issued_by(ca.certificate)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["www.example.com", "*.example.com"])
        self.assertEqual(leaf.subject.rfc4514_string(), "CN=www.example.com")
        now = time.time()
        self.assertLess(leaf.not_valid_before_utc.timestamp(), now)
        self.assertGreater(leaf.not_valid_after_utc.timestamp(), now)
        key = serialization.load_pem_private_key(issued.key_pem.encode(), None)
        self.assertEqual(_spki(key.public_key()), _spki(leaf.public_key()))
        self.assertIsInstance(key, ec.EllipticCurvePrivateKey)

    def test_chain_and_validity(self) -> None:
        """chain_pem is the leaf then the CA; explicit validity bounds and RSA keys are honoured."""
        ca = CertificateAuthority()
        issued = ca.issue("a.test", not_before=1_000_000_000, not_after=1_000_086_400, key_type="rsa")
        chain = x509.load_pem_x509_certificates(issued.chain_pem.encode())
        self.assertEqual([c.subject for c in chain], [issued.certificate.subject, ca.certificate.subject])
        self.assertEqual(issued.certificate.not_valid_after_utc.timestamp(), 1_000_086_400)
        key = serialization.load_pem_private_key(issued.key_pem.encode(), None)
        self.assertIsInstance(key, rsa.RSAPrivateKey)
        self.assertEqual(len(issued.fingerprint.split(":")), 32)

    def test_self_signed_and_stray_key(self) -> None:
        """A self-signed certificate is its own issuer; private_key_pem is a key of no certificate."""
        issued = self_signed("solo.test")
        self.assertEqual(issued.certificate.issuer, issued.certificate.subject)
        self.assertEqual(issued.chain_pem, issued.cert_pem)
        stray = serialization.load_pem_private_key(private_key_pem().encode(), None)
        self.assertNotEqual(_spki(stray.public_key()), _spki(issued.certificate.public_key()))
        self.assertRaises(ValueError, self_signed, "x.test", key_type="dsa")
