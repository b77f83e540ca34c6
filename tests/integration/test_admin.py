"""
End-to-end tests of the admin port's bearer token: a real gateway on
loopback sockets, real HTTP.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread

from .harness import GatewayTestCase, Response, request_sync

_TOKEN = "4dm1n-t0ken-for-tests"


class _AdminTokenCase(GatewayTestCase):
    def admin_as(self, path: str, token: str | None) -> Deferred[Response]:
        headers = [] if token is None else [("Authorization", f"Bearer {token}")]
        return deferToThread(request_sync, self.admin_port, "GET", path, headers=headers)

    @inlineCallbacks
    def check_config_protected(self, token: str) -> Any:
        missing = yield self.admin_as("/config", None)
        self.assertEqual(missing.status, 401)
        self.assertTrue((missing.header("www-authenticate") or "").startswith("Bearer "))
        self.assertEqual(missing.json()["statusCode"], 401)
        wrong = yield self.admin_as("/config", token + "x")
        self.assertEqual(wrong.status, 401)
        self.assertIn('error="invalid_token"', wrong.header("www-authenticate") or "")
        right = yield self.admin_as("/config", token)
        self.assertEqual(right.status, 200)
        self.assertIn("routes", right.json())


class LiteralTokenTests(_AdminTokenCase):
    """``--admin-token`` given literally."""

    extra_args = ["--admin-token", _TOKEN]  # noqa: RUF012 (the harness reads it)

    @inlineCallbacks
    def test_config_needs_the_token(self) -> Any:
        """/config without the token, or with a wrong one, is 401; with it, 200."""
        yield self.check_config_protected(_TOKEN)

    @inlineCallbacks
    def test_metrics_and_probes_stay_open(self) -> Any:
        """/metrics, /healthz and /readyz answer without a token."""
        for path in ("/metrics", "/healthz", "/readyz"):
            self.assertEqual((yield self.admin_as(path, None)).status, 200, path)


class FileTokenTests(_AdminTokenCase):
    """``--admin-token`` naming a file, re-read when it changes."""

    def setUp(self) -> Any:
        self.token_path = os.path.join(tempfile.mkdtemp(), "admin-token")
        with open(self.token_path, "w") as f:
            f.write(_TOKEN + "\n")
        self.extra_args = ["--admin-token", self.token_path]
        return super().setUp()

    @inlineCallbacks
    def test_file_token(self) -> Any:
        """The file's token protects /config, and a new token in the file replaces it."""
        yield self.check_config_protected(_TOKEN)
        with open(self.token_path, "w") as f:
            f.write("r0tated-token-value\n")
        self.assertEqual((yield self.admin_as("/config", _TOKEN)).status, 401)
        self.assertEqual((yield self.admin_as("/config", "r0tated-token-value")).status, 200)
