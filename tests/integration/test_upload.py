"""
Request bodies streamed to the backend as they arrive (issue 11), through
the in-process gateway's strict HTTP/1.1 listener, on real loopback sockets,
to a real backend that counts what it receives as it arrives: a 1 GB upload
with bounded memory, a slow backend pausing the client, chunked uploads,
the size limit mid-stream, an early backend answer, ``100 Continue``,
and retries of a stale pooled connection. The policy path streams too:
:mod:`.test_policy_upload`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from httptools import HttpRequestParser
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from gateway.model import Certificate, ObjectRef
from gateway.testing.certs import CertificateAuthority
from gateway.translate import (
    KIND_ROUTE,
    PREFIX,
    PathChange,
    Rewrite,
    RouteEntry,
    Variant,
    WeightedBackend,
    parse_backend,
)

from .harness import GatewayTestCase
from .tlsclient import tls_connect

MiB = 1024 * 1024

#: The 1 GB upload (generated, never on disk).
LARGE = 1024 * MiB

#: One block of the generated body, sent again and again.
_BLOCK = bytes(range(256)) * 1024


@dataclass
class Seen:
    """One request as the backend saw it."""

    method: str
    path: str
    headers: dict[str, str]
    received: int = 0
    complete: bool = False
    aborted: bool = False
    digest: Any = field(default_factory=hashlib.sha256)


class CountingBackend(Protocol):
    """
    An HTTP/1.1 backend that reads bodies as they arrive and keeps only a
    count and a digest. By path: ``slow`` reads nothing until released,
    ``early`` answers 401 right after the header section (then discards),
    ``stale`` closes a reused connection without answering (the race a
    pooled connection loses), ``late-stale`` the same once 1 MiB of the
    body arrived, ``fail-once`` answers 500 to the first
    request carrying an ``x-test-id``, ``partial`` answers 200 right after
    the header section with 10 of the 100 bytes it announces (then reads
    on, the rest of its answer never sent).
    """

    transport: Any

    def __init__(self, factory: BackendFactory) -> None:
        self.factory = factory
        self.parser = HttpRequestParser(self)
        self.seen: Seen | None = None
        self.requests = 0
        self._url = b""
        self._headers: dict[str, str] = {}
        self._answered = False

    def connectionMade(self) -> None:
        self.factory.connections += 1

    def dataReceived(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # noqa: BLE001 - a broken request ends the connection
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.seen is not None and not self.seen.complete:
            self.seen.aborted = True
        if self in self.factory.paused:
            self.factory.paused.remove(self)

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._answered = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.requests += 1
        path = self._url.decode()
        seen = self.seen = Seen(self.parser.get_method().decode(), path, self._headers)
        self.factory.seen.append(seen)
        if "stale" in path and "late" not in path and self.requests > 1:
            self._answered = True
            self.transport.loseConnection()
            return
        if "slow" in path and not self.factory.released:
            self.transport.pauseProducing()
            self.factory.paused.append(self)
        if "partial" in path:
            self._answered = True
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        if "early" in path:
            self._answered = True
            self.transport.write(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
            )

    def on_body(self, data: bytes) -> None:
        seen = self.seen
        assert seen is not None
        seen.received += len(data)
        seen.digest.update(data)
        if "late-stale" in seen.path and self.requests > 1 and seen.received >= MiB:
            self._answered = True
            self.transport.abortConnection()

    def on_message_complete(self) -> None:
        seen = self.seen
        assert seen is not None
        seen.complete = True
        if self._answered:
            return
        test_id = seen.headers.get("x-test-id")
        if "fail-once" in seen.path and test_id and test_id not in self.factory.failed:
            self.factory.failed.add(test_id)
            body = b"not yet"
            self.transport.write(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return
        body = json.dumps(
            {
                "received": seen.received,
                "sha256": seen.digest.hexdigest(),
                "chunked": seen.headers.get("transfer-encoding"),
                "length": seen.headers.get("content-length"),
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )


class BackendFactory(Factory):
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.paused: list[CountingBackend] = []
        self.released = False
        self.connections = 0
        self.failed: set[str] = set()

    def buildProtocol(self, addr: Any) -> CountingBackend:
        return CountingBackend(self)

    def release(self) -> None:
        self.released = True
        for proto in list(self.paused):
            proto.transport.resumeProducing()
        self.paused.clear()


RETRY_POLICY = """\
      <policies>
        <inbound />
        <backend>
          <retry condition="@(context.LastError.Reason == &quot;BackendError&quot;)" count="2" interval="0">
            <forward-request fail-on-error-status-code="true" />
          </retry>
        </backend>
        <outbound />
      </policies>
"""


def _config(backend: str) -> str:
    return (
        "apis:\n"
        f"  - name: retried\n    path: retried\n    serviceUrl: {backend}/api\n"
        "routes:\n"
        f"  - path: /plain\n    pathType: Prefix\n    backend: {backend}\n"
        f"  - path: /dead\n    backend: http://127.0.0.1:1\n"
        "policies:\n"
        "  - scope: api\n    apiId: retried\n    xml: |\n" + RETRY_POLICY
    )


def body_digest(total: int) -> str:
    digest = hashlib.sha256()
    _send_generated(digest.update, total)
    return digest.hexdigest()


def _send_generated(send: Callable[[Any], Any], total: int, chunked: bool = False) -> None:
    block = memoryview(_BLOCK)
    left = total
    while left > 0:
        piece = block[: min(len(block), left)]
        if chunked:
            send(b"%x\r\n" % len(piece))
            send(piece)
            send(b"\r\n")
        else:
            send(piece)
        left -= len(piece)
    if chunked:
        send(b"0\r\n\r\n")


def _head(method: str, path: str, total: int | None, extra: Sequence[str] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: upload.example.com"]
    lines.append("Transfer-Encoding: chunked" if total is None else f"Content-Length: {total}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def upload(
    port: int,
    path: str,
    total: int,
    *,
    tls: bool = False,
    chunked: bool = False,
    method: str = "POST",
    extra: Sequence[str] = (),
    pause_after_head: float = 0.0,
) -> tuple[int, dict[str, str], bytes]:
    """Send a generated body of ``total`` bytes; the response (status, headers, body)."""
    with _connect(port, tls) as sock:
        sock.sendall(_head(method, path, None if chunked else total, extra))
        if pause_after_head:
            # The head alone first: the gateway renders before any body byte.
            time.sleep(pause_after_head)
        _send_generated(sock.sendall, total, chunked)
        return _response(sock)


def too_large_after_the_response_started(port: int, path: str, total: int) -> tuple[bytes, bytes]:
    """
    Send a chunked body of ``total`` bytes to a ``partial`` path once the
    response started: what arrived before the body was sent, and after
    (until the connection closed).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(_head("POST", path, None))
        first = b""
        while not first.endswith(b"0123456789"):
            data = sock.recv(65536)
            if not data:
                break
            first += data
        try:
            _send_generated(sock.sendall, total, chunked=True)
        except OSError:
            pass  # cut while sending
        rest = b""
        try:
            while data := sock.recv(65536):
                rest += data
        except OSError:
            pass
        return first, rest


def send_past_a_paused_backend(
    sock: socket.socket, head: bytes, total: int, release: Callable[[], None]
) -> tuple[int, tuple[int, dict[str, str], bytes]]:
    """
    Send ``head`` and a generated body of ``total`` bytes to a backend that
    does not read: send until the gateway stops taking bytes (2 s without
    progress), then ``release()`` the backend (called in the reactor thread)
    and send the rest. Returns what was sent before the pause, and the
    response.
    """
    sock.sendall(head)
    sock.settimeout(2.0)
    count = 0
    block = memoryview(_BLOCK)
    try:
        while count < total:
            count += sock.send(block[: min(len(block), total - count)])
    except TimeoutError:
        pass  # blocked: nothing moves on until the backend reads
    before = count
    reactor.callFromThread(release)
    sock.settimeout(60)
    while count < total:
        count += sock.send(block[: min(len(block), total - count)])
    return before, _response(sock)


def _connect(port: int, tls: bool) -> socket.socket:
    if not tls:
        return socket.create_connection(("127.0.0.1", port), timeout=60)
    return tls_connect(port, "upload.example.com", timeout=60).sock


def _memory_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, in KiB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1])
    return values["VmRSS"], values["VmHWM"]


class UploadTestCase(GatewayTestCase):
    """The harness's gateway, routing ``/plain`` and the ``retried`` API to a counting backend."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.counting = BackendFactory()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.counting)
        self.addCleanup(port.stopListening)
        self.counting_url = f"http://127.0.0.1:{port.getHost().port}"
        self.write_config(_config(self.counting_url))
        yield self.wait_for(
            lambda: any(
                e.access is not None and e.access.api_id == "retried"
                for e in self.gateway.reconciler.current.config.routes
            )
        )
        self.addCleanup(self._settled)

    def _settled(self) -> Any:
        """Connections closing after an unread body (the linger) see the client's close."""
        channels = self.gateway.listeners["http"].site.h1.channels
        return self.wait_for(lambda: all(c._gone or c.is_idle() for c in list(channels)))

    def last(self, fragment: str) -> Seen:
        return [s for s in self.counting.seen if fragment in s.path][-1]

    @inlineCallbacks
    def slow_backend_pauses_the_client(self, port: int, tls: bool) -> Any:
        total = 256 * MiB
        sent = []

        def run() -> tuple[int, dict[str, str], bytes]:
            with _connect(port, tls) as sock:
                before, response = send_past_a_paused_backend(
                    sock, _head("POST", "/plain/slow", total), total, self.counting.release
                )
                sent.append(before)
                return response

        status, _, body = yield deferToThread(run)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["received"], total)
        # Socket buffers on loopback (client, gateway in and out, backend)
        # hold a few MB each; the gateway itself a few 64 KiB pieces.
        self.assertLess(sent[0], 48 * MiB)


class StreamingTests(UploadTestCase):
    """Bodies reach the backend as they arrive, under backpressure."""

    extra_args = ["--max-body", str(2 * LARGE)]  # noqa: RUF012 (as the harness declares it)

    @inlineCallbacks
    def test_large_upload_bounded_memory(self) -> Any:
        """1 GB through the gateway (client, gateway and backend in this process): peak RSS grows < 64 MB."""
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before, _ = _memory_kib()
        status, _, body = yield deferToThread(upload, self.port, "/plain/large", LARGE)
        _, peak = _memory_kib()
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual((answer["received"], answer["length"]), (LARGE, str(LARGE)))
        self.assertLess(peak - before, 64 * 1024, f"peak RSS grew by {(peak - before) // 1024} MB")

    @inlineCallbacks
    def test_slow_backend_pauses_the_client(self) -> Any:
        """A backend that reads nothing stops the client's sends: bytes in flight stay bounded, then all arrive."""
        yield self.slow_backend_pauses_the_client(self.port, False)

    @inlineCallbacks
    def test_chunked_upload(self) -> Any:
        """A chunked upload goes to the backend chunked, whole and unchanged."""
        total = 5 * MiB + 12345
        status, _, body = yield deferToThread(upload, self.port, "/plain/chunked", total, chunked=True)
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(
            (answer["received"], answer["chunked"], answer["sha256"]),
            (total, "chunked", body_digest(total)),
        )

    @inlineCallbacks
    def test_expect_continue_when_the_backend_exchange_starts(self) -> Any:
        """100 Continue comes once the backend is reached; to a dead backend the answer comes instead, no body sent."""

        def run(path: str) -> tuple[bytes, tuple[int, dict[str, str], bytes] | None]:
            with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
                sock.sendall(_head("PUT", path, 3 * MiB, ["Expect: 100-continue"]))
                first = b""
                while b"\r\n\r\n" not in first:
                    data = sock.recv(65536)
                    if not data:
                        break
                    first += data
                if not first.startswith(b"HTTP/1.1 100 "):
                    return first, None
                _send_generated(sock.sendall, 3 * MiB)
                return first, _response(sock)

        first, answer = yield deferToThread(run, "/plain/continue")
        self.assertTrue(first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), first)
        assert answer is not None
        self.assertEqual((answer[0], json.loads(answer[2])["received"]), (200, 3 * MiB))
        first, answer = yield deferToThread(run, "/dead/continue")
        self.assertIsNone(answer)
        self.assertTrue(first.startswith(b"HTTP/1.1 500 "), first)

    @inlineCallbacks
    def test_client_leaves_mid_upload(self) -> Any:
        """A client that closes after part of its body: the backend sees its request aborted; nothing hangs."""

        def run() -> None:
            with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
                sock.sendall(_head("POST", "/plain/leaving", 64 * MiB))
                _send_generated(sock.sendall, 3 * MiB)

        yield deferToThread(run)
        yield self.wait_for(lambda: bool(self.counting.seen) and self.last("leaving").aborted)
        self.assertLess(self.last("leaving").received, 64 * MiB)
        self.assertEqual(self.gateway.listeners["http"].resource.in_flight, 0)

    @inlineCallbacks
    def test_early_backend_answer(self) -> Any:
        """A backend answering 401 before reading the body ends the client's request; the gateway serves on."""
        status, headers, body = yield deferToThread(upload, self.port, "/plain/early", 8 * MiB)
        self.assertEqual((status, body, headers.get("connection")), (401, b"no", "close"))
        self.assertLess(self.last("early").received, 8 * MiB)
        status, _, body = yield deferToThread(upload, self.port, "/plain/after", 1000)
        self.assertEqual((status, json.loads(body)["received"]), (200, 1000))

    @inlineCallbacks
    def test_retry_on_a_stale_pooled_connection(self) -> Any:
        """
        Bodyless, small and not yet sent streamed bodies are retried on a
        new connection; a body that sent more than the replay buffer is not.
        """
        for method, total in (("GET", 0), ("PUT", 20000), ("PUT", 4 * MiB)):
            # A pooled connection first, then the backend closes it at the next request.
            status, _, _ = yield deferToThread(upload, self.port, "/plain/warm", 10, method="PUT")
            self.assertEqual(status, 200)
            status, _, body = yield deferToThread(
                upload, self.port, "/plain/stale", total, method=method, pause_after_head=0.2
            )
            self.assertEqual(status, 200, body)
            answer = json.loads(body)
            self.assertEqual((answer["received"], answer["sha256"]), (total, body_digest(total)))
        self.assertEqual(self.gateway.pool.retries, 3)
        status, _, _ = yield deferToThread(upload, self.port, "/plain/warm", 10, method="PUT")
        status, _, body = yield deferToThread(
            upload, self.port, "/plain/late-stale", 4 * MiB, method="PUT", pause_after_head=0.2
        )
        self.assertEqual((status, json.loads(body)["statusCode"]), (500, 500))
        self.assertEqual(self.gateway.pool.retries, 3)
        self.assertEqual(len([s for s in self.counting.seen if "late-stale" in s.path]), 1)


class TLSTests(UploadTestCase):
    """Through the HTTPS listener (ALPNServer, HTTP/1.1 on the strict server)."""

    extra_args = ["--max-body", str(2 * LARGE)]  # noqa: RUF012 (as the harness declares it)

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        assert self.https_port is not None
        self.tls_port: int = self.https_port
        issued = CertificateAuthority().issue("upload.example.com")
        generation = self.gateway.reconciler.current.number  # type: ignore[union-attr]
        self.memory.put(
            "upload", Certificate(("upload.example.com",), issued.chain_pem, issued.key_pem, True), 10.0
        )
        yield self.wait_for(lambda: self.gateway.reconciler.current.number > generation)  # type: ignore[union-attr]

    @inlineCallbacks
    def test_chunked_upload(self) -> Any:
        """Over TLS: 64 MB, chunked, whole and unchanged at the backend."""
        total = 64 * MiB
        status, _, body = yield deferToThread(
            upload, self.tls_port, "/plain/tls", total, chunked=True, tls=True
        )
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual((answer["received"], answer["sha256"]), (total, body_digest(total)))

    @inlineCallbacks
    def test_slow_backend_pauses_the_client(self) -> Any:
        """Over TLS: a backend that reads nothing stops the client's sends."""
        yield self.slow_backend_pauses_the_client(self.tls_port, True)

    def _settled(self) -> Any:
        channels = self.gateway.listeners["https"].site.h1.channels
        return self.wait_for(lambda: all(c._gone or c.is_idle() for c in list(channels)))


class VariantTests(UploadTestCase):
    """A Gateway API rule (the variant path) streams too."""

    extra_args = ["--max-body", str(2 * LARGE)]  # noqa: RUF012 (as the harness declares it)

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        origin = ObjectRef("gateway-api", "httproutes", "ns/upload")
        backend = parse_backend(self.counting_url)
        variant = Variant(
            label="ns/upload rule",
            origin=origin,
            schemes=None,
            method=None,
            headers=(),
            query=(),
            backends=(WeightedBackend(backend, 1),),
            rewrite=Rewrite(None, PathChange("prefix", "/rewritten")),
        )
        entry = RouteEntry(
            host="",
            path="/variant",
            match=PREFIX,
            kind=KIND_ROUTE,
            backend=backend,
            origin=origin,
            modified=0.0,
            label="ns/upload /variant",
            variants=(variant,),
        )
        self.install_routes(entry)

    @inlineCallbacks
    def test_streamed_through_a_rule(self) -> Any:
        """A chunked 64 MB upload through a rule with a URL rewrite arrives whole, chunked, at the rewritten path."""
        total = 64 * MiB
        status, _, body = yield deferToThread(
            upload, self.port, "/variant/up", total, chunked=True, pause_after_head=0.2
        )
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(
            (answer["received"], answer["chunked"], answer["sha256"]),
            (total, "chunked", body_digest(total)),
        )
        self.assertEqual(self.counting.seen[-1].path, "/rewritten/up")


class TwistedServerTests(UploadTestCase):
    """``gateway.http1.server: twisted`` still collects the body, then forwards it."""

    extra_args = ["--http1-server", "twisted", "--max-body", str(64 * MiB)]  # noqa: RUF012 (as the harness declares it)

    def _settled(self) -> Any:
        return None

    @inlineCallbacks
    def test_chunked_upload_buffered(self) -> Any:
        """A chunked 16 MB upload reaches the backend whole, with the length twisted.web collected."""
        total = 16 * MiB
        status, _, body = yield deferToThread(upload, self.port, "/plain/twisted", total, chunked=True)
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(
            (answer["received"], answer["length"], answer["chunked"], answer["sha256"]),
            (total, str(total), None, body_digest(total)),
        )


class LimitTests(UploadTestCase):
    """The size limit applies as the body streams."""

    extra_args = ["--max-body", str(1 * MiB)]  # noqa: RUF012 (as the harness declares it)

    @inlineCallbacks
    def test_over_limit_mid_stream(self) -> Any:
        """A chunked body growing past the limit: the client reads 413, the backend sees the request aborted."""
        status, headers, body = yield deferToThread(
            upload, self.port, "/plain/toolarge", 4 * MiB, chunked=True, pause_after_head=0.2
        )
        self.assertEqual((status, json.loads(body)["statusCode"]), (413, 413))
        self.assertEqual(headers.get("connection"), "close")
        yield self.wait_for(lambda: self.last("toolarge").aborted)
        self.assertLessEqual(self.last("toolarge").received, 1 * MiB)
        self.assertFalse(self.last("toolarge").complete)
        status, _, body = yield deferToThread(upload, self.port, "/plain/after", 1000)
        self.assertEqual((status, json.loads(body)["received"]), (200, 1000))

    @inlineCallbacks
    def test_over_limit_after_the_response_started(self) -> Any:
        """
        The backend answered (headers and part of its body) while the
        client's body grows past the limit: the response is cut, and the
        log and metrics blame the client's body, not the backend.
        """
        first, rest = yield deferToThread(
            too_large_after_the_response_started, self.port, "/plain/partial", 4 * MiB
        )
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK\r\n"), first)
        self.assertEqual(rest, b"")  # 10 of the 100 bytes announced: cut
        yield self.wait_for(lambda: self.gateway.listeners["http"].resource.in_flight == 0)
        self.assertTrue(self.logged(
            "the client's request body failed after the response started (413 Request entity too large)"
        ))
        self.assertFalse(self.logged("broke off the response"))
        metrics = (yield self.admin("/metrics")).body.decode()
        self.assertNotIn('kind="broken"', metrics)

    @inlineCallbacks
    def test_declared_over_limit_never_reaches_the_backend(self) -> Any:
        """A Content-Length over the limit is answered 413 at once."""
        status, _, _ = yield deferToThread(upload, self.port, "/plain/declared", 2 * MiB)
        self.assertEqual(status, 413)
        self.assertEqual([s for s in self.counting.seen if "declared" in s.path], [])
