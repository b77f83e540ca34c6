"""
Certificate validation and precedence: a :class:`~gateway.model.Certificate`
in, a :class:`CertificateEntry` (or problems) out.

Pure, like the rest of translation: the current time is an input, never
read here. What is checked, in order, each failure a problem with the
object's name:

1. the chain parses as PEM (leaf first) and the key as an unencrypted PEM
   private key of a usable type (RSA of at least 2048 bits, EC, Ed25519,
   Ed448);
2. the key belongs to the leaf (its public key is the leaf's);
3. the leaf has not expired at ``now``;
4. each configured host is covered by one of the leaf's DNS subject
   alternative names (RFC 6125 §6.4.3: a wildcard stands for exactly one
   whole left-most label). An uncovered host is left out of that
   certificate, which still serves its other hosts.

The subject CN is not consulted for coverage: TLS clients stopped honouring
it (RFC 6125 §6.4.4 deprecates it; browsers ignore it), so a certificate
without DNS SANs covers no host here either.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable, Iterable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gateway.model import Certificate, ObjectRef

from ._config import CertificateEntry, Problem

#: Smallest RSA key accepted: OpenSSL's default security level refuses
#: smaller ones, and so do current clients.
MIN_RSA_BITS = 2048

#: ``shadowed_hosts`` marker: configured as default, but a newer default won.
DEFAULT_ROLE = "*"


class InvalidCertificate(ValueError):
    """The certificate cannot be served at all; the message says why."""


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def covers(name: str, host: str) -> bool:
    """
    Whether the certificate name ``name`` (a DNS SAN, lower case) covers the
    configured ``host`` (lower case; ``*.suffix`` for a wildcard host).

    * ``a.example.com`` is covered by ``a.example.com`` and by
      ``*.example.com``, not by ``*.a.example.com`` nor ``*.com``-style
      names one label off;
    * ``*.example.com`` (a wildcard host) is covered only by the very same
      wildcard name: a certificate for one name cannot serve all of them.
    """
    if name == host:
        return True
    if host.startswith("*.") or not name.startswith("*."):
        return False
    label, dot, rest = host.partition(".")
    return bool(label) and bool(dot) and rest == name[2:]


def _load_chain(pem: str) -> list[x509.Certificate]:
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidCertificate("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)")
    try:
        return x509.load_pem_x509_certificates(pem.encode("utf-8", "replace"))
    except ValueError as e:
        raise InvalidCertificate(f"invalid PEM certificate: {_short(e)}") from None


def _load_key(pem: str) -> object:
    if "PRIVATE KEY-----" not in pem:
        raise InvalidCertificate("no PEM private key found (expected -----BEGIN PRIVATE KEY-----)")
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8", "replace"), password=None)
    except TypeError:
        raise InvalidCertificate("the private key is encrypted; give it unencrypted") from None
    except ValueError as e:
        raise InvalidCertificate(f"invalid PEM private key: {_short(e)}") from None
    except UnsupportedAlgorithm as e:
        raise InvalidCertificate(f"unsupported private key: {_short(e)}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidCertificate(
                f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed"
            )
    elif not isinstance(
        key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)
    ):
        raise InvalidCertificate(f"unsupported private key type {type(key).__name__}")
    return key


def _short(error: Exception) -> str:
    # cryptography appends a long FAQ link to PEM errors; the first sentence says it.
    text = str(error) or type(error).__name__
    return text.split(" See https://", 1)[0]


def _dns_names(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    except ValueError as e:
        raise InvalidCertificate(f"invalid certificate extensions: {_short(e)}") from None
    names = extension.value.get_values_for_type(x509.DNSName)
    return tuple(dict.fromkeys(n.lower().rstrip(".") for n in names))


def certificate_entry(
    ref: ObjectRef,
    certificate: Certificate,
    *,
    modified: float = 0.0,
    now: float | None = None,
    normalize_host: Callable[[str], str] | None = None,
) -> tuple[CertificateEntry, list[Problem]]:
    """
    Validate one certificate object.

    :param now: seconds since the epoch for the expiry check; ``None``
        skips it.
    :param normalize_host: ``str -> str`` normalising a configured host
        (raising ``ValueError`` for an invalid one); identity by default.
    :return: the entry and the per-host problems (hosts left out).
    :raises InvalidCertificate: the certificate cannot be served at all.
    """
    chain = _load_chain(certificate.cert_pem)
    key = _load_key(certificate.key_pem)
    public = _spki(key.public_key())  # type: ignore[attr-defined]
    leaf = chain[0]
    if _spki(leaf.public_key()) != public:
        matching = [i for i, c in enumerate(chain) if _spki(c.public_key()) == public]
        if matching:
            raise InvalidCertificate(
                f"the key belongs to certificate {matching[0] + 1} of the chain, not the first: "
                "put the server's own certificate first"
            )
        raise InvalidCertificate("the private key does not match the certificate")
    not_before = leaf.not_valid_before_utc.timestamp()
    not_after = leaf.not_valid_after_utc.timestamp()
    if now is not None and not_after <= now:
        raise InvalidCertificate(f"the certificate expired on {_utc(not_after)}")
    sans = _dns_names(leaf)

    problems: list[Problem] = []
    configured: list[str] = []
    for raw in certificate.hosts:
        try:
            host = normalize_host(raw) if normalize_host is not None else raw
        except ValueError as e:
            problems.append(Problem(ref, f"{e}: left out"))
            continue
        if not host:
            problems.append(Problem(ref, "an empty host name: left out"))
            continue
        if host not in configured:
            configured.append(host)
    if not certificate.hosts:
        configured = [n for n in sans if _valid(n, normalize_host)]
    hosts: list[str] = []
    for host in configured:
        if any(covers(name, host) for name in sans):
            hosts.append(host)
        else:
            shown = ", ".join(sans) if sans else "none"
            problems.append(
                Problem(
                    ref,
                    f"host {host} is not covered by the certificate's names (DNS SANs: {shown}); "
                    "it falls back to the default certificate",
                )
            )
    chain_pem = "".join(
        c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in chain
    )
    key_pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    entry = CertificateEntry(
        ref=ref,
        hosts=tuple(hosts),
        chain_pem=chain_pem,
        key_pem=key_pem,
        is_default=certificate.is_default,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        sans=sans,
        not_before=not_before,
        not_after=not_after,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(":"),
        modified=modified,
    )
    return entry, problems


def _valid(name: str, normalize_host: Callable[[str], str] | None) -> bool:
    if normalize_host is None:
        return True
    try:
        return bool(normalize_host(name))
    except ValueError:
        return False


def check_expiry(entry: CertificateEntry, now: float | None) -> None:
    """
    :raises InvalidCertificate: the leaf has expired at ``now`` (the same
        check :func:`certificate_entry` makes, for an entry validated before).
    """
    if now is not None and entry.not_after <= now:
        raise InvalidCertificate(f"the certificate expired on {_utc(entry.not_after)}")


def keep_previous(
    previous: CertificateEntry | None, now: float | None
) -> CertificateEntry | None:
    """
    The last valid version of a certificate whose new version is invalid,
    if it can still be served: it has not expired at ``now``.
    """
    if previous is None or (now is not None and previous.not_after <= now):
        return None
    return replace(previous, kept=True, shadowed_hosts=())


def _precedence(entry: CertificateEntry) -> tuple[float, ObjectRef]:
    """
    Several certificates for one host (or several defaults): the newest
    object wins, as for routes ("last one wins"); on a tie the smallest
    :class:`ObjectRef`, so the outcome never depends on load order.
    """
    return (-entry.modified, entry.ref)


def resolve_certificates(
    entries: Iterable[CertificateEntry],
) -> tuple[tuple[CertificateEntry, ...], ObjectRef | None]:
    """
    Decide which certificate serves each host and which is the default.

    :return: the entries sorted by ref, each with ``shadowed_hosts`` set to
        the hosts it lost, and the ref of the default certificate (``None``
        when none is configured as default).
    """
    entries = sorted(entries, key=lambda e: e.ref)
    claims: dict[str, list[CertificateEntry]] = defaultdict(list)
    for entry in entries:
        for host in entry.hosts:
            claims[host].append(entry)
        if entry.is_default:
            claims[DEFAULT_ROLE].append(entry)
    lost: dict[ObjectRef, set[str]] = defaultdict(set)
    default: ObjectRef | None = None
    for host, claimants in claims.items():
        ranked = sorted(claimants, key=_precedence)
        if host == DEFAULT_ROLE:
            default = ranked[0].ref
        for loser in ranked[1:]:
            lost[loser.ref].add(host)
    resolved = tuple(
        replace(e, shadowed_hosts=tuple(sorted(lost[e.ref]))) if e.ref in lost else e
        for e in entries
    )
    return resolved, default
