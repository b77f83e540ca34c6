"""
Tests for :mod:`gateway.upstream._connect` and the failures a sink sees:
refused, unresolvable and slow backends, response timeouts, and TLS
backends. Only the connect timeout uses a fake reactor, because no real
socket fails to connect deterministically.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import UserError
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, PrivateCertificate, trustRootFromCertificates
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.translate import Backend
from gateway.upstream import (
    BackendConnectError,
    BackendConnectionLost,
    BackendConnectTimeout,
    BackendPool,
    BackendResponseTimeout,
    BackendTimeout,
)
from gateway.upstream._connection import BODY_CHUNK

from ._loopback import (
    ClientTestCase,
    RawRequest,
    RecordingSink,
    answer,
    ok,
    wait_until,
)

# -- failures and timeouts ------------------------------------------------------------


class _PendingConnector:
    """A connection attempt that never completes until stopped."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.stopped = False

    def stopConnecting(self) -> None:
        self.stopped = True
        self.factory.clientConnectionFailed(self, Failure(UserError()))


class _NeverConnectingReactor:
    """A reactor whose TCP connections never complete; its time is a Clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.attempts: list[_PendingConnector] = []

    def callLater(self, delay: float, f: Callable[..., object], *a: object) -> Any:
        return self.clock.callLater(delay, f, *a)

    def seconds(self) -> float:
        return self.clock.seconds()

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: Any = 30, bindAddress: Any = None
    ) -> _PendingConnector:
        connector = _PendingConnector(factory)
        self.attempts.append(connector)
        return connector


class FailureTests(ClientTestCase):
    """Errors reach the sink as BackendError subclasses with clear messages."""

    async def test_connect_refused(self) -> None:
        """A closed port fails with BackendConnectError naming host and port."""
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        pool = self.make_pool()
        backend = Backend("http", "127.0.0.1", number, "", f"127.0.0.1:{number}")
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendConnectError)
        self.assertEqual(str(error), f"connection refused to 127.0.0.1:{number}")
        self.assertEqual(sink.calls, ["failed"])

    def test_connect_timeout(self) -> None:
        """A connection not made within connect_timeout fails with a connect timeout."""
        fake = _NeverConnectingReactor()
        pool = BackendPool(fake, connect_timeout=5.0)
        sink = RecordingSink()
        backend = Backend("http", "10.0.0.1", 80, "", "10.0.0.1")
        pool.request(backend, b"GET", b"/", [], None, 0, sink)
        fake.clock.advance(4.9)
        self.assertEqual(sink.calls, [])
        fake.clock.advance(0.1)
        error = self.assertFailedWith(sink, BackendConnectTimeout)
        self.assertIsInstance(error, BackendTimeout)
        self.assertIn("connect timeout", str(error))
        self.assertIn("10.0.0.1:80", str(error))
        self.assertTrue(fake.attempts[0].stopped)
        self.assertEqual(sink.calls, ["failed"])
        self.assertEqual(fake.clock.getDelayedCalls(), [])

    def test_cancel_while_connecting(self) -> None:
        """Cancelling during the connect stops the attempt and its timer, with no sink call."""
        fake = _NeverConnectingReactor()
        pool = BackendPool(fake, connect_timeout=5.0)
        sink = RecordingSink()
        backend = Backend("http", "10.0.0.1", 80, "", "10.0.0.1")
        exchange = pool.request(backend, b"GET", b"/", [], None, 0, sink)
        exchange.cancel()
        self.assertTrue(fake.attempts[0].stopped)
        self.assertEqual(fake.clock.getDelayedCalls(), [])
        fake.clock.advance(10)
        self.assertEqual(sink.calls, [])

    async def test_response_timeout(self) -> None:
        """A backend that accepts but never answers fails with a response timeout."""
        server, backend = self.start_backend(lambda request: None)
        pool = self.make_pool(response_timeout=0.2)
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendResponseTimeout)
        self.assertIsInstance(error, BackendTimeout)
        self.assertIn("no response from " + backend.authority, str(error))
        await server.connections[0].lost
        self.assertEqual(pool.idle_count(), 0)

    async def test_slow_body_within_the_idle_timeout(self) -> None:
        """After the headers, a body whose pieces come less than the timeout apart is not timed out."""

        def handler(request: RawRequest) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ns")
            for i, piece in enumerate((b"l", b"o", b"w"), 1):
                reactor.callLater(0.1 * i, request.write, piece)

        _server, backend = self.start_backend(handler)
        pool = self.make_pool(response_timeout=0.25)
        sink = await self.send(pool, backend).done
        self.assertEqual((sink.calls[-1], sink.body), ("finished", b"slow"))

    async def test_backend_stalled_mid_body(self) -> None:
        """Headers and one piece, then silence: the exchange fails after the idle timeout, and the connection is closed."""
        server, backend = self.start_backend(
            answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        )
        pool = self.make_pool(response_timeout=0.2)
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendResponseTimeout)
        self.assertIn("sent nothing for 0.2 s", str(error))
        self.assertEqual((sink.calls[0], sink.body), ("started", b"first"))
        await server.connections[0].lost
        self.assertEqual(pool.idle_count(), 0)

    async def test_response_timeout_per_request(self) -> None:
        """Each request on a pooled connection gets the whole response timeout."""

        def handler(request: RawRequest) -> None:
            reactor.callLater(0.15, request.write, ok())

        server, backend = self.start_backend(handler)
        pool = self.make_pool(response_timeout=0.25)
        for _ in range(3):
            sink = await self.send(pool, backend).done
            self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(server.accepted, 1)

    async def test_unknown_host(self) -> None:
        """A host name that does not resolve fails with BackendConnectError."""
        pool = self.make_pool()
        backend = Backend("http", "no-such-host.invalid", 80, "", "no-such-host.invalid")
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendConnectError)
        self.assertIn("no-such-host.invalid", str(error))

    async def test_host_name(self) -> None:
        """A backend named by host name is resolved, connected and pooled."""
        server, backend = self.start_backend(answer(ok(b"by name")))
        named = Backend("http", "localhost", backend.port, "", f"localhost:{backend.port}")
        pool = self.make_pool()
        first = await self.send(pool, named).done
        second = await self.send(pool, named).done
        self.assertEqual((first.body, second.body), (b"by name", b"by name"))
        self.assertEqual(server.accepted, 1)

    def use_names(self, names: dict[str, Any]) -> None:
        """The reactor's name resolver answers ``names`` (name → address or addresses) for this test."""
        previous = reactor.installNameResolver(_NamesResolver(names))  # type: ignore[attr-defined]
        self.addCleanup(reactor.installNameResolver, previous)  # type: ignore[attr-defined]

    async def test_host_name_with_underscore(self) -> None:
        """
        A name IDNA refuses (``my_service``, a Docker Compose service) goes
        to the system resolver instead of HostnameEndpoint's "invalid
        hostname", is connected and pooled.
        """
        self.use_names({"my_service": "127.0.0.1"})
        server, backend = self.start_backend(answer(ok(b"by compose name")))
        named = Backend("http", "my_service", backend.port, "", f"my_service:{backend.port}")
        pool = self.make_pool()
        first = await self.send(pool, named).done
        second = await self.send(pool, named).done
        self.assertEqual((first.body, second.body), (b"by compose name", b"by compose name"))
        self.assertEqual(server.accepted, 1)

    async def test_host_name_with_underscore_several_addresses(self) -> None:
        """
        Several addresses: IPv4 ones first, in order, then the others, each
        while the previous refuses (127.0.0.2 has nothing listening).
        """
        self.use_names({"my_service": ["::1", "127.0.0.2", "127.0.0.1"]})
        server, backend = self.start_backend(answer(ok(b"over IPv4")))
        named = Backend("http", "my_service", backend.port, "", f"my_service:{backend.port}")
        sink = await self.send(self.make_pool(), named).done
        self.assertEqual(sink.body, b"over IPv4")

    async def test_host_name_refused_by_the_resolver_too(self) -> None:
        """
        A name getaddrinfo cannot encode (a 64-character label) fails at
        once as unresolvable (the reactor's own resolver would never answer).
        """
        host = "a" * 64 + ".example"
        backend = Backend("http", host, 80, "", host)
        sink = await self.send(self.make_pool(), backend).done
        error = self.assertFailedWith(sink, BackendConnectError)
        self.assertIn("cannot resolve the backend host", str(error))

    async def test_https_host_name_tls_cannot_check(self) -> None:
        """An https backend named my_service: no certificate can be checked against it, a clear connect error."""
        backend = Backend("https", "my_service", 443, "", "my_service")
        sink = await self.send(self.make_pool(), backend).done
        error = self.assertFailedWith(sink, BackendConnectError)
        self.assertIn("over TLS", str(error))

    async def test_host_name_with_underscore_unknown(self) -> None:
        """Such a name the resolver does not know fails as an unknown host does."""
        self.use_names({})
        pool = self.make_pool()
        backend = Backend("http", "no_such_service", 80, "", "no_such_service")
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendConnectError)
        self.assertIn("cannot resolve the backend host no_such_service", str(error))


@implementer(IHostnameResolver)
class _NamesResolver:
    """A name resolver with a fixed table (IPv4), answering at once."""

    def __init__(self, names: dict[str, Any]) -> None:
        self.names = names

    def resolveHostName(
        self,
        receiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        receiver.resolutionBegan(None)
        found = self.names.get(hostName)
        for address in [found] if isinstance(found, str) else found or []:
            if ":" in address:
                receiver.addressResolved(IPv6Address("TCP", address, portNumber))
            else:
                receiver.addressResolved(IPv4Address("TCP", address, portNumber))
        receiver.resolutionComplete()
        return None


# -- TLS ----------------------------------------------------------------------------


def _self_signed() -> tuple[bytes, bytes]:
    """A certificate for 127.0.0.1 and localhost, and its key, in PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apimgw test backend")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class TLSTests(ClientTestCase):
    """https backends."""

    def setUp(self) -> None:
        cert_pem, key_pem = _self_signed()
        self.server_options = PrivateCertificate.loadPEM(cert_pem + key_pem).options()
        self.trust_root = trustRootFromCertificates([Certificate.loadPEM(cert_pem)])

    async def test_https_backend(self) -> None:
        """An https backend with a trusted certificate answers over a pooled TLS connection."""
        server, backend = self.start_backend(answer(ok(b"secret")), tls=self.server_options)
        pool = self.make_pool(tls_trust_root=self.trust_root)
        first = await self.send(pool, backend).done
        second = await self.send(pool, backend).done
        self.assertEqual((first.body, second.body), (b"secret", b"secret"))
        self.assertEqual(server.accepted, 1)

    async def test_large_body_waits_for_handshake(self) -> None:
        """Before the TLS handshake at most one chunk of a streamed body is read; all arrives."""
        server, backend = self.start_backend(answer(ok()), tls=self.server_options)
        pool = self.make_pool(tls_trust_root=self.trust_root)
        data = b"0123456789abcdef" * (1024 * 1024)
        body = io.BytesIO(data)
        # The backend reads nothing, so the handshake cannot complete.
        server.pause_on_connect = True
        sink = self.send(pool, backend, method=b"PUT", body=body, body_length=len(data))
        await wait_until(lambda: server.accepted == 1)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertLessEqual(body.tell(), BODY_CHUNK)
        server.connections[0].transport.resumeProducing()
        await sink.done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(server.requests[0].body, data)

    async def test_untrusted_certificate(self) -> None:
        """A backend certificate outside the trust root fails the exchange."""
        server, backend = self.start_backend(answer(ok()), tls=self.server_options)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendConnectionLost)
        self.assertIn("certificate", str(error).lower())
        self.assertEqual(pool.retries, 0)
