"""
Tests of the gateway-facing endpoints over real HTTP on loopback: tokens,
the snapshot, the change feed (long poll, 410), heartbeats and instances.
"""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from configservice import DELIVERED

from .harness import ServiceTestCase, self_signed

POLICY = "<policies><inbound><base /></inbound></policies>"
DAY = 86400


class TokenTests(ServiceTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        yield self.ok("PUT", "/gateways/g", {})
        yield self.ok("PUT", "/gateways/other", {})

    @inlineCallbacks
    def status(self, token: str | None, gateway: str = "g") -> Any:
        response = yield self.call("GET", f"/gateways/{gateway}/configuration", token)
        return response.status

    @inlineCallbacks
    def test_primary_and_secondary_accepted(self) -> Any:
        """Tokens signed with the primary and with the secondary key are both accepted."""
        for key_type in ("primary", "secondary"):
            token = yield self.token("g", key_type)
            self.assertTrue(token.startswith("GatewayKey g&"))
            self.assertEqual((yield self.status(token)), 200, key_type)

    @inlineCallbacks
    def test_bare_token_accepted(self) -> Any:
        """The token without its GatewayKey prefix is accepted too."""
        token = yield self.token("g")
        self.assertEqual((yield self.status(token.split(" ", 1)[1])), 200)

    @inlineCallbacks
    def test_regenerate_primary_keeps_secondary(self) -> Any:
        """After regenerating the primary key, primary tokens are 401 and secondary ones still work."""
        primary = yield self.token("g", "primary")
        secondary = yield self.token("g", "secondary")
        response = yield self.manage("POST", "/gateways/g/regenerateKey", {"keyType": "primary"})
        self.assertEqual(response.status, 204)
        self.assertEqual((yield self.status(primary)), 401)
        self.assertEqual((yield self.status(secondary)), 200)
        fresh = yield self.token("g", "primary")
        self.assertEqual((yield self.status(fresh)), 200)

    @inlineCallbacks
    def test_expired(self) -> Any:
        """A token is accepted until its expiry and refused with 401 "expired" from then on."""
        token = yield self.token("g", expiry="P1D")
        self.clock.advance(DAY - 120)
        self.assertEqual((yield self.status(token)), 200)
        self.clock.advance(120)
        response = yield self.call("GET", "/gateways/g/configuration", token)
        self.assertEqual(response.status, 401)
        self.assertIn("expired", response.json()["message"])

    @inlineCallbacks
    def test_lifetime_over_thirty_days(self) -> Any:
        """
        A correctly signed token whose expiry lies more than 30 days ahead
        (which no issuer following the protocol makes) is refused with 401.
        """
        token = yield self.token("g", expiry="P30D")
        self.clock.rightNow -= 2 * DAY  # as if it had been minted 32 days ahead
        response = yield self.call("GET", "/gateways/g/configuration", token)
        self.assertEqual(response.status, 401)
        self.assertIn("more than 30 days", response.json()["message"])
        self.clock.rightNow += 2 * DAY
        self.assertEqual((yield self.status(token)), 200)

    @inlineCallbacks
    def test_lifetime_rule_is_cloudproto(self) -> Any:
        """
        The service refuses an expired token, and one valid for more than
        30 days, for the reason :func:`cloudproto.check_lifetime` gives at
        the service's time: one lifetime rule for both sides of the wire,
        not a copy that can drift.
        """
        from cloudproto import TokenError, check_lifetime, parse_token

        def reason(value: str) -> str:
            with self.assertRaises(TokenError) as raised:
                check_lifetime(parse_token(value), self.clock.seconds())
            return str(raised.exception)

        long_lived = yield self.token("g", expiry="P30D")
        self.clock.rightNow -= 2 * DAY
        response = yield self.call("GET", "/gateways/g/configuration", long_lived)
        self.assertEqual(response.status, 401)
        self.assertIn(reason(long_lived), response.json()["message"])
        self.clock.rightNow += 2 * DAY

        expired = yield self.token("g", expiry="P1D")
        self.clock.advance(DAY)
        response = yield self.call("GET", "/gateways/g/configuration", expired)
        self.assertEqual(response.status, 401)
        self.assertIn(reason(expired), response.json()["message"])

    @inlineCallbacks
    def test_forged(self) -> Any:
        """A token with a changed signature or expiry is 401, logged without its signature."""
        token = yield self.token("g")
        head, stamp, signature = token.split("&")
        forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
        # An hour earlier, as a valid stamp whatever the hour: subtracting 100
        # from the digits made hour 99 when the token expired in hour 00.
        earlier = datetime.strptime(stamp, "%Y%m%d%H%M") - timedelta(hours=1)
        for forged in (f"{head}&{stamp}&{forged_signature}",
                       f"{head}&{earlier:%Y%m%d%H%M}&{signature}"):
            response = yield self.call("GET", "/gateways/g/configuration", forged)
            self.assertEqual(response.status, 401)
            self.assertIn("signature", response.json()["message"])
        lines = self.logged("Gateway request refused (401)")
        self.assertEqual(len(lines), 2)
        self.assertFalse(any(signature in line or forged_signature in line for line in lines))
        self.assertIn("token gateway g", lines[0])

    @inlineCallbacks
    def test_other_gateways_token(self) -> Any:
        """A valid token of another gateway is 403 on every gateway endpoint, and logged."""
        token = yield self.token("other")
        for method, path, body in [("GET", "/gateways/g/configuration", None),
                                   ("GET", "/gateways/g/events?after=0", None),
                                   ("POST", "/gateways/g/heartbeat", {"instanceId": "i"})]:
            response = yield self.call(method, path, token, body)
            self.assertEqual(response.status, 403, path)
            self.assertIn("'other'", response.json()["message"])
        self.assertEqual(len(self.logged("Gateway request refused (403)")), 3)

    @inlineCallbacks
    def test_missing_and_malformed(self) -> Any:
        """No Authorization, another scheme, or a malformed token is 401 with a GatewayKey challenge."""
        for token in (None, "Bearer abc", "GatewayKey g&2025", "GatewayKey nope&209901010000&x"):
            response = yield self.call("GET", "/gateways/g/configuration", token)
            self.assertEqual(response.status, 401, token)
            self.assertIn("GatewayKey", response.headers["www-authenticate"])
            self.assertEqual(response.json()["statusCode"], 401)

    @inlineCallbacks
    def test_deleted_gateway(self) -> Any:
        """The tokens of a deleted gateway are refused (401)."""
        token = yield self.token("g")
        yield self.ok("DELETE", "/gateways/g")
        self.assertEqual((yield self.status(token)), 401)

    @inlineCallbacks
    def test_generate_token_expiry(self) -> Any:
        """generateToken takes a duration or date-time up to 30 days; beyond, in the past or missing is 400."""
        accepted = yield self.manage("POST", "/gateways/g/generateToken",
                                     {"keyType": "secondary", "expiry": "P30D"})
        self.assertEqual(accepted.status, 200)
        for body in ({"expiry": "P31D"}, {"expiry": "P30DT1M"},
                     {"expiry": "2999-01-01T00:00:00Z"}, {"expiry": "PT0S"}, {},
                     {"expiry": "soon"}):
            response = yield self.manage("POST", "/gateways/g/generateToken", body)
            self.assertEqual((response.status, response.json()["field"]), (400, "expiry"), body)
        response = yield self.manage("POST", "/gateways/g/generateToken",
                                     {"keyType": "tertiary", "expiry": "P1D"})
        self.assertEqual((response.status, response.json()["field"]), (400, "keyType"))
        response = yield self.manage("POST", "/gateways/nope/generateToken", {"expiry": "P1D"})
        self.assertEqual(response.status, 404)
        response = yield self.manage("POST", "/gateways/g/regenerateKey", {})
        self.assertEqual((response.status, response.json()["field"]), (400, "keyType"))


class SnapshotTests(ServiceTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        cert1, key1 = self_signed("one.example.com")
        cert2, key2 = self_signed("two.example.com")
        for gateway in ("g1", "g2"):
            yield self.ok("PUT", f"/gateways/{gateway}", {})
        for api in ("a", "b", "c"):
            yield self.api(api)
        yield self.ok("PUT", "/apis/a/operations/get", {"method": "GET", "urlTemplate": "/x/{id}"})
        yield self.ok("PUT", "/apis/a/operations/post", {"method": "POST", "urlTemplate": "/x"})
        yield self.ok("PUT", "/gateways/g1/apis/a")
        yield self.ok("PUT", "/gateways/g1/apis/c")
        yield self.ok("PUT", "/gateways/g2/apis/b")
        yield self.ok("PUT", "/products/p", {})
        yield self.ok("PUT", "/products/p/apis/a")
        yield self.ok("PUT", "/products/q", {})
        yield self.ok("PUT", "/products/q/apis/b")
        yield self.ok("PUT", "/policy", {"value": POLICY})
        yield self.ok("PUT", "/apis/a/policy", {"value": POLICY})
        yield self.ok("PUT", "/apis/a/operations/get/policy", {"value": POLICY})
        yield self.ok("PUT", "/apis/b/policy", {"value": POLICY})
        yield self.ok("PUT", "/products/p/policy", {"value": POLICY})
        yield self.ok("PUT", "/subscriptions/s-all", {"scope": "/apis"})
        yield self.ok("PUT", "/subscriptions/s-a", {"scope": "/apis/a"})
        yield self.ok("PUT", "/subscriptions/s-b", {"scope": "/apis/b"})
        yield self.ok("PUT", "/subscriptions/s-p", {"scope": "/products/p"})
        yield self.ok("PUT", "/subscriptions/s-q", {"scope": "/products/q"})
        yield self.ok("PUT", "/namedValues/secret", {"value": "hunter2", "secret": True})
        yield self.ok("PUT", "/certificates/c1", {"pem": cert1 + key1})
        yield self.ok("PUT", "/certificates/c2", {"pem": cert2 + key2})
        yield self.ok("PUT", "/gateways/g1/hostnames/one.example.com", {"certificateId": "c1"})
        yield self.ok("PUT", "/gateways/g2/hostnames/two.example.com", {"certificateId": "c2"})

    @inlineCallbacks
    def snapshot(self, gateway: str) -> Any:
        token = yield self.token(gateway)
        response = yield self.call("GET", f"/gateways/{gateway}/configuration", token)
        self.assertEqual(response.status, 200)
        return response.json()

    @staticmethod
    def ids(snapshot: dict[str, Any], key: str) -> list[str]:
        return [entity["id"] for entity in snapshot[key]]

    @inlineCallbacks
    def test_only_assigned(self) -> Any:
        """Each gateway's snapshot holds its assigned APIs and what follows from them, nothing else."""
        one = yield self.snapshot("g1")
        two = yield self.snapshot("g2")
        self.assertEqual(self.ids(one, "apis"), ["a", "c"])
        self.assertEqual(self.ids(two, "apis"), ["b"])
        self.assertEqual(self.ids(one, "products"), ["p"])
        self.assertEqual(self.ids(two, "products"), ["q"])
        self.assertEqual(self.ids(one, "policies"),
                         ["apis/a", "apis/a/operations/get", "global", "products/p"])
        self.assertEqual(self.ids(two, "policies"), ["apis/b", "global"])
        self.assertEqual(self.ids(one, "subscriptions"), ["s-a", "s-all", "s-p"])
        self.assertEqual(self.ids(two, "subscriptions"), ["s-all", "s-b", "s-q"])
        self.assertEqual(self.ids(one, "namedValues"), ["secret"])
        self.assertEqual(self.ids(one, "certificates"), ["c1"])
        self.assertEqual(self.ids(two, "certificates"), ["c2"])
        self.assertEqual([h["hostname"] for h in one["hostnames"]], ["one.example.com"])

    @inlineCallbacks
    def test_shape(self) -> Any:
        """APIs carry their operations; certificates their key; secrets their value; every entity its revision and time."""
        one = yield self.snapshot("g1")
        status = yield self.ok("GET", "/")
        self.assertEqual(one["revision"], status["revision"])
        self.assertEqual(one["gatewayId"], "g1")
        self.assertEqual(set(one), {"gatewayId", "revision", *DELIVERED.values()})
        api = one["apis"][0]
        self.assertEqual([(o["id"], o["method"], o["urlTemplate"]) for o in api["operations"]],
                         [("get", "GET", "/x/{id}"), ("post", "POST", "/x")])
        self.assertIn("PRIVATE KEY", one["certificates"][0]["key"])
        self.assertIn("BEGIN CERTIFICATE", one["certificates"][0]["pem"])
        self.assertEqual(one["namedValues"][0]["value"], "hunter2")
        self.assertEqual(one["subscriptions"][0]["primaryKey"].__class__, str)
        for key in DELIVERED.values():
            for entity in one[key]:
                self.assertLessEqual(entity["revision"], one["revision"])
                self.assertTrue(entity["modified"].endswith("Z"))

    @inlineCallbacks
    def test_unknown_path(self) -> Any:
        """A path outside the gateway protocol is 404 on the gateway listener (management paths too)."""
        token = yield self.token("g1")
        response = yield self.call("GET", "/apis", token)
        self.assertEqual(response.status, 404)


def replay(state: dict[tuple[str, str], Any], events: list[dict[str, Any]]) -> None:
    """Apply events the way a gateway does: upsert replaces, delete removes."""
    for event in events:
        key = (event["kind"], event["id"])
        if event["operation"] == "upsert":
            state[key] = event["body"]
        else:
            state.pop(key, None)


def as_state(snapshot: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(kind, e["id"]): e for kind, key in DELIVERED.items() for e in snapshot[key]}


class EventsTests(ServiceTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        yield self.ok("PUT", "/gateways/g", {})
        yield self.ok("PUT", "/gateways/h", {})
        self.tokens = {"g": (yield self.token("g")), "h": (yield self.token("h"))}

    @inlineCallbacks
    def events(self, after: int, wait: float = 0, gateway: str = "g") -> Any:
        response = yield self.call("GET", f"/gateways/{gateway}/events?after={after}&wait={wait}",
                                   self.tokens[gateway])
        self.assertEqual(response.status, 200, response.body)
        return response.json()

    @inlineCallbacks
    def snapshot(self, gateway: str = "g") -> Any:
        response = yield self.call("GET", f"/gateways/{gateway}/configuration", self.tokens[gateway])
        return response.json()

    @inlineCallbacks
    def test_immediate_when_behind(self) -> Any:
        """A poll after an older revision answers at once with the gateway's events, in order."""
        yield self.api("a")
        yield self.ok("PUT", "/gateways/g/apis/a")
        api = yield self.api("a", displayName="A")
        page = yield self.events(0, wait=30)
        self.assertEqual(page["revision"], api["revision"])
        self.assertEqual([(e["kind"], e["id"], e["operation"]) for e in page["events"]],
                         [("api", "a", "upsert"), ("api", "a", "upsert")])
        self.assertEqual(page["events"][-1]["body"]["displayName"], "A")
        self.assertEqual(page["events"][-1]["modified"], api["modified"])
        revisions = [e["revision"] for e in page["events"]]
        self.assertEqual(revisions, sorted(set(revisions)))

    @inlineCallbacks
    def test_waits_and_fires_on_write(self) -> Any:
        """A poll with nothing new waits, ignores another gateway's change, and answers on its own."""
        yield self.api("a")
        yield self.api("b")
        yield self.ok("PUT", "/gateways/g/apis/a")
        yield self.ok("PUT", "/gateways/h/apis/b")
        current = (yield self.ok("GET", "/"))["revision"]
        poll = self.events(current, wait=30)
        yield self.wait_for(lambda: self.service.feed.waiting("g") == 1)
        yield self.api("b", displayName="for h only")
        self.assertEqual(self.service.feed.waiting("g"), 1)
        changed = yield self.api("a", displayName="for g")
        page = yield poll
        self.assertEqual([(e["id"], e["body"]["displayName"]) for e in page["events"]],
                         [("a", "for g")])
        self.assertEqual(page["revision"], changed["revision"])

    @inlineCallbacks
    def test_times_out_empty(self) -> Any:
        """Without a change for it, a poll answers after ``wait`` seconds with no events and the current revision."""
        yield self.api("unassigned")
        current = (yield self.ok("GET", "/"))["revision"]
        poll = self.events(current - 1, wait=5)
        yield self.wait_for(lambda: self.service.feed.waiting("g") == 1)
        self.clock.advance(4.9)
        self.assertFalse(poll.called)
        self.clock.advance(0.1)
        page = yield poll
        self.assertEqual(page, {"revision": current, "events": []})

    @inlineCallbacks
    def test_wait_is_capped(self) -> Any:
        """A wait longer than --max-wait is held for --max-wait (60 s) only."""
        poll = self.events(0, wait=3600)
        yield self.wait_for(lambda: self.service.feed.waiting("g") == 1)
        self.clock.advance(60)
        page = yield poll
        self.assertEqual(page["events"], [])

    @inlineCallbacks
    def test_client_disconnect_cancels(self) -> Any:
        """A client that goes away during a long poll stops its wait on the service."""
        request = (f"GET /gateways/g/events?after=0&wait=30 HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: {self.tokens['g']}\r\n\r\n").encode()
        sock = yield deferToThread(socket.create_connection, ("127.0.0.1", self.gateway_port))
        yield deferToThread(sock.sendall, request)
        yield self.wait_for(lambda: self.service.feed.waiting("g") == 1)
        sock.close()
        yield self.wait_for(lambda: self.service.feed.waiting("g") == 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @inlineCallbacks
    def test_bad_parameters(self) -> Any:
        """A missing or negative ``after`` or a bad ``wait`` is 400 naming it."""
        for query, field in (("", "after"), ("?after=-1", "after"), ("?after=x", "after"),
                             ("?after=0&wait=soon", "wait"), ("?after=0&wait=-1", "wait")):
            response = yield self.call("GET", f"/gateways/g/events{query}", self.tokens["g"])
            self.assertEqual((response.status, response.json()["field"]), (400, field), query)

    @inlineCallbacks
    def test_future_revision_gone(self) -> Any:
        """A revision newer than the service's (a restored database) is 410 Gone."""
        current = (yield self.ok("GET", "/"))["revision"]
        response = yield self.call("GET", f"/gateways/g/events?after={current + 1}",
                                   self.tokens["g"])
        self.assertEqual(response.status, 410)
        self.assertIn("fetch the configuration", response.json()["message"])

    @inlineCallbacks
    def test_assignment_delivers_dependents(self) -> Any:
        """Assigning an API sends it with its policies, products and subscriptions; unassigning deletes them."""
        yield self.api("a")
        yield self.ok("PUT", "/apis/a/policy", {"value": POLICY})
        yield self.ok("PUT", "/products/p", {})
        yield self.ok("PUT", "/products/p/apis/a")
        yield self.ok("PUT", "/subscriptions/s", {"scope": "/products/p"})
        before = (yield self.ok("GET", "/"))["revision"]
        yield self.ok("PUT", "/gateways/g/apis/a")
        page = yield self.events(before)
        self.assertEqual(sorted((e["kind"], e["id"], e["operation"]) for e in page["events"]),
                         [("api", "a", "upsert"), ("policy", "apis/a", "upsert"),
                          ("product", "p", "upsert"), ("subscription", "s", "upsert")])
        api_modified = (yield self.ok("GET", "/apis/a"))["modified"]
        self.assertEqual(page["events"][0]["modified"], api_modified)
        yield self.ok("DELETE", "/gateways/g/apis/a")
        page = yield self.events(page["revision"])
        self.assertEqual(sorted((e["kind"], e["id"], e["operation"]) for e in page["events"]),
                         [("api", "a", "delete"), ("policy", "apis/a", "delete"),
                          ("product", "p", "delete"), ("subscription", "s", "delete")])
        self.assertEqual((yield self.events(0, gateway="h"))["events"], [])

    @inlineCallbacks
    def test_replay_equals_snapshot(self) -> Any:
        """For every gateway, after each change, applying its events from 0 gives its snapshot."""
        cert1, key1 = self_signed("one.example.com")
        cert2, key2 = self_signed("two.example.com")
        steps: list[tuple[str, str, Any]] = [
            ("PUT", "/apis/a", {"path": "a", "serviceUrl": "http://x/a"}),
            ("PUT", "/apis/b", {"path": "b", "serviceUrl": "http://x/b"}),
            ("PUT", "/apis/c", {"path": "c", "serviceUrl": "http://x/c"}),
            ("PUT", "/apis/a/operations/o", {"method": "GET", "urlTemplate": "/o"}),
            ("PUT", "/apis/a/operations/o/policy", {"value": POLICY}),
            ("PUT", "/policy", {"value": POLICY}),
            ("PUT", "/products/p", {}), ("PUT", "/products/p/apis/a", None),
            ("PUT", "/products/p/apis/b", None), ("PUT", "/products/p/policy", {"value": POLICY}),
            ("PUT", "/subscriptions/s-all", {"scope": "/apis"}),
            ("PUT", "/subscriptions/s-a", {"scope": "/apis/a"}),
            ("PUT", "/subscriptions/s-p", {"scope": "/products/p"}),
            ("PUT", "/namedValues/n", {"value": "1"}),
            ("PUT", "/certificates/c1", {"pem": cert1 + key1}),
            ("PUT", "/certificates/c2", {"pem": cert2 + key2}),
            ("PUT", "/gateways/g/apis/a", None), ("PUT", "/gateways/h/apis/b", None),
            ("PUT", "/gateways/g/hostnames/www.example.com", {"certificateId": "c1"}),
            ("PUT", "/gateways/h/hostnames/www.example.com", {"certificateId": "c1"}),
            ("PUT", "/gateways/g/hostnames/www.example.com", {"certificateId": "c2"}),
            ("PUT", "/subscriptions/s-all", {"scope": "/apis/c"}),
            ("PUT", "/subscriptions/s-all", {"scope": "/apis"}),
            ("DELETE", "/gateways/g/apis/a", None), ("PUT", "/gateways/g/apis/c", None),
            ("PUT", "/subscriptions/s-a", {"scope": "/apis/c"}),
            ("PUT", "/gateways/g/apis/a", None), ("DELETE", "/products/p/apis/b", None),
            ("DELETE", "/apis/a/operations/o", None), ("PUT", "/namedValues/n", {"value": "2"}),
            ("DELETE", "/subscriptions/s-p", None), ("DELETE", "/products/p", None),
            ("DELETE", "/namedValues/n", None), ("DELETE", "/policy", None),
            ("DELETE", "/gateways/h/hostnames/www.example.com", None),
            ("PUT", "/gateways/h/apis/a", None), ("DELETE", "/apis/b", None),
        ]
        states: dict[str, dict[tuple[str, str], Any]] = {"g": {}, "h": {}}
        positions = {"g": 0, "h": 0}
        for method, path, body in steps:
            yield self.ok(method, path, body)
            for gateway in ("g", "h"):
                page = yield self.events(positions[gateway], gateway=gateway)
                replay(states[gateway], page["events"])
                positions[gateway] = page["revision"]
                snapshot = yield self.snapshot(gateway)
                self.assertEqual(page["revision"], snapshot["revision"])
                self.assertEqual(states[gateway], as_state(snapshot), f"{gateway} after {method} {path}")
                fresh: dict[tuple[str, str], Any] = {}
                replay(fresh, (yield self.events(0, gateway=gateway))["events"])
                self.assertEqual(fresh, states[gateway])

    @inlineCallbacks
    def test_times_stable_across_restart(self) -> Any:
        """After a restart the snapshot and the events carry the same modification times as before."""
        yield self.api("a")
        yield self.ok("PUT", "/gateways/g/apis/a")
        before = yield self.snapshot()
        events = yield self.events(0)
        yield self.stop_service()
        self.clock.advance(3600)
        yield self.start_service()
        after = yield self.snapshot()
        self.assertEqual(after, before)
        self.assertEqual((yield self.events(0)), events)
        self.assertEqual(events["events"][0]["modified"], before["apis"][0]["modified"])


class RetentionTests(ServiceTestCase):
    options = ["--retain-events", "3"]

    @inlineCallbacks
    def test_gone_when_older_than_retained(self) -> Any:
        """With 3 events retained, polling after a revision whose successors were trimmed is 410; a recent one is not."""
        yield self.ok("PUT", "/gateways/g", {})
        token = yield self.token("g")
        for index in range(6):
            yield self.api(f"api{index}")
        current = (yield self.ok("GET", "/"))["revision"]
        gone = yield self.call("GET", "/gateways/g/events?after=1", token)
        self.assertEqual(gone.status, 410)
        self.assertEqual(gone.json()["statusCode"], 410)
        self.assertIn("older than the retained", gone.json()["message"])
        edge = yield self.call("GET", f"/gateways/g/events?after={current - 3}", token)
        self.assertEqual(edge.status, 200)
        older = yield self.call("GET", f"/gateways/g/events?after={current - 4}", token)
        self.assertEqual(older.status, 410)
        snapshot = yield self.call("GET", "/gateways/g/configuration", token)
        self.assertEqual(snapshot.json()["revision"], current)


class HeartbeatTests(ServiceTestCase):
    options = ["--heartbeat-interval", "10"]

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        yield self.ok("PUT", "/gateways/g", {})
        self.gateway_token = yield self.token("g")

    def beat(self, instance: str, revision: int = 3) -> Any:
        return self.call("POST", "/gateways/g/heartbeat", self.gateway_token,
                         {"instanceId": instance, "hostname": f"{instance}.pod", "version": "0.1.0",
                          "revision": revision})

    @inlineCallbacks
    def test_instances_listed_then_gone(self) -> Any:
        """Instances that beat are listed with their revision; one silent for 3 intervals disappears."""
        response = yield self.beat("pod-1", 3)
        self.assertEqual(response.json(), {"instances": 1, "heartbeatInterval": 10.0})
        self.clock.advance(15)
        response = yield self.beat("pod-2", 4)
        self.assertEqual(response.json()["instances"], 2)
        listed = yield self.ok("GET", "/gateways/g/instances")
        self.assertEqual(listed["count"], 2)
        self.assertEqual([(i["instanceId"], i["hostname"], i["revision"]) for i in listed["value"]],
                         [("pod-1", "pod-1.pod", 3), ("pod-2", "pod-2.pod", 4)])
        self.clock.advance(15.5)
        listed = yield self.ok("GET", "/gateways/g/instances")
        self.assertEqual([i["instanceId"] for i in listed["value"]], ["pod-2"])
        self.assertEqual(len(self.logged("is alive")), 2)

    @inlineCallbacks
    def test_validation(self) -> Any:
        """A heartbeat without instanceId, with a bad revision or an unknown field is 400 naming it."""
        for body, field in (({}, "instanceId"), ({"instanceId": "i", "revision": -1}, "revision"),
                            ({"instanceId": "i", "revision": "3"}, "revision"),
                            ({"instanceId": "i", "pods": 3}, "pods")):
            response = yield self.call("POST", "/gateways/g/heartbeat", self.gateway_token, body)
            self.assertEqual((response.status, response.json()["field"]), (400, field))
