"""
Tests for certificate validation in translation: parsing, key match,
expiry, SAN coverage with wildcard rules, precedence between certificates,
and keeping the last valid version when a rotation is invalid.
"""

from __future__ import annotations

import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import Certificate, ObjectRef, SourceObject
from gateway.testing.certs import CertificateAuthority, IssuedCertificate, private_key_pem
from gateway.translate import covers, translate

NOW = time.time()
CA = CertificateAuthority(now=NOW)
WWW = CA.issue("www.example.com", "example.com")
WILD = CA.issue("*.example.com")


def cert(
    name: str,
    issued: IssuedCertificate,
    hosts: tuple[str, ...] = (),
    *,
    default: bool = False,
    modified: float = 1.0,
    key_pem: str | None = None,
    cert_pem: str | None = None,
    source: str = "file",
) -> SourceObject:
    body = Certificate(
        hosts,
        issued.chain_pem if cert_pem is None else cert_pem,
        issued.key_pem if key_pem is None else key_pem,
        default,
    )
    return SourceObject(ObjectRef(source, "certificate", name), modified, body)


def messages(config: object) -> list[str]:
    return [p.message for p in config.problems]  # type: ignore[attr-defined]


class ValidationTests(SynchronousTestCase):
    def test_valid_certificate_facts(self) -> None:
        """
        A valid certificate becomes an entry with its subject, issuer, DNS
        SANs, validity, SHA-256 fingerprint, its hosts and its chain.
        """
        config = translate([cert("www", WWW, ("WWW.Example.com.",), modified=5.0)], now=NOW)
        self.assertEqual(config.problems, ())
        [entry] = config.certificates
        self.assertEqual(entry.hosts, ("www.example.com",))
        self.assertEqual(entry.subject, "CN=www.example.com")
        self.assertEqual(entry.issuer, "CN=apimgw test CA")
        self.assertEqual(entry.sans, ("www.example.com", "example.com"))
        self.assertEqual(entry.fingerprint, WWW.fingerprint)
        self.assertEqual(entry.not_after, WWW.certificate.not_valid_after_utc.timestamp())
        self.assertEqual(entry.not_before, WWW.certificate.not_valid_before_utc.timestamp())
        self.assertEqual(entry.modified, 5.0)
        self.assertEqual(entry.chain_pem, WWW.chain_pem)
        self.assertIn("PRIVATE KEY", entry.key_pem)
        self.assertNotIn("PRIVATE", repr(entry))

    def test_invalid_pem(self) -> None:
        """A chain that is not PEM, or a garbled PEM, is a problem naming the object; nothing is served."""
        broken = WWW.cert_pem.replace("\n", "", 3)[:200] + "\n-----END CERTIFICATE-----\n"
        for pem in ("not a certificate", broken):
            config = translate([cert("www", WWW, ("www.example.com",), cert_pem=pem)], now=NOW)
            self.assertEqual(config.certificates, ())
            [problem] = config.problems
            self.assertEqual(str(problem.ref), "file:certificate/www")
            self.assertIn("certificate", problem.message)

    def test_invalid_or_missing_key(self) -> None:
        """A missing key, a garbled key and an encrypted key are problems."""
        key = serialization.load_pem_private_key(WWW.key_pem.encode(), None)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ).decode()
        cases = {
            WWW.cert_pem: "no PEM private key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n": "invalid PEM private key",
            encrypted: "encrypted",
        }
        for key_pem, expected in cases.items():
            config = translate([cert("www", WWW, key_pem=key_pem)], now=NOW)
            self.assertEqual(config.certificates, ())
            self.assertIn(expected, messages(config)[0])

    def test_combined_pem(self) -> None:
        """The chain and key in one PEM (no separate key) are read from it."""
        combined = WWW.chain_pem + WWW.key_pem
        config = translate([cert("www", WWW, cert_pem=combined, key_pem=combined)], now=NOW)
        self.assertEqual(config.problems, ())
        self.assertEqual(config.certificates[0].fingerprint, WWW.fingerprint)

    def test_key_does_not_match(self) -> None:
        """A key that belongs to another certificate is a problem; the certificate is left out."""
        config = translate([cert("www", WWW, key_pem=private_key_pem())], now=NOW)
        self.assertEqual(config.certificates, ())
        self.assertEqual(
            messages(config),
            ["the private key does not match the certificate; "
             "its hosts fall back to the default certificate"],
        )

    def test_chain_in_the_wrong_order(self) -> None:
        """A chain with the issuer first is reported as such, not as a wrong key."""
        reversed_chain = CA.cert_pem + WWW.cert_pem
        config = translate([cert("www", WWW, cert_pem=reversed_chain)], now=NOW)
        self.assertIn("belongs to certificate 2 of the chain", messages(config)[0])

    def test_expired(self) -> None:
        """A certificate whose not-after has passed is a problem; without a time it is not checked."""
        old = CA.issue("old.example.com", not_before=NOW - 86400 * 10, not_after=NOW - 1)
        config = translate([cert("old", old, ("old.example.com",))], now=NOW)
        self.assertEqual(config.certificates, ())
        self.assertIn("the certificate expired on ", messages(config)[0])
        self.assertEqual(len(translate([cert("old", old)]).certificates), 1)

    def test_small_rsa_key(self) -> None:
        """An RSA key under 2048 bits is refused (OpenSSL and clients would refuse it too)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "small")])
        leaf = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(WWW.certificate.not_valid_before_utc)
            .not_valid_after(WWW.certificate.not_valid_after_utc)
            .sign(key, hashes.SHA256())
        )
        cert_pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        config = translate([cert("small", WWW, cert_pem=cert_pem, key_pem=key_pem)], now=NOW)
        self.assertIn("1024 bits", messages(config)[0])

    def test_host_not_covered(self) -> None:
        """
        A configured host the SANs do not cover is a problem and left out;
        the certificate still serves its other hosts.
        """
        config = translate(
            [cert("www", WWW, ("www.example.com", "api.example.com", "*.example.com"))], now=NOW
        )
        self.assertEqual(config.certificates[0].hosts, ("www.example.com",))
        self.assertEqual(len(config.problems), 2)
        self.assertIn("host api.example.com is not covered", messages(config)[0])
        self.assertIn("DNS SANs: www.example.com, example.com", messages(config)[0])
        self.assertIn("host *.example.com is not covered", messages(config)[1])

    def test_invalid_host(self) -> None:
        """An invalid configured host is a problem; the valid ones are served."""
        config = translate([cert("www", WWW, ("www.example.com", "bad host"))], now=NOW)
        self.assertEqual(config.certificates[0].hosts, ("www.example.com",))
        self.assertIn("invalid host 'bad host'", messages(config)[0])

    def test_no_hosts_means_its_own_names(self) -> None:
        """With no host configured a certificate serves its DNS SANs."""
        config = translate([cert("wild", WILD)], now=NOW)
        self.assertEqual(config.certificates[0].hosts, ("*.example.com",))
        self.assertEqual(config.problems, ())

    def test_no_sans(self) -> None:
        """A certificate without DNS SANs covers no configured host (the CN is not used)."""
        bare = CA.issue(common_name="www.example.com")
        config = translate([cert("bare", bare, ("www.example.com",))], now=NOW)
        self.assertEqual(config.certificates[0].hosts, ())
        self.assertIn("DNS SANs: none", messages(config)[0])


class CoverageTests(SynchronousTestCase):
    def test_wildcard_rules(self) -> None:
        """
        *.example.com covers one extra label only; a wildcard host needs the
        same wildcard name; exact names match exactly.
        """
        cases = [
            ("www.example.com", "www.example.com", True),
            ("www.example.com", "api.example.com", False),
            ("*.example.com", "a.example.com", True),
            ("*.example.com", "a.b.example.com", False),
            ("*.example.com", "example.com", False),
            ("*.example.com", "*.example.com", True),
            ("a.example.com", "*.example.com", False),
            ("*.b.example.com", "*.example.com", False),
            ("*.example.com", "xexample.com", False),
        ]
        for name, host, expected in cases:
            self.assertEqual(covers(name, host), expected, (name, host))


class PrecedenceTests(SynchronousTestCase):
    def test_newest_certificate_serves_a_host(self) -> None:
        """Two certificates for one host: the newer object serves it; the other records the loss."""
        other = CA.issue("www.example.com")
        config = translate(
            [
                cert("a", WWW, ("www.example.com", "example.com"), modified=1.0),
                cert("b", other, ("www.example.com",), modified=2.0),
            ],
            now=NOW,
        )
        a, b = config.certificates
        self.assertEqual((a.served_hosts, a.shadowed_hosts), (("example.com",), ("www.example.com",)))
        self.assertEqual((b.served_hosts, b.shadowed_hosts), (("www.example.com",), ()))

    def test_tie_goes_to_smallest_ref_whatever_the_order(self) -> None:
        """On equal times the smallest ref wins, independent of the input order."""
        other = CA.issue("www.example.com")
        objects = [
            cert("b", other, ("www.example.com",), source="memory"),
            cert("a", WWW, ("www.example.com",), source="memory"),
        ]
        for ordering in (objects, objects[::-1]):
            config = translate(ordering, now=NOW)
            self.assertEqual([c.served_hosts for c in config.certificates], [("www.example.com",), ()])

    def test_default_certificate(self) -> None:
        """The newest certificate configured as default is the default; none configured: None."""
        self.assertIsNone(translate([cert("www", WWW)], now=NOW).default_certificate)
        config = translate(
            [cert("a", WWW, default=True, modified=1.0), cert("b", WILD, default=True, modified=3.0)],
            now=NOW,
        )
        self.assertEqual(str(config.default_certificate), "file:certificate/b")
        self.assertEqual(config.certificates[0].shadowed_hosts, ("*",))


class RotationTests(SynchronousTestCase):
    def test_invalid_rotation_keeps_last_valid(self) -> None:
        """
        A certificate object whose new version is invalid keeps its previous
        valid version (marked kept), and the problem is still reported.
        """
        first = translate([cert("www", WWW, ("www.example.com",))], now=NOW)
        broken = cert("www", CA.issue("www.example.com"), ("www.example.com",),
                      key_pem=private_key_pem(), modified=2.0)
        second = translate([broken], now=NOW, previous=first)
        [entry] = second.certificates
        self.assertEqual((entry.fingerprint, entry.kept), (WWW.fingerprint, True))
        self.assertIn("keeps serving", messages(second)[0])
        third = translate([broken], now=NOW, previous=second)
        self.assertEqual(third.certificates[0].fingerprint, WWW.fingerprint)

    def test_valid_rotation_replaces(self) -> None:
        """A valid new version replaces the previous one."""
        first = translate([cert("www", WWW, ("www.example.com",))], now=NOW)
        renewed = CA.issue("www.example.com")
        second = translate([cert("www", renewed, ("www.example.com",))], now=NOW, previous=first)
        self.assertEqual(second.certificates[0].fingerprint, renewed.fingerprint)
        self.assertFalse(second.certificates[0].kept)

    def test_expired_previous_not_kept(self) -> None:
        """The last valid version is not kept once it has expired itself."""
        short = CA.issue("www.example.com", not_after=NOW + 10)
        first = translate([cert("www", short, ("www.example.com",))], now=NOW)
        broken = cert("www", WWW, key_pem=private_key_pem())
        later = translate([broken], now=NOW + 20, previous=first)
        self.assertEqual(later.certificates, ())
        self.assertIn("fall back to the default", messages(later)[0])

    def test_deleted_certificate_not_kept(self) -> None:
        """A certificate object that is gone is gone: nothing of it is kept."""
        first = translate([cert("www", WWW)], now=NOW)
        self.assertEqual(translate([], now=NOW, previous=first).certificates, ())
