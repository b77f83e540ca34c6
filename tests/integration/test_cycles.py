"""
A proxied request leaves no reference cycle behind.

Every object a request uses (its request object and headers, the proxy's
exchange, the backend client's exchange, the body) must be freed by
reference counting when the request ends. If two of them point at each
other, nothing is freed until Python's cyclic garbage collector runs: a
collection every few hundred requests, whose cost grows with the heap and
whose pauses land in the latency tail (measured in docs/benchmarks.md: a
cycle between the proxy's exchange and the backend client's left ~7
objects per request to the collector and pauses of tens of ms).

The check: with the collector disabled, send requests over one keep-alive
connection, then collect with ``DEBUG_SAVEALL`` (what would be freed is
kept in ``gc.garbage``) and look for request-scoped objects of ours.
"""

from __future__ import annotations

import gc
import http.client
import socket
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from .harness import CONFIG, GatewayTestCase
from .test_policies import config as policy_config

#: Classes whose instances live for one request, or for one client
#: connection (``H1Channel``: the test's connections are closed, and their
#: channels gone, before the collection; pooled backend connections live on).
REQUEST_SCOPED = frozenset(
    {
        "H1Channel",
        "H1Request",
        "BoundedBody",
        "StreamedBody",
        "_Exchange",
        "_VariantExchange",
        "PolicyRun",
        "Exchange",
    }
)


def _body_after_head(port: int, calls: list[tuple[str, str, bytes]]) -> list[int]:
    """
    Send ``calls`` on one keep-alive connection, each body a moment after
    its head: the gateway has rendered the request by then, and the body
    streams to the backend (``StreamedBody``) rather than arriving whole.
    """
    statuses = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for method, path, body in calls:
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            )
            time.sleep(0.05)
            sock.sendall(body)
            status = int(reader.readline().split()[1])
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            reader.read(length)
            statuses.append(status)
    return statuses


def _requests(port: int, calls: list[tuple[str, str, bytes]]) -> list[int]:
    """Send ``calls`` (method, path, body) on one keep-alive connection; the statuses."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses = []
    try:
        for method, path, body in calls:
            conn.request(method, path, body=body or None)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    return statuses


class CycleCheck(GatewayTestCase):
    """Sends requests with the collector off, then lists what only it would free."""

    @inlineCallbacks
    def _cyclic_garbage(self, calls: list[tuple[str, str, bytes]], send: Any = _requests) -> Any:
        """
        The request-scoped classes of ours found in cyclic garbage after
        ``calls`` (sent by ``send``), and the statuses.
        """
        # One request first: the backend connection and the pools exist.
        yield deferToThread(send, self.port, calls[:1])
        gc.collect()
        gc.disable()
        try:
            statuses = yield deferToThread(send, self.port, calls)
            # The client closed its connections: wait until the gateway saw
            # it (the channels are gone from the server's weak set only if
            # nothing holds them, or when the collector runs: it is off).
            channels = self.gateway.listeners["http"].site.h1.channels
            yield self.wait_for(lambda: not any(not c._gone for c in channels))
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            found = sorted(
                {
                    type(o).__qualname__
                    for o in gc.garbage
                    if type(o).__module__.startswith("gateway.")
                    and type(o).__qualname__ in REQUEST_SCOPED
                }
            )
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        return found, statuses


class RequestCycleTests(CycleCheck):
    @inlineCallbacks
    def test_plain_route_and_api(self) -> Any:
        """Plain routes and APIs, with and without a body, leave nothing to the collector."""
        calls = [
            ("GET", "/app/x", b""),
            ("GET", "/echo/resource", b""),
            ("POST", "/echo/resource", b'{"a": 1}'),
            ("GET", "/nowhere", b""),
        ] * 5
        found, statuses = yield self._cyclic_garbage(calls)
        self.assertEqual(statuses, [200, 200, 200, 404] * 5)
        self.assertEqual(found, [])

    @inlineCallbacks
    def test_backend_failure(self) -> Any:
        """A backend that refuses the connection (answered 500, as APIM does) leaves nothing to the collector either."""
        found, statuses = yield self._cyclic_garbage([("GET", "/dead", b"")] * 5)
        self.assertEqual(statuses, [500] * 5)
        self.assertEqual(found, [])




    @inlineCallbacks
    def test_streamed_request_body(self) -> Any:
        """A body that arrives after its head streams to the backend; neither side keeps the other."""
        calls = [("POST", "/echo/resource", b'{"a": 1}'), ("PUT", "/app/x", b"payload")] * 3
        found, statuses = yield self._cyclic_garbage(calls, send=_body_after_head)
        self.assertEqual(statuses, [200, 200] * 3)
        self.assertEqual(found, [])


class FailingAtOnceCycleTests(CycleCheck):
    """A backend host name Twisted refuses at once: the exchange fails inside the call that starts it."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.write_config(
            CONFIG.format(backend=self.backend_url, dead_port=self.dead_port)
            + "  - path: /bad-host\n    backend: http://bad_host.example:80\n"
        )
        yield self.wait_for(
            lambda: any(e.label.endswith("/bad-host") or "bad-host" in e.label
                        for e in self.gateway.reconciler.current.config.routes)
        )

    @inlineCallbacks
    def test_failed_before_the_call_returned(self) -> Any:
        """Answered 500 (no connection possible), and nothing left to the collector."""
        found, statuses = yield self._cyclic_garbage([("GET", "/bad-host", b"")] * 5)
        self.assertEqual(statuses, [500] * 5)
        self.assertEqual(found, [])


class PolicyCycleCheck(CycleCheck):
    """A gateway serving test_policies' configuration (APIs whose operations have policies)."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.write_config(policy_config(self.backend_url, self.dead_port))
        yield self.wait_for(
            lambda: {"moved", "checked"}
            <= {
                e.access.api_id
                for e in self.gateway.reconciler.current.config.routes
                if e.access is not None
            }
        )


class PolicyCycleTests(PolicyCycleCheck):
    """The same checks on the policy path."""

    @inlineCallbacks
    def test_policy_pipelines(self) -> Any:
        """Inbound, backend and outbound policies that edit headers, query, URL, method and body."""
        calls = [
            ("GET", "/headers/x?page=1&api-version=2020", b""),
            ("GET", "/rewrite/items/42?trace=on", b""),
        ] * 5
        found, statuses = yield self._cyclic_garbage(calls)
        self.assertEqual(statuses, [200, 200] * 5)
        self.assertEqual(found, [])


def _one_per_connection(port: int, calls: list[tuple[str, str, bytes]]) -> list[int]:
    """Each call on its own connection, its body a moment after its head (an answer may close it)."""
    statuses = []
    for call in calls:
        statuses += _body_after_head(port, [call])
    return statuses


class PolicyStreamedCycleTests(PolicyCycleCheck):
    """Streamed request bodies on the policy path (forwarded, replaced, or answered early)."""

    @inlineCallbacks
    def test_streamed_body_through_policies(self) -> Any:
        """A body arriving after its head streams through policies to the backend; nothing left to the collector."""
        calls = [("POST", "/headers/x", b'{"a": 1}'), ("PUT", "/outbound/x", b"payload")] * 3
        found, statuses = yield self._cyclic_garbage(calls, send=_body_after_head)
        self.assertEqual(statuses, [200, 202] * 3)
        self.assertEqual(found, [])

    @inlineCallbacks
    def test_streamed_body_replaced_or_answered_early(self) -> Any:
        """
        set-body drops the client's body; a policy answers before the body
        (the connection then closes with the body unread): nothing is left
        to the collector, the channel and its parser included.
        """
        calls = [("GET", "/rewrite/items/42", b"dropped"), ("POST", "/checked/x", b"unread")] * 3
        found, statuses = yield self._cyclic_garbage(calls, send=_one_per_connection)
        self.assertEqual(statuses, [200, 403] * 3)
        self.assertEqual(found, [])
