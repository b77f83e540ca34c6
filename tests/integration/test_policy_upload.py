"""
Request bodies on the policy path (issue 11): an API whose operation has
policies streams the client's body to the backend as it arrives, as the
plain path does, rather than collecting it first. Through the in-process
gateway's strict HTTP/1.1 listener, on real loopback sockets, to the
counting backend of :mod:`.test_upload` (it keeps a count and a digest of
what arrives): a large upload, backpressure from a backend that reads
nothing, ``set-body`` (the client's body dropped, the connection kept), a
policy answering before the body is complete, ``retry`` within and beyond
the replay buffer, the size limit mid-stream, and a client leaving.
"""

from __future__ import annotations

import hashlib
import json
import socket
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread

from ..proxy.test_limits import DeferredCounters
from .harness import GatewayTestCase
from .test_upload import (
    BackendFactory,
    CountingBackend,
    MiB,
    Seen,
    _head,
    _response,
    _send_generated,
    body_digest,
    send_past_a_paused_backend,
    too_large_after_the_response_started,
    upload,
)

#: A backend that refuses connections (the ``dead`` APIs).
DEAD = "http://127.0.0.1:1"

#: What ``set-body`` sends instead of the client's body.
REPLACEMENT = "replaced by a policy"

POLICIES = {
    # Inbound policies that change headers: the body goes on as it came.
    "headers": """
<policies>
  <inbound>
    <set-header name="X-Policy" exists-action="override"><value>seen</value></set-header>
  </inbound>
  <backend><forward-request /></backend>
  <outbound>
    <set-header name="X-Out" exists-action="override"><value>out</value></set-header>
  </outbound>
</policies>
""",
    "replaced": f"""
<policies>
  <inbound>
    <set-body>{REPLACEMENT}</set-body>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    "guarded": """
<policies>
  <inbound>
    <check-header name="X-Tenant" failed-check-httpcode="401" failed-check-error-message="Who are you" ignore-case="true">
      <value>contoso</value>
    </check-header>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    "answered": """
<policies>
  <inbound>
    <return-response>
      <set-status code="418" reason="I'm a teapot" />
      <set-body>short and stout</set-body>
    </return-response>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    "retried": """
<policies>
  <inbound />
  <backend>
    <retry condition="@(context.LastError.Reason == &quot;BackendError&quot;)" count="2" interval="0">
      <forward-request fail-on-error-status-code="true" />
    </retry>
  </backend>
  <outbound />
</policies>
""",
    # A limit: with a store that answers later (Redis), the pipeline waits.
    "limited": """
<policies>
  <inbound>
    <rate-limit-by-key calls="100" renewal-period="60" counter-key="@(context.Request.IpAddress)" />
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    # A refused connection retried after a long interval (answered by a
    # body error meanwhile, long before it ends)...
    "deadwait": """
<policies>
  <inbound />
  <backend>
    <retry condition="@(context.LastError.Reason == &quot;BackendConnectionFailure&quot;)" count="1" interval="30">
      <forward-request />
    </retry>
  </backend>
  <outbound />
</policies>
""",
    # ... and after one longer than the body timeout of ExpectTests.
    "deadretry": """
<policies>
  <inbound />
  <backend>
    <retry condition="@(context.LastError.Reason == &quot;BackendConnectionFailure&quot;)" count="1" interval="2">
      <forward-request />
    </retry>
  </backend>
  <outbound />
</policies>
""",
    # APIM's setting for a body to re-send: collected first.
    "buffered": """
<policies>
  <inbound />
  <backend>
    <retry condition="@(context.LastError.Reason == &quot;BackendError&quot;)" count="2" interval="0">
      <forward-request fail-on-error-status-code="true" buffer-request-body="true" />
    </retry>
  </backend>
  <outbound />
</policies>
""",
}


class HoldingBackend(CountingBackend):
    """The counting backend; a path with ``hold`` is answered only once released."""

    factory: HoldingFactory

    def on_message_complete(self) -> None:
        seen = self.seen
        assert seen is not None
        if "hold" in seen.path and not self.factory.released:
            seen.complete = True
            self.factory.held.append(self)
            return
        super().on_message_complete()


class HoldingFactory(BackendFactory):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[HoldingBackend] = []

    def buildProtocol(self, addr: Any) -> HoldingBackend:
        return HoldingBackend(self)

    def release(self) -> None:
        super().release()
        held, self.held = self.held, []
        for proto in held:
            proto.on_message_complete()


def _config(backend: str) -> str:
    apis, policies = [], []
    for name, xml in POLICIES.items():
        url = DEAD if name.startswith("dead") else backend
        apis.append(f"  - name: {name}\n    path: {name}\n    serviceUrl: {url}/api\n")
        policies.append(
            f"  - scope: api\n    apiId: {name}\n    xml: |\n"
            + "".join(f"      {line}\n" for line in xml.strip().splitlines())
        )
    return "apis:\n" + "".join(apis) + "policies:\n" + "".join(policies)


class PolicyUploadCase(GatewayTestCase):
    """The harness's gateway, the APIs above in front of a counting backend."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.counting = HoldingFactory()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.counting)
        self.addCleanup(port.stopListening)
        self.write_config(_config(f"http://127.0.0.1:{port.getHost().port}"))
        yield self.wait_for(
            lambda: set(POLICIES)
            <= {
                e.access.api_id
                for e in self.gateway.reconciler.current.config.routes
                if e.access is not None
            }
        )
        # Every temporary file the process creates while a test runs (the
        # policy path used to spool bodies over 1 MiB to one).
        self.temporary_files: list[str] = []
        for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
            self.patch(tempfile, name, self._counted(name, getattr(tempfile, name)))
        self.addCleanup(self._settled)

    def _counted(self, name: str, make: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.temporary_files.append(name)
            return make(*args, **kwargs)

        return counted

    def _settled(self) -> Any:
        """Connections closing after an unread body (the linger) see the client's close."""
        channels = self.gateway.listeners["http"].site.h1.channels
        return self.wait_for(lambda: all(c._gone or c.is_idle() for c in list(channels)))

    def seen(self, fragment: str) -> list[Seen]:
        return [s for s in self.counting.seen if fragment in s.path]


class StreamedThroughPoliciesTests(PolicyUploadCase):
    extra_args = ["--max-body", str(512 * MiB)]  # noqa: RUF012 (as the harness declares it)

    @inlineCallbacks
    def test_large_upload_streams_through_inbound_policies(self) -> Any:
        """
        32 MB with a Content-Length, then chunked, through set-header
        policies: whole at the backend (same digest), framed as the client
        framed it (a collected body would have gone with a Content-Length),
        the policies applied, and no temporary file created.
        """
        total = 32 * MiB + 4321
        for chunked in (False, True):
            status, headers, body = yield deferToThread(
                upload, self.port, "/headers/large", total, chunked=chunked, pause_after_head=0.1
            )
            self.assertEqual(status, 200, body)
            answer = json.loads(body)
            self.assertEqual((answer["received"], answer["sha256"]), (total, body_digest(total)))
            if chunked:
                self.assertEqual((answer["chunked"], answer["length"]), ("chunked", None))
            else:
                self.assertEqual((answer["chunked"], answer["length"]), (None, str(total)))
            self.assertEqual(self.seen("large")[-1].headers.get("x-policy"), "seen")
            self.assertEqual(headers.get("x-out"), "out")
        self.assertEqual(self.temporary_files, [])

    @inlineCallbacks
    def test_small_body_sent_with_its_head(self) -> Any:
        """A small body sent with its head arrives whole, with its length."""
        status, _, body = yield deferToThread(upload, self.port, "/headers/small", 3000)
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(
            (answer["received"], answer["length"], answer["sha256"]),
            (3000, "3000", body_digest(3000)),
        )

    @inlineCallbacks
    def test_slow_backend_pauses_the_client(self) -> Any:
        """
        A backend that reads nothing stops the client's sends on the policy
        path too (nothing spooled): bytes in flight stay bounded, then all
        arrive once it reads.
        """
        total = 256 * MiB
        sent = []

        def run() -> tuple[int, dict[str, str], bytes]:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                before, response = send_past_a_paused_backend(
                    sock, _head("POST", "/headers/slow", total), total, self.counting.release
                )
                sent.append(before)
                return response

        status, _, body = yield deferToThread(run)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["received"], total)
        # Socket buffers on loopback hold a few MB each (see test_upload).
        self.assertLess(sent[0], 48 * MiB)
        self.assertEqual(self.temporary_files, [])

    @inlineCallbacks
    def test_set_body_drops_the_clients_body_and_keeps_the_connection(self) -> Any:
        """
        set-body: the backend receives the replacement; the client's 4 MB
        is read and dropped, and the same connection serves the next request.
        """
        total = 4 * MiB

        def run() -> tuple[tuple[int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                sock.sendall(_head("POST", "/replaced/hold", total))
                _send_generated(sock.sendall, total)
                first = _response(sock)
                sock.sendall(_head("POST", "/headers/after", 1000))
                _send_generated(sock.sendall, 1000)
                return first, _response(sock)

        # The backend holds its answer until the gateway has read the whole
        # client body (then the answer can keep the connection).
        done = deferToThread(run)
        yield self.wait_for(lambda: bool(self.seen("/api/hold")))
        channels = self.gateway.listeners["http"].site.h1.channels
        yield self.wait_for(
            lambda: any(c.queue and c.queue[0].complete for c in list(channels))
        )
        self.counting.release()
        (status, headers, body), (after, _, after_body) = yield done
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        replacement = REPLACEMENT.encode()
        self.assertEqual(
            (answer["received"], answer["length"], answer["sha256"]),
            (len(replacement), str(len(replacement)), hashlib.sha256(replacement).hexdigest()),
        )
        self.assertNotEqual(headers.get("connection"), "close")
        self.assertEqual((after, json.loads(after_body)["received"]), (200, 1000))

    @inlineCallbacks
    def test_policy_answers_before_the_body_is_complete(self) -> Any:
        """
        check-header (401) and return-response (418) answer while 8 MB are
        still on their way: the client reads the answer (the connection then
        closes, as after an early backend answer); the backend is never
        asked; the gateway serves the next request.
        """
        for path, expected in (("/guarded/early", 401), ("/answered/early", 418)):
            status, headers, body = yield deferToThread(
                upload, self.port, path, 8 * MiB, pause_after_head=0.1
            )
            self.assertEqual((status, headers.get("connection")), (expected, "close"), body)
            status, _, body = yield deferToThread(upload, self.port, "/headers/after", 1000)
            self.assertEqual((status, json.loads(body)["received"]), (200, 1000))
        self.assertEqual(self.seen("early"), [])
        self.assertEqual(self.gateway.listeners["http"].resource.in_flight, 0)

    @inlineCallbacks
    def test_client_leaves_mid_upload(self) -> Any:
        """A client closing after part of its body: the backend's request is aborted; nothing hangs."""

        def run() -> None:
            with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
                sock.sendall(_head("POST", "/headers/leaving", 64 * MiB))
                _send_generated(sock.sendall, 3 * MiB)

        yield deferToThread(run)
        yield self.wait_for(lambda: bool(self.seen("leaving")) and self.seen("leaving")[-1].aborted)
        self.assertLess(self.seen("leaving")[-1].received, 64 * MiB)
        yield self.wait_for(lambda: self.gateway.listeners["http"].resource.in_flight == 0)


class RetryTests(PolicyUploadCase):
    """``retry`` on the policy path sends a streamed body again only from its replay buffer."""

    @inlineCallbacks
    def test_retried_within_the_replay_buffer(self) -> Any:
        """The first attempt fails (500); a 20 kB body, held whole for replay, arrives whole twice."""
        total = 20000
        status, _, body = yield deferToThread(
            upload, self.port, "/retried/fail-once", total,
            extra=["x-test-id: small"], pause_after_head=0.1,
        )
        self.assertEqual(status, 200, body)
        attempts = self.seen("fail-once")
        self.assertEqual(len(attempts), 2)
        for seen in attempts:
            self.assertEqual((seen.received, seen.digest.hexdigest()), (total, body_digest(total)))

    @inlineCallbacks
    def test_not_retried_beyond_the_replay_buffer(self) -> Any:
        """
        A 4 MB body sent whole once cannot be sent again: the failed
        attempt is the last (on-error, APIM's 500), and the log says why.
        """
        status, _, body = yield deferToThread(
            upload, self.port, "/retried/fail-once", 4 * MiB,
            extra=["x-test-id: large"], pause_after_head=0.1,
        )
        self.assertEqual((status, json.loads(body)["statusCode"]), (500, 500), body)
        self.assertEqual(len(self.seen("fail-once")), 1)
        self.assertTrue(self.logged("not retried, more of the request body was sent"))

    @inlineCallbacks
    def test_buffer_request_body_retries_a_large_body(self) -> Any:
        """
        forward-request buffer-request-body="true": the 3 MB body is
        collected first (sent with its length, spilled to a temporary
        file), and the retry sends it whole again.
        """
        total = 3 * MiB
        status, _, body = yield deferToThread(
            upload, self.port, "/buffered/fail-once", total, chunked=True,
            extra=["x-test-id: buffered"], pause_after_head=0.1,
        )
        self.assertEqual(status, 200, body)
        attempts = self.seen("fail-once")
        self.assertEqual(len(attempts), 2)
        for seen in attempts:
            self.assertEqual((seen.received, seen.digest.hexdigest()), (total, body_digest(total)))
            self.assertEqual(seen.headers.get("content-length"), str(total))
        self.assertEqual(self.temporary_files, ["TemporaryFile"])


class CounterWaitTests(PolicyUploadCase):
    """The body fails while the pipeline waits for its counters (Redis)."""

    @inlineCallbacks
    def test_body_failing_during_the_wait_is_the_answer(self) -> Any:
        """
        A malformed chunk arrives while the rate-limit counters have not
        answered: the client is answered 400 (the body's error) at once,
        before they answer; the backend is never asked, nothing left in
        flight once they do.
        """
        resource = self.gateway.listeners["http"].resource
        store = DeferredCounters(resource._counters)
        self.patch(resource, "_counters", store)
        sock = yield deferToThread(socket.create_connection, ("127.0.0.1", self.port), 20)
        self.addCleanup(sock.close)
        yield deferToThread(sock.sendall, _head("POST", "/limited/wait", None))
        yield self.wait_for(lambda: bool(store.pending))
        yield deferToThread(sock.sendall, b"zz\r\nnot a chunk\r\n")
        status, headers, body = yield deferToThread(_response, sock)
        self.assertEqual((status, json.loads(body)["statusCode"]), (400, 400), body)
        self.assertEqual(headers.get("connection"), "close")
        self.assertTrue(store.pending)  # answered before the counters did
        store.fire()
        self.assertEqual(self.seen("wait"), [])
        self.assertEqual(resource.in_flight, 0)


class LimitTests(PolicyUploadCase):
    """``gateway.request.max-body`` applies as the body streams through policies."""

    extra_args = ["--max-body", str(1 * MiB)]  # noqa: RUF012 (as the harness declares it)

    @inlineCallbacks
    def test_over_limit_mid_stream(self) -> Any:
        """A chunked body growing past the limit: 413 to the client, the backend's request aborted, never complete."""
        status, headers, body = yield deferToThread(
            upload, self.port, "/headers/toolarge", 4 * MiB, chunked=True, pause_after_head=0.1
        )
        self.assertEqual((status, json.loads(body)), (413, {"statusCode": 413, "message": "Request entity too large"}))
        self.assertEqual(headers.get("connection"), "close")
        yield self.wait_for(lambda: self.seen("toolarge")[-1].aborted)
        self.assertLessEqual(self.seen("toolarge")[-1].received, 1 * MiB)
        self.assertFalse(self.seen("toolarge")[-1].complete)
        status, _, body = yield deferToThread(upload, self.port, "/headers/after", 1000)
        self.assertEqual((status, json.loads(body)["received"]), (200, 1000))

    @inlineCallbacks
    def test_set_body_over_limit(self) -> Any:
        """
        set-body drops the client's body, but still reads it: past the limit
        (8 MB chunked, the backend holding its answer meanwhile) the client
        is answered 413; the backend got only the replacement.
        """

        def run() -> tuple[int, dict[str, str], bytes]:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                sock.sendall(_head("POST", "/replaced/hold-toolarge", None))
                _send_generated(sock.sendall, 8 * MiB, chunked=True)
                # (Without the limit, the backend's 200 would come now.)
                reactor.callFromThread(self.counting.release)
                return _response(sock)

        status, headers, body = yield deferToThread(run)
        self.assertEqual((status, json.loads(body)), (413, {"statusCode": 413, "message": "Request entity too large"}))
        self.assertEqual(headers.get("connection"), "close")
        self.assertEqual(self.seen("toolarge")[-1].received, len(REPLACEMENT))
        yield self.wait_for(lambda: self.gateway.listeners["http"].resource.in_flight == 0)

    @inlineCallbacks
    def test_over_limit_after_the_response_started(self) -> Any:
        """
        The backend's response is streaming when the client's body grows
        past the limit, the body going to the backend (through an outbound
        policy) or dropped after set-body: the response is cut, and the log
        and metrics blame the client's body, not the backend.
        """
        for path in ("/headers/partial", "/replaced/partial"):
            first, rest = yield deferToThread(
                too_large_after_the_response_started, self.port, path, 4 * MiB
            )
            self.assertTrue(first.startswith(b"HTTP/1.1 200 OK\r\n"), first)
            if path.startswith("/headers"):
                self.assertIn(b"x-out: out\r\n", first)
            self.assertEqual(rest, b"")  # 10 of the 100 bytes announced: cut
            yield self.wait_for(lambda: self.gateway.listeners["http"].resource.in_flight == 0)
            self.assertEqual(len(self.logged(
                "the client's request body failed after the response started (413 Request entity too large)"
            )), 1 if path.startswith("/headers") else 2)
        self.assertFalse(self.logged("broke off the response"))
        metrics = (yield self.admin("/metrics")).body.decode()
        self.assertNotIn('kind="broken"', metrics)


class RetryWaitTests(PolicyUploadCase):
    """The body fails while the pipeline waits to retry: answered at once."""

    @inlineCallbacks
    def test_body_failing_during_the_retry_interval(self) -> Any:
        """
        The first attempt is refused and the retry waits 30 s; a malformed
        chunk arrives meanwhile: the client is answered 400 at once (this
        test times out long before the interval ends), nothing left in
        flight.
        """
        sock = yield deferToThread(socket.create_connection, ("127.0.0.1", self.port), 20)
        self.addCleanup(sock.close)
        yield deferToThread(sock.sendall, _head("POST", "/deadwait/x", None))
        # The first attempt failed: the run waits for its retry.
        yield self.wait_for(lambda: self.logged("failed for POST /deadwait/x"))
        yield deferToThread(sock.sendall, b"zz\r\nnot a chunk\r\n")
        status, headers, body = yield deferToThread(_response, sock)
        self.assertEqual((status, json.loads(body)["statusCode"]), (400, 400), body)
        self.assertEqual(headers.get("connection"), "close")
        yield self.wait_for(lambda: self.gateway.listeners["http"].resource.in_flight == 0)

    test_body_failing_during_the_retry_interval.timeout = 10  # type: ignore[attr-defined]


class ExpectTests(PolicyUploadCase):
    """A client waiting for ``100 Continue`` while the pipeline waits to retry."""

    environ = {"NET_SERVER_BODY_TIMEOUT": "1"}  # noqa: RUF012 (as the harness declares it)

    @inlineCallbacks
    def test_no_body_timeout_before_the_100(self) -> Any:
        """
        Expect: 100-continue; both attempts refused, 2 s apart, with a 1 s
        body timeout: the client, waiting for the 100 as it should, gets
        the pipeline's answer (APIM's 500), not a 408 for a body nobody
        asked for yet; no 100 went out.
        """

        def run() -> bytes:
            with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
                sock.sendall(_head("POST", "/deadretry/x", 10, ["Expect: 100-continue"]))
                answer = b""
                while data := sock.recv(65536):
                    answer += data
                return answer

        answer = yield deferToThread(run)
        self.assertTrue(answer.startswith(b"HTTP/1.1 500 "), answer)
        self.assertNotIn(b" 100 Continue", answer)
