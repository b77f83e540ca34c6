"""
Blocking TLS clients for the integration tests, run in threads: OpenSSL
(through the standard library's ``ssl``) on a real socket, with or without
SNI, HTTP/1.1 over it with ``http.client``, and HTTP/2 with the ``h2``
library.

The standard library's ``ssl`` is used rather than pyOpenSSL because
``http.client`` and the h2 examples work on its sockets as they are, and
``server_hostname`` sets the SNI name independently of the address
connected to (so no DNS is involved).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .h2client import H2Response, h2_streams
from .harness import Response


@dataclass
class TLSSession:
    """One open TLS connection and what its handshake produced."""

    sock: ssl.SSLSocket
    certificate: x509.Certificate
    alpn: str | None
    version: str | None
    http: http.client.HTTPConnection | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex(":")

    @property
    def common_name(self) -> str:
        (attribute,) = self.certificate.subject.get_attributes_for_oid(
            x509.oid.NameOID.COMMON_NAME
        )
        return str(attribute.value)

    def request(
        self, method: str, path: str, host: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        """One HTTP/1.1 request on this (keep-alive) connection."""
        if self.http is None:
            self.http = http.client.HTTPConnection(host, timeout=30)
            self.http.sock = self.sock
        conn = self.http
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in headers or []:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return Response(response.status, response.getheaders(), body)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def client_context(
    *,
    ca_pem: str | None = None,
    alpn: tuple[str, ...] | None = ("http/1.1",),
    maximum: ssl.TLSVersion | None = None,
    minimum: ssl.TLSVersion | None = None,
    legacy: bool = False,
) -> ssl.SSLContext:
    """
    A client context: verifying against ``ca_pem`` (with host name checks)
    when given, else accepting any certificate (the test then compares the
    certificate itself). ``legacy`` lowers OpenSSL's security level so that
    the client can offer TLS 1.0/1.1 at all.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_pem is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca_pem)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if legacy:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            # The point of a legacy client is the deprecated versions.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.maximum_version = maximum
    return context


def tls_connect(
    port: int,
    server_name: str | None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> TLSSession:
    """
    Connect to 127.0.0.1:``port`` and complete a TLS handshake, sending
    ``server_name`` as SNI (``None``: no SNI at all).
    """
    context = context or client_context()
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock = context.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return TLSSession(
        sock=sock,
        certificate=x509.load_der_x509_certificate(der),
        alpn=sock.selected_alpn_protocol(),
        version=sock.version(),
    )


def handshake(port: int, server_name: str | None, **context: Any) -> TLSSession:
    """A handshake only: the session is closed, its facts returned."""
    session = tls_connect(port, server_name, client_context(**context))
    session.close()
    return session


def h2_request(
    port: int,
    server_name: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    streams: int = 1,
) -> list[H2Response]:
    """
    Open a TLS connection offering only ``h2`` through ALPN and send
    ``streams`` identical requests on it, concurrently (one stream each).
    """
    session = tls_connect(port, server_name, client_context(alpn=("h2",)))
    return h2_exchange(session, server_name, method, path, body, headers, streams)


def h2_exchange(
    session: TLSSession,
    server_name: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    streams: int = 1,
) -> list[H2Response]:
    """
    :func:`h2_request` on a connection already open (``tls_connect`` with
    ALPN ``h2``), for a caller that first looks at the connection (which
    process accepted it, for instance); the session is closed after.
    """
    try:
        if session.alpn != "h2":
            raise AssertionError(f"ALPN chose {session.alpn!r}, not h2")
        return h2_streams(
            session.sock, "https", server_name, method, path, body, headers, streams,
            alpn=session.alpn,
        )
    finally:
        session.close()


def h2_request_then_wait_for_close(
    port: int, server_name: str, path: str, answered: threading.Event
) -> list[str]:
    """
    Send one HTTP/2 request, set ``answered`` once its response is
    complete, then keep the connection idle and read until the server
    closes it. Returns the names of the h2 events seen after the response.
    """
    session = tls_connect(port, server_name, client_context(alpn=("h2",)), timeout=30)
    sock = session.sock
    events: list[str] = []
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            [(":method", "GET"), (":path", path), (":scheme", "https"),
             (":authority", server_name)],
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        done = False
        while True:
            try:
                data = sock.recv(65536)
            except ssl.SSLZeroReturnError:
                data = b""
            if not data:
                break
            for event in conn.receive_data(data):
                if done:
                    events.append(type(event).__name__)
                if isinstance(event, h2.events.StreamEnded):
                    done = True
                    answered.set()
            outgoing = conn.data_to_send()
            if outgoing:
                sock.sendall(outgoing)
    finally:
        answered.set()
        session.close()
    return events
