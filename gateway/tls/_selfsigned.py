"""
The generated default certificate: what the HTTPS listener serves when the
configuration names no default certificate, so that HTTPS works from the
first start (clients will not trust it; it says so in its name).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.model import Certificate, ObjectRef
from gateway.translate import CertificateEntry, certificate_entry

#: The object the generated certificate is reported as (metrics, ``/config``).
SELF_SIGNED_REF = ObjectRef("builtin", "certificate", "self-signed")

#: Its subject's common name.
SELF_SIGNED_NAME = "apimgw default"

_VALIDITY = timedelta(days=365)


def generate_default_certificate(now: float) -> CertificateEntry:
    """
    A new self-signed certificate (EC P-256, CN ``apimgw default``, valid
    for a year from an hour before ``now``), as a validated entry.

    EC rather than RSA: generated in about a millisecond at start-up, and
    its handshakes cost the server less.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SELF_SIGNED_NAME)])
    start = datetime.fromtimestamp(now, timezone.utc) - timedelta(hours=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate = Certificate(
        hosts=(),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
        is_default=True,
    )
    entry, _ = certificate_entry(SELF_SIGNED_REF, certificate, now=now)
    return entry
