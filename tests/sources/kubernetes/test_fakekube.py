"""
Tests of :mod:`gateway.testing.fakekube` that only a fake can run: the raw
wire form of what the contract suite sees through the client (ERROR
events, Status bodies, chunked streams), the test controls (compaction,
closing and dropping watches, restart, injected failures, the request
log), and the selector parser. The API semantics themselves are in
``test_contract.py``, which also runs against a real cluster.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseFailed
from twisted.web.iweb import UNKNOWN_LENGTH

from gateway.sources.kubernetes import (
    GATEWAY_CLASS,
    HTTP_ROUTE,
    INGRESS,
    SECRET,
    ApiError,
    Gone,
    WatchEvent,
)
from gateway.testing._kubeselect import SelectorError, parse_field_selector, parse_label_selector
from gateway.testing.fakekube import FakeKubeServer

from ._support import start_fake, wait_for

JSON = dict[str, Any]


def ingress(name: str, namespace: str = "default", **labels: str) -> JSON:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {},
    }


class _Raw:
    """Raw HTTP to the fake, to check bytes rather than what the client makes of them."""

    def __init__(self, server: FakeKubeServer, token: str | None = None) -> None:
        self.server = server
        self.headers = {"Authorization": [f"Bearer {token or server.token}"]}

    async def get(self, path: str, **params: str) -> tuple[int, bytes]:
        response = await treq.get(
            self.server.url + path,
            params=params,
            headers=self.headers,
            reactor=reactor,
            persistent=False,
        )
        return response.code, await treq.content(response)

    async def send(self, method: str, path: str, body: Any, content_type: str) -> tuple[int, JSON]:
        response = await treq.request(
            method,
            self.server.url + path,
            data=json.dumps(body).encode(),
            headers=dict(self.headers, **{"Content-Type": [content_type]}),
            reactor=reactor,
            persistent=False,
        )
        return response.code, json.loads(await treq.content(response))


class WireTests(TestCase):
    """What the fake sends, byte for byte where it matters."""

    async def test_expired_watch_error_event(self) -> None:
        """
        A watch from a compacted version answers 200, sends exactly one ERROR event holding a 410
        Expired Status, and ends.
        """
        server, _ = await start_fake(self)
        server.set_object(ingress("a"))
        server.compact()
        code, body = await _Raw(server).get(
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
            watch="true",
            resourceVersion="1",
        )
        self.assertEqual(code, 200)
        lines = body.splitlines()
        self.assertEqual(len(lines), 1)
        event = json.loads(lines[0])
        self.assertEqual(event["type"], "ERROR")
        status = event["object"]
        self.assertEqual(
            (status["kind"], status["status"], status["code"], status["reason"]),
            ("Status", "Failure", 410, "Expired"),
        )
        self.assertIn("too old resource version", status["message"])

    async def test_unauthorized_status(self) -> None:
        """A wrong token is answered 401 with an Unauthorized Status."""
        server, _ = await start_fake(self)
        code, body = await _Raw(server, token="wrong").get("/api/v1/namespaces/default/secrets")
        self.assertEqual(code, 401)
        status = json.loads(body)
        self.assertEqual(
            (status["kind"], status["reason"], status["code"]), ("Status", "Unauthorized", 401)
        )
        self.assertIsNone(server.requests[-1].user)

    async def test_anonymous(self) -> None:
        """A fake made with token=None serves requests without credentials."""
        server = FakeKubeServer(reactor=reactor, token=None)
        await server.start()
        self.addCleanup(server.stop)
        response = await treq.get(
            server.url + "/api/v1/namespaces/default/services", reactor=reactor, persistent=False
        )
        self.assertEqual(response.code, 200)
        await treq.content(response)

    async def test_watch_stream_is_chunked_ndjson(self) -> None:
        """
        A watch answers with chunked transfer encoding and one JSON event per line, starting before
        any event exists.
        """
        server, client = await start_fake(self)
        agent_response: list[Any] = []

        async def open_stream() -> None:
            response = await treq.get(
                server.url + "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
                params={"watch": "true", "resourceVersion": server.resource_version},
                headers=_Raw(server).headers,
                reactor=reactor,
                unbuffered=True,
                persistent=False,
            )
            agent_response.append(response)

        opening = Deferred.fromCoroutine(open_stream())
        await wait_for(lambda: agent_response, what="the response headers before any event")
        response = agent_response[0]
        await opening
        self.assertEqual(response.code, 200)
        self.assertIs(response.length, UNKNOWN_LENGTH)  # chunked: no Content-Length
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        server.set_object(ingress("a"))
        server.set_object(ingress("b"))
        server.close_watches()
        body = await treq.content(response)
        self.assertEqual(
            [json.loads(line)["object"]["metadata"]["name"] for line in body.splitlines()],
            ["a", "b"],
        )
        self.assertTrue(body.endswith(b"\n"))

    async def test_unsupported_patch_type(self) -> None:
        """A JSON Patch (not implemented by the fake) is answered 415 rather than misapplied."""
        server, _ = await start_fake(self)
        server.set_object(ingress("a"))
        code, status = await _Raw(server).send(
            "PATCH",
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses/a",
            [{"op": "add", "path": "/metadata/labels/x", "value": "y"}],
            "application/json-patch+json",
        )
        self.assertEqual((code, status["reason"]), (415, "UnsupportedMediaType"))

    async def test_bad_selectors(self) -> None:
        """A malformed label selector or an unsupported field label is answered 400 BadRequest."""
        server, client = await start_fake(self)
        with self.assertRaises(ApiError) as caught:
            await client.list(INGRESS, "default", label_selector="a in (b")
        self.assertEqual((caught.exception.code, caught.exception.reason), (400, "BadRequest"))
        with self.assertRaises(ApiError) as caught:
            await client.list(INGRESS, "default", field_selector="spec.rules=x")
        self.assertEqual(caught.exception.code, 400)
        self.assertIn("field label not supported", caught.exception.message)

    async def test_discovery(self) -> None:
        """
        /version, /apis and a group version describe the served kinds, so kubectl can talk to the
        fake.
        """
        server, _ = await start_fake(self)
        raw = _Raw(server)
        code, body = await raw.get("/version")
        self.assertEqual((code, json.loads(body)["major"]), (200, "1"))
        groups = json.loads((await raw.get("/apis"))[1])
        self.assertIn("networking.k8s.io", [g["name"] for g in groups["groups"]])
        resources = json.loads((await raw.get("/apis/networking.k8s.io/v1"))[1])
        self.assertIn("ingresses/status", [r["name"] for r in resources["resources"]])

    async def test_gateway_api_discovery(self) -> None:
        """
        gateway.networking.k8s.io is served at v1 (preferred) and v1beta1, as with the
        standard-channel CRDs: GatewayClass cluster-scoped, /status for all but ReferenceGrant.
        """
        server, _ = await start_fake(self)
        raw = _Raw(server)
        groups = json.loads((await raw.get("/apis"))[1])["groups"]
        (group,) = [g for g in groups if g["name"] == "gateway.networking.k8s.io"]
        self.assertEqual([v["version"] for v in group["versions"]], ["v1", "v1beta1"])
        self.assertEqual(group["preferredVersion"]["version"], "v1")
        v1 = json.loads((await raw.get("/apis/gateway.networking.k8s.io/v1"))[1])["resources"]
        self.assertEqual(
            sorted((r["name"], r["namespaced"]) for r in v1),
            [
                ("gatewayclasses", False),
                ("gatewayclasses/status", False),
                ("gateways", True),
                ("gateways/status", True),
                ("httproutes", True),
                ("httproutes/status", True),
            ],
        )
        v1beta1 = json.loads((await raw.get("/apis/gateway.networking.k8s.io/v1beta1"))[1])
        self.assertEqual([r["name"] for r in v1beta1["resources"]], ["referencegrants"])


class ListVersionTests(TestCase):
    """The resourceVersion rules of list, and continue tokens."""

    async def test_expired_continue_token_gone(self) -> None:
        """A continue token from before a compaction is answered 410 Gone."""
        server, client = await start_fake(self)
        for i in range(3):
            server.set_object(ingress(f"i{i}"))
        first = await client.list(INGRESS, "default", limit=1)
        server.set_object(ingress("later"))
        server.compact()
        with self.assertRaises(Gone) as caught:
            await client.list(INGRESS, "default", limit=1, continue_token=first.continue_token)
        self.assertEqual((caught.exception.code, caught.exception.reason), (410, "Expired"))

    async def test_pages_are_a_snapshot(self) -> None:
        """Pages after the first show the collection as of the first page, not later writes."""
        server, client = await start_fake(self)
        for i in range(3):
            server.set_object(ingress(f"i{i}"))
        first = await client.list(INGRESS, "default", limit=2)
        server.set_object(ingress("i9"))
        server.delete_object("networking.k8s.io/v1", "Ingress", "default", "i2")
        rest = await client.list(INGRESS, "default", limit=2, continue_token=first.continue_token)
        self.assertEqual([i["metadata"]["name"] for i in rest.items], ["i2"])
        self.assertEqual(rest.resource_version, first.resource_version)

    async def test_exact_and_not_older_than(self) -> None:
        """
        An Exact list at a retained version shows that state; at a compacted one it is Gone;
        NotOlderThan serves the latest state.
        """
        server, client = await start_fake(self)
        server.set_object(ingress("a"))
        then = server.resource_version
        server.set_object(ingress("b"))
        exact = await client.list(
            INGRESS, "default", resource_version=then, resource_version_match="Exact"
        )
        self.assertEqual(
            ([i["metadata"]["name"] for i in exact.items], exact.resource_version), (["a"], then)
        )
        newer = await client.list(
            INGRESS, "default", resource_version=then, resource_version_match="NotOlderThan"
        )
        self.assertEqual([i["metadata"]["name"] for i in newer.items], ["a", "b"])
        server.compact()
        with self.assertRaises(Gone):
            await client.list(
                INGRESS, "default", resource_version=then, resource_version_match="Exact"
            )
        with self.assertRaises(ApiError) as caught:
            await client.list(
                INGRESS, "default", resource_version="999999", resource_version_match="NotOlderThan"
            )
        self.assertEqual(caught.exception.code, 504)


class ControlTests(TestCase):
    """The test controls."""

    async def test_set_and_delete_object_are_writes(self) -> None:
        """
        set_object creates the namespace if needed, applies the status, and with delete_object
        produces watch events.
        """
        server, client = await start_fake(self)
        events: list[WatchEvent] = []
        done = client.watch(
            INGRESS, None, on_event=events.append, resource_version=server.resource_version
        )
        self.addCleanup(done.cancel)
        done.addErrback(lambda f: None)
        stored = server.set_object(
            dict(
                ingress("a", namespace="fresh"),
                status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
            )
        )
        self.assertEqual(stored["status"]["loadBalancer"]["ingress"], [{"ip": "192.0.2.1"}])
        self.assertIsNotNone(server.get_object("v1", "Namespace", None, "fresh"))
        server.delete_object("networking.k8s.io/v1", "Ingress", "fresh", "a")
        await wait_for(lambda: len(events) == 3, what="three events")
        self.assertEqual([e.type for e in events], ["ADDED", "MODIFIED", "DELETED"])
        self.assertIsNone(server.get_object("networking.k8s.io/v1", "Ingress", "fresh", "a"))

    async def test_set_object_gateway_api(self) -> None:
        """
        set_object stores a cluster-scoped GatewayClass with its status and a namespaced HTTPRoute
        with its status, as a controller and a user would have written them.
        """
        server, client = await start_fake(self)
        accepted = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}
        server.set_object(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": "apimgw"},
                "spec": {"controllerName": "apimgw.io/gateway-controller"},
                "status": accepted,
            }
        )
        server.set_object(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "r", "namespace": "apps"},
                "spec": {"parentRefs": [{"name": "gw"}]},
                "status": {"parents": []},
            }
        )
        got = await client.get(GATEWAY_CLASS, None, "apimgw")
        self.assertEqual((got["status"], got["metadata"]["generation"]), (accepted, 1))
        route = await client.get(HTTP_ROUTE, "apps", "r")
        self.assertEqual(route["status"], {"parents": []})

    async def test_namespace_deletion_deletes_contents(self) -> None:
        """Deleting a namespace deletes its objects, each with a DELETED event."""
        server, client = await start_fake(self)
        server.set_object(ingress("a", namespace="gone"))
        server.set_object(ingress("b", namespace="kept"))
        start = server.resource_version
        server.delete_object("v1", "Namespace", None, "gone")
        events: list[WatchEvent] = []
        done = client.watch(INGRESS, None, on_event=events.append, resource_version=start)
        self.addCleanup(done.cancel)
        done.addErrback(lambda f: None)
        await wait_for(lambda: events, what="the DELETED event")
        self.assertEqual(
            [(e.type, e.object["metadata"]["name"]) for e in events], [("DELETED", "a")]
        )
        self.assertEqual(
            [o["metadata"]["name"] for o in server.objects("networking.k8s.io/v1", "Ingress")],
            ["b"],
        )

    async def test_watch_without_version_starts_with_state(self) -> None:
        """A watch without a resourceVersion first reports every existing object as ADDED."""
        server, client = await start_fake(self)
        server.set_object(ingress("a"))
        server.set_object(ingress("b"))
        events: list[WatchEvent] = []
        done = client.watch(INGRESS, "default", on_event=events.append)
        self.addCleanup(done.cancel)
        done.addErrback(lambda f: None)
        await wait_for(lambda: len(events) == 2, what="the initial events")
        self.assertEqual(
            [(e.type, e.object["metadata"]["name"]) for e in events],
            [("ADDED", "a"), ("ADDED", "b")],
        )

    async def test_stop_drops_and_restart_keeps_state(self) -> None:
        """
        stop() breaks open watches without a clean end; restart() serves the same objects on the
        same port.
        """
        server, client = await start_fake(self)
        server.set_object(ingress("a"))
        url = server.url
        done = client.watch(
            INGRESS, "default", on_event=lambda e: None, resource_version=server.resource_version
        )
        await wait_for(lambda: server.open_watches == 1, what="the watch")
        await server.stop()
        with self.assertRaises(ResponseFailed):
            await done
        self.assertEqual(await server.restart(), url)
        listed = await client.list(INGRESS, "default")
        self.assertEqual([i["metadata"]["name"] for i in listed.items], ["a"])

    async def test_bookmarks_carry_latest_version(self) -> None:
        """
        Bookmarks come at the configured interval and carry the latest version, even of writes the
        watch does not see.
        """
        server, client = await start_fake(self)
        events: list[WatchEvent] = []
        done = client.watch(
            INGRESS, "default", on_event=events.append, resource_version=server.resource_version
        )
        self.addCleanup(done.cancel)
        done.addErrback(lambda f: None)
        server.set_object(ingress("elsewhere", namespace="other"))
        latest = server.resource_version
        await wait_for(
            lambda: any(e.type == "BOOKMARK" and e.resource_version == latest for e in events),
            what="a bookmark at the latest version",
        )
        self.assertEqual({e.type for e in events}, {"BOOKMARK"})

    async def test_fail_next_and_request_log(self) -> None:
        """
        fail_next answers the chosen requests with the chosen status once, and the log records verb,
        resource, user and code.
        """
        server, client = await start_fake(self)
        server.fail_next(500, verb="get", plural="secrets")
        with self.assertRaises(ApiError) as caught:
            await client.get(SECRET, "default", "x")
        self.assertEqual(caught.exception.code, 500)
        with self.assertRaises(ApiError) as caught:
            await client.get(SECRET, "default", "x")
        self.assertEqual(caught.exception.code, 404)
        entries = [(r.verb, r.plural, r.namespace, r.name, r.user, r.code) for r in server.requests]
        self.assertEqual(
            entries,
            [
                ("get", "secrets", "default", "x", "admin", 500),
                ("get", "secrets", "default", "x", "admin", 404),
            ],
        )

    async def test_injected_clock(self) -> None:
        """creationTimestamp and managedFields times come from the injected clock."""
        server, client = await start_fake(self, now=lambda: 1_700_000_000.0)
        created = await client.create(INGRESS, {"metadata": {"name": "a"}, "spec": {}}, "default")
        self.assertEqual(created["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z")
        self.assertEqual(created["metadata"]["managedFields"][0]["time"], "2023-11-14T22:13:20Z")
        self.assertEqual(created["metadata"]["managedFields"][0]["manager"], "apimgw")


class SelectorTests(SynchronousTestCase):
    """The selector parser."""

    def test_label_selector_grammar(self) -> None:
        """Every label requirement form matches as the API server's does."""
        labels = {"app": "web", "tier": "front", "example.com/team": "a"}
        cases = {
            "": True,
            "app": True,
            "!app": False,
            "!missing": True,
            "app=web": True,
            "app==web": True,
            "app!=web": False,
            "missing!=x": True,
            "app in (web, api)": True,
            "app notin (web)": False,
            "missing notin (x)": True,
            "app=web,tier=back": False,
            "example.com/team=a": True,
            "app in (a,b),tier": False,
        }
        for text, expected in cases.items():
            self.assertEqual(parse_label_selector(text).matches(labels), expected, text)

    def test_label_selector_errors(self) -> None:
        """Malformed label selectors are refused."""
        for text in ("a in (b", "a=b,", "=b", "a b", "a=b c", "-a=b"):
            with self.assertRaises(SelectorError, msg=text):
                parse_label_selector(text)

    def test_field_selector(self) -> None:
        """
        Field selectors compare whole values with = and !=, and refuse fields the kind does not
        support.
        """
        selector = parse_field_selector(
            "metadata.name=a,type!=Opaque", lambda f: f in ("metadata.name", "type")
        )
        self.assertTrue(selector.matches({"metadata.name": "a", "type": "kubernetes.io/tls"}))
        self.assertFalse(selector.matches({"metadata.name": "a", "type": "Opaque"}))
        with self.assertRaises(SelectorError):
            parse_field_selector("spec.x=1", lambda f: False)
        with self.assertRaises(SelectorError):
            parse_field_selector("nonsense", lambda f: True)
