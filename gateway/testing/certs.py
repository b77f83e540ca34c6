"""
Certificates for tests: a tiny certificate authority and the leaf
certificates it issues, built with ``cryptography`` in memory.

Tests need real certificates (the gateway parses them and real TLS clients
check them), with names, validity windows and keys chosen per test: an
expired one, one whose key belongs to another, one for ``*.example.com``.
Generating them in the test keeps the suite free of PEM files that expire.
EC P-256 keys are the default because they take a millisecond to make;
RSA is available for the cases that need it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "IssuedCertificate", "private_key_pem", "self_signed"]

_DAY = 86400.0

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")


def _key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def private_key_pem(key_type: str = "ec") -> str:
    """A fresh private key, PKCS#8 PEM (for "the key does not match" cases)."""
    return _key_pem(_new_key(key_type))


@dataclass(frozen=True)
class IssuedCertificate:
    """
    A certificate and its key.

    :ivar cert_pem: the leaf alone, PEM.
    :ivar chain_pem: the leaf followed by its issuer (for a CA-issued
        certificate), the way a server's chain file is written.
    :ivar key_pem: its private key, PKCS#8 PEM, unencrypted.
    :ivar certificate: the parsed leaf, for assertions.
    """

    cert_pem: str
    chain_pem: str
    key_pem: str = field(repr=False)
    certificate: x509.Certificate = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the leaf's DER, as lower-case hex pairs joined by ``:``."""
        return self.certificate.fingerprint(hashes.SHA256()).hex(":")

    @property
    def serial(self) -> int:
        return self.certificate.serial_number


def _build(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: object,
    signing_key: PrivateKey,
    *,
    names: tuple[str, ...],
    not_before: float,
    not_after: float,
    ca: bool,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(_when(not_before))
        .not_valid_after(_when(not_after))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class CertificateAuthority:
    """
    A certificate authority that lives in memory for one test.

    :ivar cert_pem: the CA's own certificate, PEM: the trust root a client
        is given to verify what this CA issued.
    """

    def __init__(
        self, name: str = "apimgw test CA", *, key_type: str = "ec", now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        self._key = _new_key(key_type)
        self._name = _name(name)
        self.certificate = _build(
            self._name,
            self._name,
            self._key.public_key(),
            self._key,
            names=(),
            not_before=now - _DAY,
            not_after=now + 3650 * _DAY,
            ca=True,
        )
        self.cert_pem = _cert_pem(self.certificate)

    def issue(
        self,
        *names: str,
        common_name: str | None = None,
        not_before: float | None = None,
        not_after: float | None = None,
        key_type: str = "ec",
    ) -> IssuedCertificate:
        """
        A server certificate for the DNS ``names`` (its subject alternative
        names), valid from a day ago for thirty days unless told otherwise.

        :param common_name: the subject's CN; the first name by default.
        :param not_before: start of validity, seconds since the epoch.
        :param not_after: end of validity, seconds since the epoch.
        """
        now = time.time()
        key = _new_key(key_type)
        cn = common_name if common_name is not None else (names[0] if names else "apimgw test")
        leaf = _build(
            _name(cn),
            self._name,
            key.public_key(),
            self._key,
            names=names,
            not_before=now - _DAY if not_before is None else not_before,
            not_after=now + 30 * _DAY if not_after is None else not_after,
            ca=False,
        )
        leaf_pem = _cert_pem(leaf)
        return IssuedCertificate(leaf_pem, leaf_pem + self.cert_pem, _key_pem(key), leaf)


def self_signed(
    *names: str,
    common_name: str | None = None,
    not_before: float | None = None,
    not_after: float | None = None,
    key_type: str = "ec",
) -> IssuedCertificate:
    """
    A self-signed server certificate for the DNS ``names``, valid from a day
    ago for thirty days unless told otherwise (``chain_pem`` is the
    certificate alone).
    """
    now = time.time()
    key = _new_key(key_type)
    name = _name(common_name if common_name is not None else (names[0] if names else "self-signed"))
    cert = _build(
        name,
        name,
        key.public_key(),
        key,
        names=names,
        not_before=now - _DAY if not_before is None else not_before,
        not_after=now + 30 * _DAY if not_after is None else not_after,
        ca=False,
    )
    pem = _cert_pem(cert)
    return IssuedCertificate(pem, pem, _key_pem(key), cert)
