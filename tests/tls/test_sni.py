"""
Tests for :mod:`gateway.tls`: the SNI map's lookup order, handshakes in
memory (no sockets) that land on the chosen certificate with ALPN intact,
context reuse between generations, the protocol settings, the generated
default certificate, and the handshake counting of the TLS factory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import Certificate, ObjectRef, SourceObject
from gateway.testing.certs import CertificateAuthority, IssuedCertificate
from gateway.tls import (
    DEFAULT,
    EXACT,
    FAILED,
    SELF_SIGNED_REF,
    WILDCARD,
    SNIConnectionCreator,
    SNIMapBuilder,
    TLSServerFactory,
    TLSSettings,
    generate_default_certificate,
)
from gateway.translate import GatewayConfig, translate

NOW = time.time()
CA = CertificateAuthority(now=NOW)
WWW = CA.issue("www.example.com")
WILD = CA.issue("*.example.com")
FALLBACK = generate_default_certificate(NOW)


def config(*certs: tuple[str, IssuedCertificate, tuple[str, ...], bool]) -> GatewayConfig:
    objects = [
        SourceObject(
            ObjectRef("test", "certificate", name), 1.0,
            Certificate(hosts, issued.chain_pem, issued.key_pem, default),
        )
        for name, issued, hosts, default in certs
    ]
    return translate(objects, now=NOW)


STANDARD = config(
    ("www", WWW, ("www.example.com",), False),
    ("wild", WILD, ("*.example.com",), False),
)
WWW_ENTRY, WILD_ENTRY = (
    next(c for c in STANDARD.certificates if c.ref.name == name) for name in ("www", "wild")
)


class _AppData:
    sni_outcome: str | None = None


def _pump(client: SSL.Connection, server: SSL.Connection) -> None:
    """Move bytes between two memory-BIO connections until the handshake settles."""
    for _ in range(20):
        for sender, receiver in ((client, server), (server, client)):
            try:
                sender.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                receiver.bio_write(sender.bio_read(65536))
            except SSL.WantReadError:
                pass


def client(
    server_name: bytes | None,
    alpn: list[bytes] | None = None,
    maximum: int | None = None,
) -> SSL.Connection:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if alpn:
        context.set_alpn_protos(alpn)
    if maximum is not None:
        context.set_max_proto_version(maximum)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    if server_name is not None:
        connection.set_tlsext_host_name(server_name)
    return connection


def handshake(sni_map: Any, server_name: bytes | None, **kw: Any) -> tuple[SSL.Connection, _AppData]:
    app = _AppData()
    server = sni_map.connection(app)
    server.set_accept_state()
    peer = client(server_name, **kw)
    _pump(peer, server)
    return peer, app


def fingerprint(connection: SSL.Connection) -> str:
    cert: x509.Certificate = connection.get_peer_certificate(as_cryptography=True)
    return cert.fingerprint(hashes.SHA256()).hex(":")


class SelectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.builder = SNIMapBuilder(TLSSettings(), FALLBACK)
        self.map, problems = self.builder.build(STANDARD)
        self.assertEqual(problems, ())

    def test_lookup_order(self) -> None:
        """Exact name, then a one-label wildcard, then the default; case and a trailing dot ignored."""
        cases = {
            b"www.example.com": ("test:certificate/www", EXACT),
            b"WWW.EXAMPLE.COM.": ("test:certificate/www", EXACT),
            b"api.example.com": ("test:certificate/wild", WILDCARD),
            b"a.b.example.com": (str(SELF_SIGNED_REF), DEFAULT),
            b"example.com": (str(SELF_SIGNED_REF), DEFAULT),
            b".example.com": (str(SELF_SIGNED_REF), DEFAULT),
            b"unknown.test": (str(SELF_SIGNED_REF), DEFAULT),
            b"caf\xc3\xa9.example.com": (str(SELF_SIGNED_REF), DEFAULT),
            None: (str(SELF_SIGNED_REF), DEFAULT),
            b"": (str(SELF_SIGNED_REF), DEFAULT),
        }
        for name, expected in cases.items():
            entry, outcome = self.map.select(name)
            self.assertEqual((str(entry.ref), outcome), expected, name)

    def test_handshakes_get_the_chosen_certificate(self) -> None:
        """
        A real handshake (memory BIOs) presents the certificate the map
        chose, and tells the connection's app data how it was chosen.
        """
        for name, expected, outcome in (
            (b"www.example.com", WWW.fingerprint, EXACT),
            (b"x.example.com", WILD.fingerprint, WILDCARD),
            (b"nothing.test", FALLBACK.fingerprint, DEFAULT),
            (None, FALLBACK.fingerprint, DEFAULT),
        ):
            peer, app = handshake(self.map, name)
            self.assertEqual(fingerprint(peer), expected, name)
            self.assertEqual(app.sni_outcome, outcome, name)

    def test_alpn_survives_the_context_switch(self) -> None:
        """
        After SNI moves the connection to a certificate's context, ALPN still
        selects h2 (preferred) or http/1.1, on every certificate.
        """
        for name in (b"www.example.com", b"x.example.com", b"nothing.test", None):
            peer, _ = handshake(self.map, name, alpn=[b"http/1.1", b"h2"])
            self.assertEqual(peer.get_alpn_proto_negotiated(), b"h2", name)
            peer, _ = handshake(self.map, name, alpn=[b"http/1.1"])
            self.assertEqual(peer.get_alpn_proto_negotiated(), b"http/1.1", name)
            peer, _ = handshake(self.map, name, alpn=[b"spdy/3"])
            self.assertEqual(peer.get_alpn_proto_negotiated(), b"", name)
            self.assertIsNotNone(peer.get_peer_certificate(), name)

    def test_configured_default(self) -> None:
        """The certificate configured as default replaces the generated one."""
        sni, _ = self.builder.build(config(("www", WWW, ("www.example.com",), True)))
        self.assertEqual(str(sni.default.ref), "test:certificate/www")
        peer, _ = handshake(sni, b"unknown.test")
        self.assertEqual(fingerprint(peer), WWW.fingerprint)

    def test_served_list(self) -> None:
        """served lists each host with its certificate's source and expiry, the default as '*'."""
        self.assertEqual(
            [(s.host, s.source) for s in self.map.served],
            [("*", "builtin:certificate/self-signed"),
             ("*.example.com", "test:certificate/wild"),
             ("www.example.com", "test:certificate/www")],
        )
        www = self.map.served[2]
        self.assertEqual((www.not_after, www.fingerprint), (
            WWW.certificate.not_valid_after_utc.timestamp(), WWW.fingerprint))

    def test_contexts_reused_for_unchanged_certificates(self) -> None:
        """
        A rebuild reuses the OpenSSL context of a certificate that did not
        change and makes a new one for a changed certificate.
        """
        renewed = CA.issue("*.example.com")
        changed = config(
            ("www", WWW, ("www.example.com",), False),
            ("wild", renewed, ("*.example.com",), False),
        )
        second, _ = self.builder.build(changed, self.map)
        key = (WWW_ENTRY.chain_pem, WWW_ENTRY.key_pem)
        self.assertIs(second._contexts[key], self.map._contexts[key])
        old = (WILD_ENTRY.chain_pem, WILD_ENTRY.key_pem)
        self.assertNotIn(old, second._contexts)
        peer, _ = handshake(second, b"x.example.com")
        self.assertEqual(fingerprint(peer), renewed.fingerprint)
        peer, _ = handshake(self.map, b"x.example.com")
        self.assertEqual(fingerprint(peer), WILD.fingerprint)

    def test_openssl_refusal_is_a_problem(self) -> None:
        """A certificate OpenSSL refuses becomes a problem; its hosts fall back to the default."""
        # Translation never lets a mismatched key through; built by hand here
        # to stand for whatever else OpenSSL may refuse.
        broken = GatewayConfig(certificates=(replace(WILD_ENTRY, key_pem=WWW_ENTRY.key_pem),))
        sni, problems = self.builder.build(broken)
        [problem] = problems
        self.assertEqual(str(problem.ref), "test:certificate/wild")
        self.assertIn("OpenSSL refuses", problem.message)
        self.assertEqual(sni.select(b"x.example.com")[1], DEFAULT)


_HRR_SCRIPT = """
import gc, time
from OpenSSL import SSL
from OpenSSL._util import lib
from gateway.tls import SNIMapBuilder, TLSSettings, generate_default_certificate
from gateway.translate import GatewayConfig

sni, _ = SNIMapBuilder(TLSSettings(), generate_default_certificate(time.time())).build(GatewayConfig())
server = sni.connection()
server.set_accept_state()
# The server accepts X25519 only; the client's first key share is P-384:
# the server must ask again (HelloRetryRequest), and the second ClientHello
# runs the server-name callback of the context the connection started on.
lib.SSL_set1_curves_list(server._ssl, b"X25519")
del sni  # a swap releases the map while the handshake is under way
client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
client.set_connect_state()
client.set_tlsext_host_name(b"x.test")
lib.SSL_set1_curves_list(client._ssl, b"P-384:X25519")
for _ in range(10):
    for sender, receiver in ((client, server), (server, client)):
        try:
            sender.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            receiver.bio_write(sender.bio_read(65536))
        except SSL.WantReadError:
            pass
    gc.collect()
print(client.get_protocol_version_name())
"""


class LifetimeTests(SynchronousTestCase):
    def test_map_released_during_hello_retry(self) -> None:
        """
        A TLS 1.3 handshake that needs a HelloRetryRequest completes even when
        the map it started from is released in between (run in a child
        process: the failure this guards against is a crash).
        """
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        done = subprocess.run(
            [sys.executable, "-c", _HRR_SCRIPT],
            cwd=repo,
            env={**os.environ, "PYTHONPATH": repo},
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(
            (done.returncode, done.stdout.strip()), (0, b"TLSv1.3"), done.stderr.decode()[-2000:]
        )


class SettingsTests(SynchronousTestCase):
    def test_minimum_version(self) -> None:
        """TLS 1.2 is the default minimum; with 1.3 a TLS 1.2 client's handshake fails."""
        builder = SNIMapBuilder(TLSSettings(), FALLBACK)
        sni, _ = builder.build(STANDARD)
        peer, _ = handshake(sni, b"www.example.com", maximum=SSL.TLS1_2_VERSION)
        self.assertEqual(peer.get_protocol_version_name(), "TLSv1.2")
        strict = SNIMapBuilder(TLSSettings(min_version="1.3"), FALLBACK)
        sni, _ = strict.build(STANDARD)
        self.assertRaises(SSL.Error, handshake, sni, b"www.example.com", maximum=SSL.TLS1_2_VERSION)
        peer, _ = handshake(sni, b"www.example.com")
        self.assertEqual(peer.get_protocol_version_name(), "TLSv1.3")

    def test_invalid_settings(self) -> None:
        """An unknown minimum version or an ALPN protocol the gateway cannot serve is refused."""
        self.assertRaises(ValueError, TLSSettings, min_version="1.1")
        self.assertRaises(ValueError, TLSSettings, alpn=(b"spdy/3",))
        self.assertRaises(ValueError, TLSSettings, alpn=())


class GeneratedDefaultTests(SynchronousTestCase):
    def test_self_signed(self) -> None:
        """The generated default is a self-signed EC certificate, CN apimgw default, valid a year."""
        entry = generate_default_certificate(NOW)
        self.assertEqual((entry.subject, entry.issuer), ("CN=apimgw default", "CN=apimgw default"))
        self.assertEqual(entry.ref, SELF_SIGNED_REF)
        self.assertTrue(entry.is_default)
        self.assertLess(abs(entry.not_before - (NOW - 3600)), 2)
        self.assertEqual(entry.not_after - entry.not_before, 365 * 86400)
        self.assertIn("-----BEGIN PRIVATE KEY-----", entry.key_pem)
        self.assertNotEqual(entry.fingerprint, generate_default_certificate(NOW).fingerprint)


class _Generations:
    current: Any = None


class FactoryTests(SynchronousTestCase):
    """The TLS factory over the connection creator, driven through a string transport."""

    def setUp(self) -> None:
        builder = SNIMapBuilder(TLSSettings(), FALLBACK)
        self.fallback_map, _ = builder.build(GatewayConfig())
        self.standard_map, _ = builder.build(STANDARD)
        self.generations = _Generations()
        self.outcomes: list[str] = []
        self.clock = Clock()
        self.factory = TLSServerFactory(
            SNIConnectionCreator(self.generations, self.fallback_map),
            Factory.forProtocol(Protocol),
            on_handshake=self.outcomes.append,
            clock=self.clock,
        )

    def connect(self, server_name: bytes | None) -> tuple[Any, SSL.Connection, StringTransport]:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        protocol.makeConnection(transport)
        peer = client(server_name)
        for _ in range(20):
            try:
                peer.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                protocol.dataReceived(peer.bio_read(65536))
            except SSL.WantReadError:
                pass
            self.clock.advance(0)
            data = transport.value()
            transport.clear()
            if data:
                peer.bio_write(data)
        return protocol, peer, transport

    def test_live_map_and_outcomes(self) -> None:
        """
        Connections use the live generation's map (the fallback before one
        exists), and each completed handshake is reported once with its outcome.
        """
        _, peer, _ = self.connect(b"www.example.com")
        self.assertEqual(fingerprint(peer), FALLBACK.fingerprint)
        self.generations.current = type("G", (), {"sni": self.standard_map})()
        protocol, peer, _ = self.connect(b"www.example.com")
        self.assertEqual(fingerprint(peer), WWW.fingerprint)
        self.connect(b"x.example.com")
        self.assertEqual(self.outcomes, [DEFAULT, EXACT, WILDCARD])
        protocol.connectionLost(None)
        self.assertEqual(self.outcomes, [DEFAULT, EXACT, WILDCARD])

    def test_failed_handshake_counted_once(self) -> None:
        """
        A connection that sent bytes but never completed its handshake is
        reported as failed when it closes; one that sent nothing is not reported.
        """
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        protocol.connectionLost(None)
        silent = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        silent.makeConnection(StringTransport())
        silent.connectionLost(None)
        self.assertEqual(self.outcomes, [FAILED])
