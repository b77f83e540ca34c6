"""
TLS termination end to end: a real gateway on loopback sockets, real TLS
handshakes from an OpenSSL client sending (or not sending) SNI, HTTP/1.1
and HTTP/2 through the proxy to a real backend, certificate rotation under
open connections.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from gateway.model import Api, Certificate, Route, RouteSet
from gateway.testing.certs import CertificateAuthority, IssuedCertificate, private_key_pem

from .harness import GatewayTestCase, request_sync
from .tlsclient import (
    client_context,
    h2_request,
    h2_request_then_wait_for_close,
    handshake,
    tls_connect,
)


class TLSTestCase(GatewayTestCase):
    """
    A gateway with an HTTPS listener and, from the memory source: a
    certificate for www.example.com, one for *.example.com and a default
    one for fallback.test, all issued by one test CA.
    """

    extra_args = ["--https-redirect-port", "listener"]
    configure_default = True

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.ca = CertificateAuthority()
        self.www = self.ca.issue("www.example.com")
        self.wild = self.ca.issue("*.example.com")
        self.fallback = self.ca.issue("fallback.test")
        self.put_certificate("www", self.www, ["www.example.com"], modified=10.0)
        self.put_certificate("wild", self.wild, ["*.example.com"], modified=10.0)
        if self.configure_default:
            self.put_certificate("fallback", self.fallback, [], default=True, modified=10.0)
        yield self.swapped()

    def put_certificate(
        self,
        name: str,
        issued: IssuedCertificate,
        hosts: list[str],
        *,
        default: bool = False,
        modified: float = 10.0,
        key_pem: str | None = None,
    ) -> None:
        body = Certificate(
            tuple(hosts), issued.chain_pem, issued.key_pem if key_pem is None else key_pem, default
        )
        self.memory.put(name, body, modified)

    def swapped(self) -> Deferred[Any]:
        """Fires with the next generation the reconciler swaps in."""
        d: Deferred[Any] = Deferred()
        current = self.gateway.reconciler.current
        after = 0 if current is None else current.number

        def listener(generation: Any) -> None:
            if not d.called and generation.number > after:
                d.callback(generation)

        self.gateway.reconciler.add_swap_listener(listener)
        return d

    def handshake(self, server_name: str | None, **context: Any) -> Deferred[Any]:
        return deferToThread(handshake, self.https_port, server_name, **context)


class CertificateSelectionTests(TLSTestCase):
    @inlineCallbacks
    def test_exact_host(self) -> Any:
        """SNI www.example.com gets its own certificate, and its chain verifies against the CA."""
        session = yield self.handshake("www.example.com", ca_pem=self.ca.cert_pem)
        self.assertEqual(session.fingerprint, self.www.fingerprint)

    @inlineCallbacks
    def test_exact_host_is_case_insensitive(self) -> Any:
        """SNI WWW.Example.COM gets the www.example.com certificate."""
        session = yield self.handshake("WWW.Example.COM")
        self.assertEqual(session.fingerprint, self.www.fingerprint)

    @inlineCallbacks
    def test_wildcard_host(self) -> Any:
        """SNI api.example.com gets the *.example.com certificate, which verifies for that name."""
        session = yield self.handshake("api.example.com", ca_pem=self.ca.cert_pem)
        self.assertEqual(session.fingerprint, self.wild.fingerprint)

    @inlineCallbacks
    def test_wildcard_covers_one_label_only(self) -> Any:
        """a.b.example.com and example.com are not covered by *.example.com: they get the default."""
        for name in ("a.b.example.com", "example.com"):
            session = yield self.handshake(name)
            self.assertEqual(session.fingerprint, self.fallback.fingerprint, name)

    @inlineCallbacks
    def test_unknown_name_gets_default(self) -> Any:
        """An SNI name no certificate covers gets the configured default certificate."""
        session = yield self.handshake("unknown.test")
        self.assertEqual(session.fingerprint, self.fallback.fingerprint)

    @inlineCallbacks
    def test_no_sni_gets_default(self) -> Any:
        """A client that sends no server name gets the configured default certificate."""
        session = yield self.handshake(None)
        self.assertEqual(session.fingerprint, self.fallback.fingerprint)


class GeneratedDefaultTests(TLSTestCase):
    configure_default = False

    @inlineCallbacks
    def test_self_signed_default(self) -> Any:
        """
        With no default certificate configured, unknown and absent names get
        the generated self-signed one, and its generation is logged.
        """
        for name in ("unknown.test", None):
            session = yield self.handshake(name)
            self.assertEqual(session.common_name, "apimgw default")
            self.assertEqual(session.certificate.issuer, session.certificate.subject)
        self.assertTrue(self.logged("Generated a self-signed default certificate"))


class ProtocolTests(TLSTestCase):
    @inlineCallbacks
    def test_request_over_https(self) -> Any:
        """
        A request over HTTPS is proxied to the backend with X-Forwarded-Proto
        https, twice on one keep-alive connection.
        """
        session = yield deferToThread(tls_connect, self.https_port, "www.example.com")
        self.addCleanup(session.close)
        for _ in range(2):
            r = yield deferToThread(session.request, "GET", "/echo/resource?x=1", "www.example.com")
            self.assertEqual(r.status, 200)
            echo = r.json()
            self.assertEqual((echo["path"], echo["query"]), ("/api/resource", "x=1"))
            headers = {k.lower(): v for k, v in echo["headers"]}
            self.assertEqual(headers["x-forwarded-proto"], "https")
        self.assertEqual(self.backend_site.connections, 1)

    @inlineCallbacks
    def test_alpn_offers_h2_and_http11_on_every_certificate(self) -> Any:
        """
        A client offering h2 and http/1.1 gets h2 whichever certificate SNI
        chose (exact, wildcard, default); one offering http/1.1 only gets
        http/1.1; one offering no ALPN still completes its handshake.
        """
        for name in ("www.example.com", "api.example.com", "unknown.test", None):
            session = yield self.handshake(name, alpn=("h2", "http/1.1"))
            self.assertEqual(session.alpn, "h2", name)
        session = yield self.handshake("www.example.com", alpn=("http/1.1",))
        self.assertEqual(session.alpn, "http/1.1")
        session = yield self.handshake("www.example.com", alpn=None)
        self.assertIsNone(session.alpn)
        self.assertEqual(session.fingerprint, self.www.fingerprint)

    @inlineCallbacks
    def test_http2_round_trip(self) -> Any:
        """
        HTTP/2 negotiated by ALPN carries GET and POST requests through the
        proxy, three streams at once on one connection.
        """
        responses = yield deferToThread(
            h2_request, self.https_port, "www.example.com", "GET", "/echo/users/7", streams=3
        )
        self.assertEqual([r.status for r in responses], [200, 200, 200])
        for response in responses:
            echo = json.loads(response.body)
            self.assertEqual((echo["method"], echo["path"]), ("GET", "/api/users/7"))
            headers = {k.lower(): v for k, v in echo["headers"]}
            self.assertEqual(headers["x-forwarded-proto"], "https")
            self.assertEqual(headers["x-forwarded-host"], "www.example.com")
            self.assertTrue(response.header("x-request-id"))
        [posted] = yield deferToThread(
            h2_request, self.https_port, "www.example.com", "POST", "/echo/resource",
            body=b"hello over h2",
        )
        self.assertEqual(posted.status, 200)
        self.assertEqual(json.loads(posted.body)["body"], "hello over h2")

    @inlineCallbacks
    def test_http2_no_route_is_404_envelope(self) -> Any:
        """Over HTTP/2 a path no route matches is the 404 envelope, as over HTTP/1.1."""
        [response] = yield deferToThread(
            h2_request, self.https_port, "www.example.com", "GET", "/nowhere"
        )
        self.assertEqual(response.status, 404)
        self.assertEqual(
            json.loads(response.body),
            {"statusCode": 404, "message": "Resource not found"},
        )

    @inlineCallbacks
    def test_tls11_refused_by_default(self) -> Any:
        """
        A client that offers at most TLS 1.1 fails its handshake with a
        protocol-version alert; the same client allowed TLS 1.2 succeeds.
        """
        error = yield self.assertFailure(
            self.handshake("www.example.com", maximum=ssl.TLSVersion.TLSv1_1, legacy=True),
            ssl.SSLError,
        )
        self.assertIn("PROTOCOL VERSION", str(error).upper().replace("_", " "))
        session = yield self.handshake(
            "www.example.com", maximum=ssl.TLSVersion.TLSv1_2, legacy=True
        )
        self.assertEqual(session.version, "TLSv1.2")

    @inlineCallbacks
    def test_modern_ciphers_only(self) -> Any:
        """A TLS 1.2 client offering only CBC (non-AEAD) suites is refused."""
        context = client_context(maximum=ssl.TLSVersion.TLSv1_2)
        context.set_ciphers("ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA")
        yield self.assertFailure(
            deferToThread(tls_connect, self.https_port, "www.example.com", context), ssl.SSLError
        )

    @inlineCallbacks
    def test_https_redirect(self) -> Any:
        """
        A plain-HTTP request on a route with https_redirect gets 308 to the
        same path and query on the HTTPS port; over HTTPS it is proxied.
        """
        routes = RouteSet((Route("/secure", self.backend_url, https_redirect=True),))
        self.memory.put("secure", routes, 20.0)
        yield self.swapped()
        r = yield self.get("/secure/a?b=c", headers=[("Host", "www.example.com:8080")])
        self.assertEqual(r.status, 308)
        self.assertEqual(
            r.header("location"), f"https://www.example.com:{self.https_port}/secure/a?b=c"
        )
        session = yield deferToThread(tls_connect, self.https_port, "www.example.com")
        self.addCleanup(session.close)
        r = yield deferToThread(session.request, "GET", "/secure/a?b=c", "www.example.com")
        self.assertEqual((r.status, r.json()["path"]), (200, "/secure/a"))

    @inlineCallbacks
    def test_api_protocols(self) -> Any:
        """An API served on https only answers 404 over plain HTTP and 200 over HTTPS; http-only the reverse."""
        self.memory.put("tls-only", Api("tls-only", "tls-only", self.backend_url, protocols=("https",)), 20.0)
        self.memory.put("plain-only", Api("plain-only", "plain-only", self.backend_url, protocols=("http",)), 20.0)
        yield self.swapped()
        self.assertEqual((yield self.get("/tls-only/x")).status, 404)
        self.assertEqual((yield self.get("/plain-only/x")).status, 200)
        session = yield deferToThread(tls_connect, self.https_port, "www.example.com")
        self.addCleanup(session.close)
        r = yield deferToThread(session.request, "GET", "/tls-only/x", "www.example.com")
        self.assertEqual((r.status, r.json()["path"]), (200, "/x"))
        r = yield deferToThread(session.request, "GET", "/plain-only/x", "www.example.com")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["statusCode"], 404)

    @inlineCallbacks
    def test_handshake_counter_and_expiry_gauge(self) -> Any:
        """
        /metrics counts handshakes by SNI outcome (exact, wildcard, default,
        failed) and shows the seconds until each served certificate expires.
        """
        yield self.handshake("www.example.com")
        yield self.handshake("a.example.com")
        yield self.handshake(None)
        yield deferToThread(_garbage_handshake, self.https_port)
        text = (yield self.admin("/metrics")).body.decode()
        for outcome in ("exact", "wildcard", "default", "failed"):
            self.assertIn(f'apimgw_tls_handshakes_total{{outcome="{outcome}"}} 1.0', text)
        line = next(
            line for line in text.splitlines()
            if line.startswith("apimgw_tls_certificate_expiry_seconds{")
            and 'host="www.example.com"' in line
        )
        self.assertIn('source="memory:certificate/www"', line)
        remaining = float(line.rsplit(" ", 1)[1])
        expected = self.www.certificate.not_valid_after_utc.timestamp() - time.time()
        self.assertLess(abs(remaining - expected), 3600)
        self.assertIn('apimgw_tls_certificate_expiry_seconds{host="*",source="memory:certificate/fallback"}', text)

    @inlineCallbacks
    def test_config_lists_certificates_without_keys(self) -> Any:
        """
        /config lists each certificate with subject, SANs, not-after,
        fingerprint and hosts, marks the default, and never shows a key or PEM.
        """
        r = yield self.admin("/config")
        dump = r.json()
        certificates = {c["object"]: c for c in dump["certificates"]}
        www = certificates["memory:certificate/www"]
        self.assertEqual(www["hosts"], ["www.example.com"])
        self.assertEqual(www["sans"], ["www.example.com"])
        self.assertEqual(www["subject"], "CN=www.example.com")
        self.assertEqual(www["fingerprintSha256"], self.www.fingerprint)
        self.assertTrue(www["notAfter"].endswith("Z"))
        self.assertIs(certificates["memory:certificate/fallback"]["default"], True)
        self.assertEqual(dump["defaultCertificate"]["object"], "memory:certificate/fallback")
        self.assertNotIn(b"PRIVATE KEY", r.body)
        self.assertNotIn(b"BEGIN", r.body)


def _garbage_handshake(port: int) -> None:
    """Send bytes that are not a TLS ClientHello and wait for the server to close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass


class RotationTests(TLSTestCase):
    @inlineCallbacks
    def test_rotation_under_open_keep_alive_connection(self) -> Any:
        """
        After the www certificate is replaced, a keep-alive connection opened
        before still answers, and a new connection gets the new certificate,
        from the same listener.
        """
        port_before = self.gateway.listeners["https"].port
        old = yield deferToThread(tls_connect, self.https_port, "www.example.com")
        self.addCleanup(old.close)
        r = yield deferToThread(old.request, "GET", "/echo/resource", "www.example.com")
        self.assertEqual(r.status, 200)
        renewed = self.ca.issue("www.example.com")
        self.put_certificate("www", renewed, ["www.example.com"], modified=20.0)
        yield self.swapped()
        r = yield deferToThread(old.request, "GET", "/echo/resource", "www.example.com")
        self.assertEqual(r.status, 200)
        self.assertEqual(old.fingerprint, self.www.fingerprint)
        new = yield self.handshake("www.example.com")
        self.assertEqual(new.fingerprint, renewed.fingerprint)
        self.assertIs(self.gateway.listeners["https"].port, port_before)

    @inlineCallbacks
    def test_invalid_rotation_keeps_last_valid(self) -> Any:
        """
        Replacing the www certificate with one whose key does not match keeps
        serving the previous certificate for www.example.com, and the
        problem is reported on /config with the object's name.
        """
        broken = self.ca.issue("www.example.com")
        self.put_certificate(
            "www", broken, ["www.example.com"], modified=20.0, key_pem=private_key_pem()
        )
        yield self.swapped()
        session = yield self.handshake("www.example.com")
        self.assertEqual(session.fingerprint, self.www.fingerprint)
        dump = (yield self.admin("/config")).json()
        [problem] = [p for p in dump["problems"] if p["object"] == "memory:certificate/www"]
        self.assertIn("does not match", problem["message"])
        self.assertIn("keeps serving", problem["message"])
        [www] = [c for c in dump["certificates"] if c["object"] == "memory:certificate/www"]
        self.assertIs(www["keptLastValid"], True)

    @inlineCallbacks
    def test_expired_certificate_falls_back_to_default(self) -> Any:
        """
        A new certificate object that has expired is a problem; its host gets
        the default certificate and the other hosts are unaffected.
        """
        now = time.time()
        expired = self.ca.issue("old.example.net", not_before=now - 86400 * 10, not_after=now - 60)
        self.put_certificate("old", expired, ["old.example.net"], modified=20.0)
        yield self.swapped()
        session = yield self.handshake("old.example.net")
        self.assertEqual(session.fingerprint, self.fallback.fingerprint)
        session = yield self.handshake("www.example.com")
        self.assertEqual(session.fingerprint, self.www.fingerprint)
        dump = (yield self.admin("/config")).json()
        [problem] = [p for p in dump["problems"] if p["object"] == "memory:certificate/old"]
        self.assertIn("expired", problem["message"])

    @inlineCallbacks
    def test_idle_connection_closed_at_drain(self) -> Any:
        """An idle HTTPS keep-alive connection is closed cleanly when the gateway drains."""
        session = yield deferToThread(tls_connect, self.https_port, "www.example.com")
        self.addCleanup(session.close)
        r = yield deferToThread(session.request, "GET", "/echo/resource", "www.example.com")
        self.assertEqual(r.status, 200)
        yield self.gateway.stopService()
        data = yield deferToThread(_read_to_end, session.sock)
        self.assertEqual(data, b"")


class BothListenersDrainTests(TLSTestCase):
    @inlineCallbacks
    def test_listeners_drain_together(self) -> Any:
        """
        At shutdown the HTTP and HTTPS listeners stop accepting at once and
        drain within one grace period, each waiting for its own requests in
        flight (one after the other, the second would still accept new
        connections while the first drains, and the shutdown could take a
        grace per listener).
        """
        session = yield deferToThread(tls_connect, self.https_port, "www.example.com")
        self.addCleanup(session.close)
        over_tls = deferToThread(session.request, "GET", "/echo/resource?sleep=1500", "www.example.com")
        plain = self.get("/app/slow?sleep=1500")
        listeners = self.gateway.listeners
        yield self.wait_for(
            lambda: listeners["http"].resource.in_flight >= 1
            and listeners["https"].resource.in_flight >= 1
        )
        stopped = self.gateway.stopService()
        yield self.wait_for(
            lambda: listeners["http"].port.connected == 0 and listeners["https"].port.connected == 0
        )
        refused = []
        for port in (self.port, self.https_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except ConnectionRefusedError:
                refused.append(port)
        self.assertEqual(refused, [self.port, self.https_port])
        self.assertFalse(stopped.called, "the drain waits for the requests in flight")
        r_tls = yield over_tls
        r_plain = yield plain
        self.assertEqual((r_tls.status, r_plain.status), (200, 200))
        yield stopped


class HTTP2DrainTests(TLSTestCase):
    @inlineCallbacks
    def test_idle_http2_connection_gets_goaway_at_drain(self) -> Any:
        """An idle HTTP/2 connection is told GOAWAY and closed when the gateway drains."""
        answered = threading.Event()
        client = deferToThread(
            h2_request_then_wait_for_close, self.https_port, "www.example.com",
            "/echo/resource", answered,
        )
        while not answered.is_set():
            yield deferLater(reactor, 0.01, lambda: None)
        yield self.gateway.stopService()
        events = yield client
        self.assertIn("ConnectionTerminated", events)


def _read_to_end(sock: ssl.SSLSocket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class CertificateFileTests(TLSTestCase):
    configure_default = False

    @inlineCallbacks
    def test_certificate_file_rotation(self) -> Any:
        """
        A certificate named by the configuration file is served, and
        replacing its files (not the configuration) rotates it for new
        handshakes.
        """
        directory = os.path.dirname(self.config_path)
        first = self.ca.issue("files.example.org")
        _write(os.path.join(directory, "files.pem"), first.chain_pem)
        _write(os.path.join(directory, "files.key"), first.key_pem)
        with open(self.config_path) as f:
            text = f.read()
        self.write_config(
            text
            + "certificates:\n"
            + "  - {name: files, hosts: [files.example.org], certFile: files.pem, keyFile: files.key}\n"
        )
        yield self.swapped()
        session = yield self.handshake("files.example.org")
        self.assertEqual(session.fingerprint, first.fingerprint)

        second = self.ca.issue("files.example.org")
        swapped = self.swapped()
        _write(os.path.join(directory, "files.key"), second.key_pem)
        _write(os.path.join(directory, "files.pem"), second.chain_pem)
        yield swapped
        session = yield self.handshake("files.example.org")
        if session.fingerprint != second.fingerprint:
            # The key was written first: that reload was refused (the key did
            # not match), and the chain's write brings the next one.
            yield self.swapped()
            session = yield self.handshake("files.example.org")
        self.assertEqual(session.fingerprint, second.fingerprint)


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class MinimumVersionTests(TLSTestCase):
    extra_args = ["--tls-min-version", "1.3"]

    @inlineCallbacks
    def test_tls13_minimum(self) -> Any:
        """With --tls-min-version 1.3 a TLS 1.2 client is refused and a TLS 1.3 one served."""
        yield self.assertFailure(
            self.handshake("www.example.com", maximum=ssl.TLSVersion.TLSv1_2), ssl.SSLError
        )
        session = yield self.handshake("www.example.com")
        self.assertEqual(session.version, "TLSv1.3")


class HTTPSOffTests(GatewayTestCase):
    extra_args = ["--https", ""]

    @inlineCallbacks
    def test_https_off(self) -> Any:
        """An empty --https starts no HTTPS listener; HTTP still serves."""
        self.assertNotIn("https", self.gateway.listeners)
        self.assertIsNone(self.gateway.reconciler.current.sni)
        r = yield deferToThread(request_sync, self.port, "GET", "/echo/resource")
        self.assertEqual(r.status, 200)
