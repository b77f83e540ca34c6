"""
The contract of the Kubernetes API that the gateway depends on, as one
suite that runs against :class:`gateway.testing.fakekube.FakeKubeServer`
and, unchanged, against a real kube-apiserver when
``APIMGW_TEST_KUBECONFIG`` names a kubeconfig (skipped otherwise).

Each test works in a namespace of its own, created and deleted by the
test (cluster-scoped objects it creates are deleted too), so it can run
against a shared cluster. The assertions are only what the API documents:
resourceVersions are compared for equality, never ordered.
"""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SkipTest, TestCase

from gateway.sources.kubernetes import (
    ENDPOINT_SLICE,
    EVENT,
    GATEWAY,
    GATEWAY_CLASS,
    HTTP_ROUTE,
    INGRESS,
    INGRESS_CLASS,
    LEASE,
    REFERENCE_GRANT,
    SECRET,
    SERVICE,
    AlreadyExists,
    ApiError,
    ClusterCredentials,
    Conflict,
    Gone,
    Invalid,
    Kind,
    KubeClient,
    NotFound,
    Unauthorized,
    WatchEvent,
)

from ._support import REAL_KUBECONFIG_VARIABLE, Backend, fake_backend, real_backend, wait_for

JSON = dict[str, Any]


def ingress(name: str, labels: dict[str, str] | None = None, host: str = "a.example.com") -> JSON:
    """A valid Ingress with one rule."""
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "echo", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def http_route(
    name: str, host: str = "a.example.com", labels: dict[str, str] | None = None
) -> JSON:
    """A valid HTTPRoute: one parent Gateway, one host, one rule to a Service."""
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": [host],
            "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}],
        },
    }


def gateway(name: str, port: int = 80) -> JSON:
    """A valid Gateway with one HTTP listener."""
    return {
        "metadata": {"name": name},
        "spec": {
            "gatewayClassName": "apimgw",
            "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}],
        },
    }


def condition(kind: str, status: str, reason: str, generation: int) -> JSON:
    """A metav1.Condition, every field the CRD schemas require."""
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": f"{kind} {status}",
        "lastTransitionTime": "2024-01-01T00:00:00Z",
        "observedGeneration": generation,
    }


def route_status(generation: int, reason: str = "Accepted") -> JSON:
    """An HTTPRoute status with one parent, as a controller writes it."""
    return {
        "parents": [
            {
                # Group and kind spelt out: a real server defaults them.
                "parentRef": {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "gw",
                },
                "controllerName": "apimgw.io/gateway-controller",
                "conditions": [condition("Accepted", "True", reason, generation)],
            }
        ]
    }


def names(items: list[JSON]) -> list[str]:
    return [item["metadata"]["name"] for item in items]


class _Watch:
    """A watch whose events are collected, stopped at the end of the test."""

    def __init__(
        self, test: TestCase, client: KubeClient, kind: Kind, namespace: str | None, **kwargs: Any
    ) -> None:
        self.events: list[WatchEvent] = []
        self.error: Exception | None = None
        self.ended = False
        self.done = client.watch(kind, namespace, on_event=self.events.append, **kwargs)
        self.done.addCallbacks(self._finished, self._failed)
        test.addCleanup(self.stop)

    def _finished(self, _: object) -> None:
        self.ended = True

    def _failed(self, failure: Any) -> None:
        self.ended = True
        if not failure.check(CancelledError):
            self.error = failure.value

    def stop(self) -> None:
        if not self.ended:
            self.done.cancel()

    async def count(self, n: int, timeout: float = 10.0) -> list[WatchEvent]:
        await wait_for(
            lambda: len(self.events) >= n or self.error is not None, timeout, f"{n} watch events"
        )
        if self.error is not None:
            raise self.error
        return self.events


class ContractTests:
    """The suite; a subclass provides :meth:`backend`."""

    async def backend(self) -> Backend:
        raise NotImplementedError

    async def test_create_sets_server_fields(self) -> None:
        """
        A created object gets a uid, creationTimestamp, resourceVersion, generation 1 and timed
        managedFields, and get returns it.
        """
        b = await self.backend()
        created = await b.client.create(INGRESS, ingress("a"), b.namespace)
        meta = created["metadata"]
        self.assertTrue(meta["uid"])
        self.assertTrue(meta["creationTimestamp"])
        self.assertTrue(meta["resourceVersion"])
        self.assertEqual(meta["generation"], 1)
        self.assertEqual(meta["namespace"], b.namespace)
        self.assertTrue(meta["managedFields"])
        for entry in meta["managedFields"]:
            self.assertTrue(entry["time"])
        got = await b.client.get(INGRESS, b.namespace, "a")
        self.assertEqual(got["metadata"]["uid"], meta["uid"])
        self.assertEqual(got["metadata"]["resourceVersion"], meta["resourceVersion"])
        self.assertEqual((got["kind"], got["apiVersion"]), ("Ingress", "networking.k8s.io/v1"))

    async def test_create_existing_name_already_exists(self) -> None:
        """Creating a second object with a taken name fails with 409 AlreadyExists."""
        b = await self.backend()
        await b.client.create(INGRESS, ingress("a"), b.namespace)
        with self.assertRaises(AlreadyExists) as caught:
            await b.client.create(INGRESS, ingress("a"), b.namespace)
        self.assertEqual((caught.exception.code, caught.exception.reason), (409, "AlreadyExists"))

    async def test_get_missing_not_found(self) -> None:
        """Getting an object that does not exist fails with 404 NotFound."""
        b = await self.backend()
        with self.assertRaises(NotFound) as caught:
            await b.client.get(INGRESS, b.namespace, "absent")
        self.assertEqual((caught.exception.code, caught.exception.reason), (404, "NotFound"))

    async def test_update_with_stale_version_conflicts(self) -> None:
        """
        An update naming a resourceVersion that is no longer current fails with 409 Conflict; one
        naming the current version succeeds.
        """
        b = await self.backend()
        created = await b.client.create(INGRESS, ingress("a"), b.namespace)
        first = dict(created, metadata=dict(created["metadata"], labels={"round": "1"}))
        updated = await b.client.update(INGRESS, first)
        self.assertNotEqual(
            updated["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]
        )
        self.assertEqual(updated["metadata"]["uid"], created["metadata"]["uid"])
        stale = dict(created, metadata=dict(created["metadata"], labels={"round": "2"}))
        with self.assertRaises(Conflict) as caught:
            await b.client.update(INGRESS, stale)
        self.assertEqual((caught.exception.code, caught.exception.reason), (409, "Conflict"))
        got = await b.client.get(INGRESS, b.namespace, "a")
        self.assertEqual(got["metadata"]["labels"], {"round": "1"})

    async def test_update_without_version_is_unconditional(self) -> None:
        """An update without metadata.resourceVersion replaces the object whatever its version."""
        b = await self.backend()
        await b.client.create(INGRESS, ingress("a"), b.namespace)
        body = ingress("a", labels={"x": "y"})
        body["metadata"]["namespace"] = b.namespace
        updated = await b.client.update(INGRESS, body)
        self.assertEqual(updated["metadata"]["labels"], {"x": "y"})

    async def test_generation_follows_spec(self) -> None:
        """generation grows when the spec changes, not when labels or the status do."""
        b = await self.backend()
        created = await b.client.create(INGRESS, ingress("a"), b.namespace)
        spec_changed = dict(created, spec=ingress("a", host="b.example.com")["spec"])
        updated = await b.client.update(INGRESS, spec_changed)
        self.assertEqual(updated["metadata"]["generation"], 2)
        relabeled = dict(updated, metadata=dict(updated["metadata"], labels={"l": "v"}))
        updated = await b.client.update(INGRESS, relabeled)
        self.assertEqual(updated["metadata"]["generation"], 2)
        status = dict(updated, status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})
        updated = await b.client.update_status(INGRESS, status)
        self.assertEqual(updated["metadata"]["generation"], 2)

    async def test_status_subresource_changes_only_status(self) -> None:
        """
        A /status update changes the status and nothing else; a main update leaves the status alone.
        """
        b = await self.backend()
        created = await b.client.create(INGRESS, ingress("a"), b.namespace)
        both = dict(
            created,
            spec=ingress("a", host="changed.example.com")["spec"],
            status={"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}},
        )
        after_status = await b.client.update_status(INGRESS, both)
        self.assertEqual(after_status["spec"]["rules"][0]["host"], "a.example.com")
        self.assertEqual(after_status["status"]["loadBalancer"]["ingress"], [{"ip": "192.0.2.7"}])
        main = dict(
            after_status,
            status={"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}},
            metadata=dict(after_status["metadata"], labels={"k": "v"}),
        )
        after_main = await b.client.update(INGRESS, main)
        self.assertEqual(after_main["status"]["loadBalancer"]["ingress"], [{"ip": "192.0.2.7"}])
        self.assertEqual(after_main["metadata"]["labels"], {"k": "v"})

    async def test_merge_patch(self) -> None:
        """A merge patch adds and removes keys of the object and, through /status, of the status."""
        b = await self.backend()
        body = ingress("a")
        body["metadata"]["annotations"] = {"keep": "1", "drop": "2"}
        await b.client.create(INGRESS, body, b.namespace)
        patched = await b.client.patch(
            INGRESS, b.namespace, "a", {"metadata": {"annotations": {"drop": None, "new": "3"}}}
        )
        self.assertEqual(patched["metadata"]["annotations"], {"keep": "1", "new": "3"})
        patched = await b.client.patch(
            INGRESS,
            b.namespace,
            "a",
            {"status": {"loadBalancer": {"ingress": [{"hostname": "gw.example.com"}]}}},
            subresource="status",
        )
        self.assertEqual(
            patched["status"]["loadBalancer"]["ingress"], [{"hostname": "gw.example.com"}]
        )

    async def test_patch_with_stale_version_conflicts(self) -> None:
        """A merge patch that names an outdated metadata.resourceVersion fails with 409 Conflict."""
        b = await self.backend()
        created = await b.client.create(INGRESS, ingress("a"), b.namespace)
        await b.client.patch(INGRESS, b.namespace, "a", {"metadata": {"labels": {"a": "1"}}})
        with self.assertRaises(Conflict):
            await b.client.patch(
                INGRESS,
                b.namespace,
                "a",
                {
                    "metadata": {
                        "labels": {"a": "2"},
                        "resourceVersion": created["metadata"]["resourceVersion"],
                    }
                },
            )

    async def test_list_label_selectors(self) -> None:
        """
        A list carries a resourceVersion and honours equality, inequality, set and existence label
        selectors.
        """
        b = await self.backend()
        await b.client.create(INGRESS, ingress("web", {"tier": "web"}), b.namespace)
        await b.client.create(INGRESS, ingress("db", {"tier": "db"}), b.namespace)
        await b.client.create(INGRESS, ingress("plain"), b.namespace)
        everything = await b.client.list(INGRESS, b.namespace)
        self.assertTrue(everything.resource_version)
        self.assertEqual(names(everything.items), ["db", "plain", "web"])
        self.assertEqual(everything.items[0]["kind"], "Ingress")
        cases = {
            "tier=web": ["web"],
            "tier==web": ["web"],
            "tier!=web": ["db", "plain"],
            "tier in (web,db)": ["db", "web"],
            "tier notin (web)": ["db", "plain"],
            "tier": ["db", "web"],
            "!tier": ["plain"],
            "tier=web,tier!=db": ["web"],
        }
        for selector, expected in cases.items():
            listed = await b.client.list(INGRESS, b.namespace, label_selector=selector)
            self.assertEqual(names(listed.items), expected, selector)

    async def test_list_field_selectors(self) -> None:
        """
        Field selectors select by metadata.name, by metadata.namespace across namespaces, and
        Secrets by type.
        """
        b = await self.backend()
        await b.client.create(INGRESS, ingress("one"), b.namespace)
        await b.client.create(INGRESS, ingress("two"), b.namespace)
        by_name = await b.client.list(INGRESS, b.namespace, field_selector="metadata.name=two")
        self.assertEqual(names(by_name.items), ["two"])
        not_name = await b.client.list(INGRESS, b.namespace, field_selector="metadata.name!=two")
        self.assertEqual(names(not_name.items), ["one"])
        everywhere = await b.client.list(
            INGRESS, None, field_selector=f"metadata.namespace={b.namespace}"
        )
        self.assertEqual(names(everywhere.items), ["one", "two"])
        self.assertEqual({i["metadata"]["namespace"] for i in everywhere.items}, {b.namespace})
        tls = {
            "metadata": {"name": "cert"},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(b"crt").decode(),
                "tls.key": base64.b64encode(b"key").decode(),
            },
        }
        await b.client.create(SECRET, tls, b.namespace)
        await b.client.create(
            SECRET, {"metadata": {"name": "opaque"}, "stringData": {"k": "v"}}, b.namespace
        )
        listed = await b.client.list(SECRET, b.namespace, field_selector="type=kubernetes.io/tls")
        self.assertEqual(names(listed.items), ["cert"])

    async def test_list_pages(self) -> None:
        """
        A list with a limit returns pages joined by continue tokens that together hold every object
        once.
        """
        b = await self.backend()
        for i in range(5):
            await b.client.create(INGRESS, ingress(f"i{i}"), b.namespace)
        first = await b.client.list(INGRESS, b.namespace, limit=2)
        self.assertEqual(len(first.items), 2)
        self.assertTrue(first.continue_token)
        seen = names(first.items)
        token = first.continue_token
        while token:
            page = await b.client.list(INGRESS, b.namespace, limit=2, continue_token=token)
            seen += names(page.items)
            token = page.continue_token
        self.assertEqual(seen, [f"i{i}" for i in range(5)])
        whole = await b.client.list_all(INGRESS, b.namespace, page_size=2)
        self.assertEqual(names(whole.items), seen)

    async def test_watch_events_in_order(self) -> None:
        """
        A watch from a list's version reports every later change, in order, with the versions the
        writes returned.
        """
        b = await self.backend()
        start = await b.client.list(INGRESS, b.namespace)
        a1 = await b.client.create(INGRESS, ingress("a"), b.namespace)
        a2 = await b.client.update(
            INGRESS, dict(a1, metadata=dict(a1["metadata"], labels={"v": "2"}))
        )
        b1 = await b.client.create(INGRESS, ingress("b"), b.namespace)
        await b.client.delete(INGRESS, b.namespace, "a")
        watch = _Watch(
            self,
            b.client,
            INGRESS,
            b.namespace,
            resource_version=start.resource_version,
            allow_bookmarks=False,
        )
        events = (await watch.count(4))[:4]
        self.assertEqual(
            [(e.type, e.object["metadata"]["name"]) for e in events],
            [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")],
        )
        self.assertEqual(
            [e.resource_version for e in events[:3]],
            [
                a1["metadata"]["resourceVersion"],
                a2["metadata"]["resourceVersion"],
                b1["metadata"]["resourceVersion"],
            ],
        )
        self.assertEqual(events[0].object["kind"], "Ingress")

    async def test_watch_live_events(self) -> None:
        """A watch reports changes made after it started."""
        b = await self.backend()
        start = await b.client.list(INGRESS, b.namespace)
        watch = _Watch(
            self,
            b.client,
            INGRESS,
            b.namespace,
            resource_version=start.resource_version,
            allow_bookmarks=False,
        )
        await b.client.create(INGRESS, ingress("live"), b.namespace)
        events = await watch.count(1)
        self.assertEqual((events[0].type, events[0].object["metadata"]["name"]), ("ADDED", "live"))

    async def test_watch_selector_reports_leaving_as_deleted(self) -> None:
        """
        A watch with a label selector reports an object relabelled out of the selection as DELETED.
        """
        b = await self.backend()
        start = await b.client.list(INGRESS, b.namespace)
        watch = _Watch(
            self,
            b.client,
            INGRESS,
            b.namespace,
            resource_version=start.resource_version,
            label_selector="app=x",
            allow_bookmarks=False,
        )
        created = await b.client.create(INGRESS, ingress("a", {"app": "x"}), b.namespace)
        await b.client.create(INGRESS, ingress("other", {"app": "y"}), b.namespace)
        await b.client.update(
            INGRESS, dict(created, metadata=dict(created["metadata"], labels={"app": "y"}))
        )
        events = await watch.count(2)
        self.assertEqual(
            [(e.type, e.object["metadata"]["name"]) for e in events[:2]],
            [("ADDED", "a"), ("DELETED", "a")],
        )

    async def test_watch_bookmarks(self) -> None:
        """
        A watch that allows bookmarks receives BOOKMARK events that carry only a resourceVersion,
        and a watch from that version reports only later changes.
        """
        b = await self.backend()
        await b.client.create(INGRESS, ingress("before"), b.namespace)
        start = await b.client.list(INGRESS, b.namespace)
        watch = _Watch(
            self,
            b.client,
            INGRESS,
            b.namespace,
            resource_version=start.resource_version,
            allow_bookmarks=True,
            timeout_seconds=10,
        )
        await wait_for(
            lambda: any(e.type == "BOOKMARK" for e in watch.events) or watch.ended,
            20.0,
            "a bookmark",
        )
        bookmark = next(e for e in watch.events if e.type == "BOOKMARK")
        self.assertTrue(bookmark.resource_version)
        self.assertEqual(bookmark.object["kind"], "Ingress")
        self.assertNotIn("name", bookmark.object["metadata"])
        watch.stop()
        resumed = _Watch(
            self,
            b.client,
            INGRESS,
            b.namespace,
            resource_version=bookmark.resource_version,
            allow_bookmarks=False,
        )
        await b.client.create(INGRESS, ingress("after"), b.namespace)
        events = await resumed.count(1)
        self.assertEqual((events[0].type, events[0].object["metadata"]["name"]), ("ADDED", "after"))

    async def test_watch_expired_version_gone(self) -> None:
        """A watch from a version older than the server's history fails with 410 Gone."""
        b = await self.backend()
        await b.client.create(INGRESS, ingress("a"), b.namespace)
        b.expire_history()
        watch = _Watch(self, b.client, INGRESS, b.namespace, resource_version="1")
        await wait_for(lambda: watch.ended, 10.0, "the watch to end")
        self.assertIsInstance(watch.error, Gone)
        assert isinstance(watch.error, ApiError)
        self.assertEqual(watch.error.code, 410)

    async def test_delete(self) -> None:
        """A deleted object is gone: get and a second delete fail with NotFound."""
        b = await self.backend()
        await b.client.create(INGRESS, ingress("a"), b.namespace)
        await b.client.delete(INGRESS, b.namespace, "a")
        with self.assertRaises(NotFound):
            await b.client.get(INGRESS, b.namespace, "a")
        with self.assertRaises(NotFound):
            await b.client.delete(INGRESS, b.namespace, "a")

    async def test_delete_precondition(self) -> None:
        """
        A delete whose uid precondition does not match fails with 409 Conflict and keeps the object.
        """
        b = await self.backend()
        await b.client.create(INGRESS, ingress("a"), b.namespace)
        with self.assertRaises(Conflict):
            await b.client.delete(
                INGRESS, b.namespace, "a", preconditions={"uid": str(uuid.uuid4())}
            )
        await b.client.get(INGRESS, b.namespace, "a")

    async def test_secret_string_data(self) -> None:
        """
        stringData of a Secret is stored base64-encoded in data, and a tls Secret needs tls.crt and
        tls.key.
        """
        b = await self.backend()
        created = await b.client.create(
            SECRET, {"metadata": {"name": "s"}, "stringData": {"k": "v"}}, b.namespace
        )
        self.assertEqual(created["data"], {"k": base64.b64encode(b"v").decode()})
        self.assertNotIn("stringData", created)
        self.assertEqual(created["type"], "Opaque")
        with self.assertRaises(ApiError) as caught:
            await b.client.create(
                SECRET,
                {
                    "metadata": {"name": "t"},
                    "type": "kubernetes.io/tls",
                    "stringData": {"tls.crt": "x"},
                },
                b.namespace,
            )
        self.assertEqual(caught.exception.code, 422)

    async def test_lease_optimistic_concurrency(self) -> None:
        """
        Of two updates of a Lease from the same version, the second fails with Conflict: the basis
        of leader election.
        """
        b = await self.backend()
        lease = await b.client.create(
            LEASE,
            {
                "metadata": {"name": "leader"},
                "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
            },
            b.namespace,
        )
        mine = dict(lease, spec=dict(lease["spec"], holderIdentity="b"))
        theirs = dict(lease, spec=dict(lease["spec"], holderIdentity="c"))
        won = await b.client.update(LEASE, mine)
        self.assertEqual(won["spec"]["holderIdentity"], "b")
        with self.assertRaises(Conflict):
            await b.client.update(LEASE, theirs)

    async def test_lease_create_taken_and_release(self) -> None:
        """
        A second create of a Lease fails with AlreadyExists; an update with an empty holder (a
        release) and a one-second duration is accepted and bumps the version.
        """
        b = await self.backend()
        body = {
            "metadata": {"name": "leader"},
            "spec": {
                "holderIdentity": "a",
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-12-01T10:00:00.000000Z",
                "renewTime": "2026-12-01T10:00:00.000000Z",
                "leaseTransitions": 0,
            },
        }
        lease = await b.client.create(LEASE, body, b.namespace)
        with self.assertRaises(AlreadyExists):
            await b.client.create(LEASE, body, b.namespace)
        released = await b.client.update(
            LEASE,
            dict(
                lease,
                spec=dict(
                    lease["spec"],
                    holderIdentity="",
                    leaseDurationSeconds=1,
                    renewTime="2026-12-01T10:00:05.000000Z",
                ),
            ),
        )
        self.assertEqual(released["spec"]["holderIdentity"], "")
        self.assertEqual(released["spec"]["leaseDurationSeconds"], 1)
        self.assertNotEqual(
            released["metadata"]["resourceVersion"], lease["metadata"]["resourceVersion"]
        )

    async def test_lease_duration_must_be_positive(self) -> None:
        """A Lease whose leaseDurationSeconds is 0 is refused with 422 Invalid."""
        b = await self.backend()
        with self.assertRaises(Invalid) as caught:
            await b.client.create(
                LEASE,
                {
                    "metadata": {"name": "zero"},
                    "spec": {"holderIdentity": "a", "leaseDurationSeconds": 0},
                },
                b.namespace,
            )
        self.assertEqual(caught.exception.code, 422)

    async def test_event_namespace_matches_involved_object(self) -> None:
        """
        A v1 Event (without eventTime) whose involvedObject is in another namespace is refused with
        422 Invalid.
        """
        b = await self.backend()
        with self.assertRaises(Invalid) as caught:
            await b.client.create(
                EVENT,
                {
                    "metadata": {"name": "elsewhere.0123456789abcdef"},
                    "involvedObject": {
                        "kind": "Ingress",
                        "apiVersion": "networking.k8s.io/v1",
                        "namespace": f"{b.namespace}-other",
                        "name": "a",
                    },
                    "reason": "Test",
                    "message": "in the wrong namespace",
                    "type": "Warning",
                    "count": 1,
                    "firstTimestamp": "2024-01-01T00:00:00Z",
                    "lastTimestamp": "2024-01-01T00:00:00Z",
                },
                b.namespace,
            )
        self.assertEqual(caught.exception.code, 422)

    async def test_event_patch_missing_not_found(self) -> None:
        """A merge patch of an Event that does not exist fails with 404 NotFound."""
        b = await self.backend()
        with self.assertRaises(NotFound):
            await b.client.patch(EVENT, b.namespace, "absent.0123456789abcdef", {"count": 2})

    async def test_event_create_and_patch(self) -> None:
        """A v1 Event about an Ingress can be created and its count merge-patched."""
        b = await self.backend()
        ing = await b.client.create(INGRESS, ingress("a"), b.namespace)
        event = await b.client.create(
            EVENT,
            {
                "metadata": {"generateName": "a."},
                "involvedObject": {
                    "kind": "Ingress",
                    "apiVersion": "networking.k8s.io/v1",
                    "namespace": b.namespace,
                    "name": "a",
                    "uid": ing["metadata"]["uid"],
                },
                "reason": "Shadowed",
                "message": "route shadowed",
                "type": "Warning",
                "count": 1,
                "source": {"component": "apimgw"},
                "firstTimestamp": "2024-01-01T00:00:00Z",
                "lastTimestamp": "2024-01-01T00:00:00Z",
            },
            b.namespace,
        )
        self.assertTrue(event["metadata"]["name"].startswith("a."))
        patched = await b.client.patch(EVENT, b.namespace, event["metadata"]["name"], {"count": 2})
        self.assertEqual(patched["count"], 2)
        listed = await b.client.list(
            EVENT, b.namespace, field_selector="involvedObject.name=a,reason=Shadowed"
        )
        self.assertEqual(names(listed.items), [event["metadata"]["name"]])

    async def test_service_and_endpoint_slices(self) -> None:
        """
        A Service gets a cluster IP; its EndpointSlices are listed by the kubernetes.io/service-name
        label.
        """
        b = await self.backend()
        svc = await b.client.create(
            SERVICE,
            {
                "metadata": {"name": "echo"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            },
            b.namespace,
        )
        self.assertTrue(svc["spec"]["clusterIP"])
        await b.client.create(
            ENDPOINT_SLICE,
            {
                "metadata": {"name": "echo-1", "labels": {"kubernetes.io/service-name": "echo"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": True}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            },
            b.namespace,
        )
        slices = await b.client.list(
            ENDPOINT_SLICE, b.namespace, label_selector="kubernetes.io/service-name=echo"
        )
        self.assertEqual(names(slices.items), ["echo-1"])
        self.assertEqual(slices.items[0]["endpoints"][0]["addresses"], ["10.1.0.5"])

    async def test_cluster_scoped_ingress_class(self) -> None:
        """An IngressClass is cluster-scoped: created, got and listed without a namespace."""
        b = await self.backend()
        name = f"{b.namespace}-class"
        await b.client.create(
            INGRESS_CLASS,
            {"metadata": {"name": name}, "spec": {"controller": "azure-api-management/gateway"}},
        )
        self.addCleanup(lambda: b.client.delete(INGRESS_CLASS, None, name))
        got = await b.client.get(INGRESS_CLASS, None, name)
        self.assertNotIn("namespace", got["metadata"])
        listed = await b.client.list(INGRESS_CLASS, field_selector=f"metadata.name={name}")
        self.assertEqual(names(listed.items), [name])

    # -- the Gateway API kinds (custom resources: a cluster needs the CRDs) --

    async def gateway_api(self) -> Backend:
        """The backend, or a skip when the cluster does not serve the Gateway API."""
        b = await self.backend()
        try:
            await b.client.list(GATEWAY_CLASS, limit=1)
        except NotFound:
            raise SkipTest("the cluster has no Gateway API CRDs (gateway.networking.k8s.io)")
        return b

    async def test_gateway_api_http_route_list_and_watch(self) -> None:
        """
        HTTPRoutes are listed with a resourceVersion, and a watch from it reports every later
        change with the versions the writes returned, /status writes included.
        """
        b = await self.gateway_api()
        await b.client.create(HTTP_ROUTE, http_route("before"), b.namespace)
        start = await b.client.list(HTTP_ROUTE, b.namespace)
        self.assertTrue(start.resource_version)
        self.assertEqual(names(start.items), ["before"])
        self.assertEqual(
            (start.items[0]["kind"], start.items[0]["apiVersion"]),
            ("HTTPRoute", "gateway.networking.k8s.io/v1"),
        )
        a1 = await b.client.create(HTTP_ROUTE, http_route("a"), b.namespace)
        a2 = await b.client.update_status(
            HTTP_ROUTE, dict(a1, status=route_status(a1["metadata"]["generation"]))
        )
        await b.client.delete(HTTP_ROUTE, b.namespace, "before")
        watch = _Watch(
            self,
            b.client,
            HTTP_ROUTE,
            b.namespace,
            resource_version=start.resource_version,
            allow_bookmarks=False,
        )
        events = (await watch.count(3))[:3]
        self.assertEqual(
            [(e.type, e.object["metadata"]["name"]) for e in events],
            [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "before")],
        )
        self.assertEqual(
            [e.resource_version for e in events[:2]],
            [a1["metadata"]["resourceVersion"], a2["metadata"]["resourceVersion"]],
        )
        self.assertEqual(events[1].object["status"], a2["status"])

    async def test_gateway_api_status_stale_version_conflicts(self) -> None:
        """
        A /status update of an HTTPRoute or a Gateway naming an outdated resourceVersion fails
        with 409 Conflict and changes nothing; one naming the current version succeeds.
        """
        b = await self.gateway_api()
        for kind, body, status in (
            (HTTP_ROUTE, http_route("a"), route_status(1)),
            (GATEWAY, gateway("a"), {"conditions": [condition("Accepted", "True", "Accepted", 1)]}),
        ):
            created = await b.client.create(kind, body, b.namespace)
            relabeled = await b.client.update(
                kind, dict(created, metadata=dict(created["metadata"], labels={"v": "2"}))
            )
            with self.assertRaises(Conflict) as caught:
                await b.client.update_status(kind, dict(created, status=status))
            self.assertEqual((caught.exception.code, caught.exception.reason), (409, "Conflict"))
            got = await b.client.get(kind, b.namespace, "a")
            self.assertEqual(
                got["metadata"]["resourceVersion"], relabeled["metadata"]["resourceVersion"]
            )
            written = await b.client.update_status(kind, dict(relabeled, status=status))
            self.assertEqual(written["status"], status)

    async def test_gateway_api_status_subresource_changes_only_status(self) -> None:
        """
        An HTTPRoute's /status update ignores spec changes; a main update ignores status changes
        (the CRDs declare the status subresource); a created object's status is dropped.
        """
        b = await self.gateway_api()
        body = http_route("a")
        body["status"] = route_status(1, reason="FromCreate")
        created = await b.client.create(HTTP_ROUTE, body, b.namespace)
        self.assertNotIn("status", created)
        both = dict(
            created,
            spec=http_route("a", host="changed.example.com")["spec"],
            status=route_status(1),
        )
        after_status = await b.client.update_status(HTTP_ROUTE, both)
        self.assertEqual(after_status["spec"]["hostnames"], ["a.example.com"])
        self.assertEqual(after_status["status"], route_status(1))
        main = dict(
            after_status,
            status=route_status(1, reason="FromMain"),
            metadata=dict(after_status["metadata"], labels={"k": "v"}),
        )
        after_main = await b.client.update(HTTP_ROUTE, main)
        self.assertEqual(after_main["status"], route_status(1))
        self.assertEqual(after_main["metadata"]["labels"], {"k": "v"})

    async def test_gateway_api_generation_follows_spec(self) -> None:
        """
        An HTTPRoute's and a Gateway's generation start at 1 and grow when the spec changes, not
        when labels or the status do (through update or merge patch).
        """
        b = await self.gateway_api()
        route = await b.client.create(HTTP_ROUTE, http_route("a"), b.namespace)
        self.assertEqual(route["metadata"]["generation"], 1)
        route = await b.client.update(
            HTTP_ROUTE, dict(route, spec=http_route("a", host="b.example.com")["spec"])
        )
        self.assertEqual(route["metadata"]["generation"], 2)
        route = await b.client.update_status(HTTP_ROUTE, dict(route, status=route_status(2)))
        self.assertEqual(route["metadata"]["generation"], 2)
        route = await b.client.patch(
            HTTP_ROUTE, b.namespace, "a", {"status": route_status(2, "Again")}, subresource="status"
        )
        self.assertEqual(route["metadata"]["generation"], 2)
        route = await b.client.patch(
            HTTP_ROUTE, b.namespace, "a", {"metadata": {"labels": {"l": "v"}}}
        )
        self.assertEqual(route["metadata"]["generation"], 2)
        gw = await b.client.create(GATEWAY, gateway("g"), b.namespace)
        self.assertEqual(gw["metadata"]["generation"], 1)
        gw = await b.client.patch(
            GATEWAY,
            b.namespace,
            "g",
            {"spec": {"listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]}},
        )
        self.assertEqual(gw["metadata"]["generation"], 2)

    async def test_gateway_api_gateway_status_defaults_to_pending(self) -> None:
        """
        A new Gateway reads back with the CRD's default status: Accepted and Programmed Unknown,
        waiting for a controller.
        """
        b = await self.gateway_api()
        created = await b.client.create(GATEWAY, gateway("g"), b.namespace)
        got = await b.client.get(GATEWAY, b.namespace, "g")
        for obj in (created, got):
            self.assertEqual(
                sorted((c["type"], c["status"]) for c in obj["status"]["conditions"]),
                [("Accepted", "Unknown"), ("Programmed", "Unknown")],
            )

    async def test_gateway_api_cluster_scoped_gateway_class(self) -> None:
        """
        A GatewayClass is cluster-scoped: created, got, listed, watched and its status written
        without a namespace; its controllerName cannot change.
        """
        b = await self.gateway_api()
        name = f"{b.namespace}-class"
        created = await b.client.create(
            GATEWAY_CLASS,
            {"metadata": {"name": name}, "spec": {"controllerName": "apimgw.io/contract-test"}},
        )
        self.addCleanup(lambda: b.client.delete(GATEWAY_CLASS, None, name))
        self.assertNotIn("namespace", created["metadata"])
        self.assertEqual(
            [(c["type"], c["status"]) for c in created["status"]["conditions"]],
            [("Accepted", "Unknown")],
        )
        listed = await b.client.list(GATEWAY_CLASS, field_selector=f"metadata.name={name}")
        self.assertEqual(names(listed.items), [name])
        watch = _Watch(
            self,
            b.client,
            GATEWAY_CLASS,
            None,
            resource_version=listed.resource_version,
            field_selector=f"metadata.name={name}",
            allow_bookmarks=False,
        )
        accepted = {"conditions": [condition("Accepted", "True", "Accepted", 1)]}
        written = await b.client.update_status(GATEWAY_CLASS, dict(created, status=accepted))
        self.assertEqual(written["status"], accepted)
        self.assertEqual(written["metadata"]["generation"], 1)
        (event,) = (await watch.count(1))[:1]
        self.assertEqual(
            (event.type, event.resource_version, event.object["status"]),
            ("MODIFIED", written["metadata"]["resourceVersion"], accepted),
        )
        got = await b.client.get(GATEWAY_CLASS, None, name)
        self.assertEqual(got["status"], accepted)
        with self.assertRaises(Invalid) as caught:
            await b.client.patch(
                GATEWAY_CLASS, None, name, {"spec": {"controllerName": "apimgw.io/other"}}
            )
        self.assertEqual(caught.exception.code, 422)

    async def test_gateway_api_reference_grant(self) -> None:
        """
        A v1beta1 ReferenceGrant is created, listed and its generation tracked; it has no /status.
        """
        b = await self.gateway_api()
        body = {
            "metadata": {"name": "allow-routes"},
            "spec": {
                "from": [
                    {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "x"}
                ],
                "to": [{"group": "", "kind": "Service"}],
            },
        }
        created = await b.client.create(REFERENCE_GRANT, body, b.namespace)
        self.assertEqual(created["metadata"]["generation"], 1)
        self.assertEqual(created["apiVersion"], "gateway.networking.k8s.io/v1beta1")
        listed = await b.client.list(REFERENCE_GRANT, b.namespace)
        self.assertEqual(names(listed.items), ["allow-routes"])
        with self.assertRaises(NotFound):
            await b.client.patch(
                REFERENCE_GRANT, b.namespace, "allow-routes", {"status": {}}, subresource="status"
            )

    async def test_gateway_api_watch_expired_version_gone(self) -> None:
        """A watch of HTTPRoutes from a version older than the server's history fails with 410."""
        b = await self.gateway_api()
        await b.client.create(HTTP_ROUTE, http_route("a"), b.namespace)
        b.expire_history()
        watch = _Watch(self, b.client, HTTP_ROUTE, b.namespace, resource_version="1")
        await wait_for(lambda: watch.ended, 10.0, "the watch to end")
        self.assertIsInstance(watch.error, Gone)
        assert isinstance(watch.error, ApiError)
        self.assertEqual(watch.error.code, 410)

    async def test_wrong_token_unauthorized(self) -> None:
        """A request with a token the server does not know fails with 401 Unauthorized."""
        b = await self.backend()
        c = b.credentials
        bogus = ClusterCredentials(
            server=c.server,
            ca_pem=c.ca_pem,
            authorization="Bearer not-a-token",
            tls_server_name=c.tls_server_name,
            verify_tls=c.verify_tls,
        )
        client = KubeClient(bogus)
        self.addCleanup(client.close)
        with self.assertRaises(Unauthorized) as caught:
            await client.list(INGRESS, b.namespace)
        self.assertEqual(caught.exception.code, 401)


class FakeApiServerContractTests(ContractTests, TestCase):
    """The contract, against :class:`gateway.testing.fakekube.FakeKubeServer`."""

    def backend(self) -> Deferred[Backend]:  # type: ignore[override]
        return Deferred.fromCoroutine(fake_backend(self))


class RealApiServerContractTests(ContractTests, TestCase):
    """The contract, against the cluster of ``$APIMGW_TEST_KUBECONFIG``."""

    timeout = 120

    def setUp(self) -> None:
        self.kubeconfig = os.environ.get(REAL_KUBECONFIG_VARIABLE)
        if not self.kubeconfig:
            raise SkipTest(
                f"set {REAL_KUBECONFIG_VARIABLE} to a kubeconfig to run against a real cluster"
            )

    def backend(self) -> Deferred[Backend]:  # type: ignore[override]
        assert self.kubeconfig is not None
        return Deferred.fromCoroutine(real_backend(self, self.kubeconfig))
