"""
Tests for the API client (:mod:`gateway.sources.kubernetes`): the watch stream
decoder (unit tests, every chunk boundary), URL paths and error types, and
the client against the fake API server over real loopback HTTP and TLS:
trust of the cluster CA, client certificates, token rotation, renewal
after a 401, watch cancellation and the client-side watch deadline.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.sources.kubernetes import (
    INGRESS,
    INGRESS_CLASS,
    NAMESPACE,
    SERVICE,
    AlreadyExists,
    ApiError,
    ClusterCredentials,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeClient,
    NotFound,
    Unauthorized,
    WatchEvent,
    WatchStalled,
    WatchStreamDecoder,
    WatchStreamError,
    api_error,
    load_kubeconfig,
)
from gateway.testing.fakekube import FakeKubeServer

from ._support import start_fake, wait_for


def _events_stream() -> tuple[bytes, list[tuple[str, str]]]:
    events = [
        {
            "type": "ADDED",
            "object": {
                "metadata": {
                    "name": "a",
                    "resourceVersion": "5",
                    "annotations": {"note": "caf\u00e9 \u2603 \U0001f600"},
                }
            },
        },
        {"type": "MODIFIED", "object": {"metadata": {"name": "b\\n", "resourceVersion": "6"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
        {"type": "DELETED", "object": {"metadata": {"name": "a", "resourceVersion": "8"}}},
    ]
    lines = [json.dumps(e, ensure_ascii=False).encode("utf-8") for e in events]
    # A blank line between events is tolerated (some proxies add them).
    stream = lines[0] + b"\n" + lines[1] + b"\n\n" + lines[2] + b"\r\n" + lines[3] + b"\n"
    expected = [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events]
    return stream, expected


def _summary(events: list[WatchEvent]) -> list[tuple[str, str]]:
    return [(e.type, e.resource_version or "") for e in events]


class WatchStreamDecoderTests(SynchronousTestCase):
    """The decoder yields the same events wherever the stream is cut."""

    def test_whole(self) -> None:
        """A stream fed at once yields every event in order with its object intact."""
        stream, expected = _events_stream()
        decoder = WatchStreamDecoder()
        events = decoder.feed(stream) + decoder.finish()
        self.assertEqual(_summary(events), expected)
        self.assertEqual(
            events[0].object["metadata"]["annotations"]["note"], "caf\u00e9 \u2603 \U0001f600"
        )

    def test_split_at_every_offset(self) -> None:
        """Splitting the stream into two chunks at any byte offset yields the same events."""
        stream, expected = _events_stream()
        for cut in range(len(stream) + 1):
            decoder = WatchStreamDecoder()
            events = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) + decoder.finish()
            self.assertEqual(_summary(events), expected, f"cut at {cut}")

    def test_split_at_every_pair_of_offsets(self) -> None:
        """Splitting the stream into three chunks at any two offsets yields the same events."""
        stream, expected = _events_stream()
        stream = stream[
            : stream.index(b"\n", stream.index(b"\n") + 1) + 1
        ]  # two events: keeps it quick
        expected = expected[:2]
        for i in range(len(stream) + 1):
            for j in range(i, len(stream) + 1):
                decoder = WatchStreamDecoder()
                events = (
                    decoder.feed(stream[:i])
                    + decoder.feed(stream[i:j])
                    + decoder.feed(stream[j:])
                    + decoder.finish()
                )
                self.assertEqual(_summary(events), expected, f"cuts at {i}, {j}")

    def test_byte_by_byte(self) -> None:
        """Feeding one byte at a time yields each event as soon as its newline arrives."""
        stream, expected = _events_stream()
        decoder = WatchStreamDecoder()
        seen: list[WatchEvent] = []
        completed_at = []
        for offset in range(len(stream)):
            new = decoder.feed(stream[offset : offset + 1])
            if new:
                completed_at.append(offset)
            seen += new
        self.assertEqual(_summary(seen), expected)
        self.assertEqual([stream[o : o + 1] for o in completed_at], [b"\n"] * 4)
        self.assertEqual(decoder.finish(), [])

    def test_unterminated_last_line(self) -> None:
        """A last event without a newline is delivered at the end of the stream."""
        decoder = WatchStreamDecoder()
        self.assertEqual(decoder.feed(b'{"type":"ADDED","object":{}}'), [])
        self.assertEqual([e.type for e in decoder.finish()], ["ADDED"])

    def test_garbage(self) -> None:
        """A line that is not a JSON watch event is an error, not a silent skip."""
        for bad in (b"not json\n", b"[1,2]\n", b'{"type":"ADDED"}\n', b'{"type":1,"object":{}}\n'):
            with self.assertRaises(WatchStreamError, msg=bad):
                WatchStreamDecoder().feed(bad)

    def test_line_limit(self) -> None:
        """An unterminated line longer than the limit is an error, so memory stays bounded."""
        decoder = WatchStreamDecoder(max_line=100)
        decoder.feed(b"x" * 60)
        with self.assertRaises(WatchStreamError):
            decoder.feed(b"x" * 60)


class KindAndErrorTests(SynchronousTestCase):
    """URL paths and the mapping of Status answers to exceptions."""

    def test_paths(self) -> None:
        """
        Paths follow the API's layout for core and grouped, namespaced and cluster-scoped kinds.
        """
        self.assertEqual(
            INGRESS.path("ns", "a", "status"),
            "/apis/networking.k8s.io/v1/namespaces/ns/ingresses/a/status",
        )
        self.assertEqual(INGRESS.path(), "/apis/networking.k8s.io/v1/ingresses")
        self.assertEqual(SERVICE.path("default"), "/api/v1/namespaces/default/services")
        self.assertEqual(
            INGRESS_CLASS.path(None, "c"), "/apis/networking.k8s.io/v1/ingressclasses/c"
        )
        self.assertEqual(NAMESPACE.path(None, "x"), "/api/v1/namespaces/x")
        self.assertEqual(SERVICE.path("a/b", "c d"), "/api/v1/namespaces/a%2Fb/services/c%20d")
        with self.assertRaises(ValueError):
            INGRESS_CLASS.path("ns")

    def test_error_types(self) -> None:
        """
        Each HTTP status and reason maps to its exception type, keeping code, reason and message.
        """
        cases = [
            (401, "Unauthorized", Unauthorized),
            (403, "Forbidden", Forbidden),
            (404, "NotFound", NotFound),
            (409, "Conflict", Conflict),
            (409, "AlreadyExists", AlreadyExists),
            (410, "Expired", Gone),
            (422, "Invalid", Invalid),
            (500, "InternalError", ApiError),
        ]
        for code, reason, cls in cases:
            error = api_error(
                code, {"kind": "Status", "code": code, "reason": reason, "message": "m"}
            )
            self.assertIs(type(error), cls)
            self.assertEqual((error.code, error.reason, error.message), (code, reason, "m"))
        plain = api_error(502, None, "Bad Gateway")
        self.assertEqual((plain.code, plain.reason), (502, "Bad Gateway"))


class ClientTests(TestCase):
    """The client against the fake API server over loopback."""

    async def test_tls_with_cluster_ca_and_token(self) -> None:
        """
        Over HTTPS the client trusts the kubeconfig's cluster CA and authenticates with its token.
        """
        server, client = await start_fake(self, tls=True)
        self.assertTrue(client.credentials.server.startswith("https://127.0.0.1:"))
        await client.create(
            SERVICE, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}, "default"
        )
        listed = await client.list(SERVICE, "default")
        self.assertEqual([i["metadata"]["name"] for i in listed.items], ["s"])
        self.assertEqual({r.user for r in server.requests}, {"admin"})

    async def test_tls_client_certificate(self) -> None:
        """A kubeconfig with a client certificate authenticates as the certificate's subject."""
        server, _ = await start_fake(self, tls=True)
        path = server.kubeconfig(
            self.mktemp(), client_certificate=server.issue_client_certificate("gateway")
        )
        client = KubeClient(load_kubeconfig(path), reactor=reactor)
        self.addCleanup(client.close)
        await client.list(INGRESS, "default")
        self.assertEqual(server.requests[-1].user, "gateway")
        self.assertEqual(server.requests[-1].code, 200)

    async def test_tls_untrusted_server(self) -> None:
        """
        A server whose certificate another CA signed is refused: the platform roots are not what a
        cluster trusts.
        """
        server, _ = await start_fake(self, tls=True)
        other = FakeKubeServer(reactor=reactor, tls=True)
        assert other.ca_pem is not None and server.token is not None
        credentials = ClusterCredentials(
            server=server.url, ca_pem=other.ca_pem, authorization=f"Bearer {server.token}"
        )
        client = KubeClient(credentials, reactor=reactor)
        self.addCleanup(client.close)
        before = len(server.requests)
        with self.assertRaises(Exception) as caught:
            await client.list(INGRESS, "default")
        self.assertNotIsInstance(caught.exception, ApiError)
        self.assertEqual(len(server.requests), before)

    async def test_token_file_rotation(self) -> None:
        """
        When the token file changes, the next request carries the new token (the old one is refused
        by then).
        """
        server, _ = await start_fake(self)
        token_path = os.path.abspath(self.mktemp())
        with open(token_path, "w") as f:
            f.write("first-token\n")
        server.add_token("first-token", "first")
        client = KubeClient(
            load_kubeconfig(server.kubeconfig(self.mktemp(), token_file=token_path)),
            reactor=reactor,
        )
        self.addCleanup(client.close)
        await client.list(INGRESS, "default")
        self.assertEqual(server.requests[-1].user, "first")
        # Rotate the way the kubelet does: write a new file, rename over.
        with open(token_path + ".new", "w") as f:
            f.write("second-token")
        os.replace(token_path + ".new", token_path)
        server.revoke_token("first-token")
        server.add_token("second-token", "second")
        await client.list(INGRESS, "default")
        self.assertEqual((server.requests[-1].user, server.requests[-1].code), ("second", 200))
        self.assertEqual([r.code for r in server.requests], [200, 200])

    async def test_unauthorized_renews_and_retries_once(self) -> None:
        """A 401 makes the client renew expiring credentials and resend the request once."""
        server, _ = await start_fake(self)
        server.add_token("new", "renewed")
        renewals = []

        def renew() -> str:
            renewals.append(1)
            return "Bearer new"

        client = KubeClient(
            ClusterCredentials(server=server.url, authorization="Bearer old", refresh=renew),
            reactor=reactor,
        )
        self.addCleanup(client.close)
        await client.list(INGRESS, "default")
        self.assertEqual(len(renewals), 1)
        self.assertEqual(
            [(r.code, r.user) for r in server.requests], [(401, None), (200, "renewed")]
        )

    async def test_unauthorized_without_renewal(self) -> None:
        """A 401 that renewal cannot fix fails with Unauthorized after one retry at most."""
        server, _ = await start_fake(self)
        client = KubeClient(
            ClusterCredentials(
                server=server.url, authorization="Bearer bad", refresh=lambda: "Bearer still-bad"
            ),
            reactor=reactor,
        )
        self.addCleanup(client.close)
        with self.assertRaises(Unauthorized):
            await client.list(INGRESS, "default")
        self.assertEqual([r.code for r in server.requests], [401, 401])

    async def test_watch_cancel_closes_stream(self) -> None:
        """Cancelling a watch closes its connection: the server sees the stream go away."""
        server, client = await start_fake(self)
        done = client.watch(INGRESS, "default", on_event=lambda e: None)
        await wait_for(lambda: server.open_watches == 1, what="the watch to open")
        done.cancel()
        with self.assertRaises(CancelledError):
            await done
        await wait_for(lambda: server.open_watches == 0, what="the server to see the watch closed")

    async def test_watch_ends_cleanly(self) -> None:
        """A watch the server ends (its timeout) fires with None after delivering its events."""
        server, client = await start_fake(self)
        events: list[WatchEvent] = []
        done = client.watch(
            INGRESS, "default", on_event=events.append, resource_version=server.resource_version
        )
        await wait_for(lambda: server.open_watches == 1, what="the watch to open")
        server.set_object(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "x", "namespace": "default"},
                "spec": {},
            }
        )
        server.close_watches()
        self.assertIsNone(await done)
        self.assertEqual([(e.type, e.object["metadata"]["name"]) for e in events], [("ADDED", "x")])

    async def test_watch_http_error(self) -> None:
        """A watch the server refuses with an HTTP error fails with that ApiError."""
        server, client = await start_fake(self)
        server.fail_next(503, verb="watch", reason="ServiceUnavailable")
        with self.assertRaises(ApiError) as caught:
            await client.watch(INGRESS, "default", on_event=lambda e: None)
        self.assertEqual(
            (caught.exception.code, caught.exception.reason), (503, "ServiceUnavailable")
        )

    async def test_watch_deadline(self) -> None:
        """
        A watch the server keeps open past timeoutSeconds plus the grace period is dropped with
        WatchStalled.
        """
        server, _ = await start_fake(self)
        server.ignore_watch_timeouts = True
        assert server.token is not None
        client = KubeClient(
            ClusterCredentials(server=server.url, authorization=f"Bearer {server.token}"),
            reactor=reactor,
            watch_grace=0.2,
        )
        self.addCleanup(client.close)
        with self.assertRaises(WatchStalled):
            await client.watch(INGRESS, "default", on_event=lambda e: None, timeout_seconds=1)
        await wait_for(lambda: server.open_watches == 0, what="the server to see the watch dropped")
