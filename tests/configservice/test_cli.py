"""Tests of ``python -m configservice token`` and of the ``twistd apimgw-config`` options."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.python import usage
from twisted.trial.unittest import TestCase

from configservice._cli import main
from configservice.tap import ADMIN_KEY_ENV, Options

from .harness import ServiceTestCase


def run(argv: list[str], clock: Any = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    kwargs = {"clock": clock} if clock else {}
    status = main(argv, stdout=out, stderr=err, **kwargs)
    return status, out.getvalue(), err.getvalue()


class TokenCommandTests(ServiceTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        yield self.ok("PUT", "/gateways/g", {})

    @inlineCallbacks
    def test_token_accepted_by_service(self) -> Any:
        """The command prints a GatewayKey token, for either key, that the running service accepts."""
        for key_type in ("primary", "secondary"):
            status, out, err = run(["token", "--gateway", "g", "--expiry", "30d",
                                    "--key-type", key_type, "--db", self.db_path],
                                   clock=self.clock.seconds)
            self.assertEqual((status, err), (0, ""))
            token = out.strip()
            self.assertTrue(token.startswith("GatewayKey g&"))
            response = yield self.call("GET", "/gateways/g/configuration", token)
            self.assertEqual(response.status, 200, key_type)

    def test_errors(self) -> None:
        """Unknown gateway, missing database, too long an expiry and a missing --gateway exit 2 with a message."""
        missing = os.path.join(tempfile.mkdtemp(), "none.db")
        for argv, message in [
            (["token", "--gateway", "nope", "--db", self.db_path], "no gateway 'nope'"),
            (["token", "--gateway", "g", "--db", missing], "no database"),
            (["token", "--gateway", "g", "--expiry", "31d", "--db", self.db_path], "30 days"),
            (["token", "--db", self.db_path], "--gateway is required"),
            (["token", "--gateway", "g", "--key-type", "x", "--db", self.db_path], "--key-type"),
            ([], "a command is required"),
        ]:
            status, out, err = run(argv)
            self.assertEqual((status, out), (2, ""), argv)
            self.assertIn(message, err, argv)
        self.assertFalse(os.path.exists(missing))


class OptionsTests(TestCase):
    def parse(self, argv: list[str], environ: dict[str, str] | None = None) -> Options:
        options = Options(environ=environ or {})
        options.parseOptions(argv)
        return options

    def test_admin_key_from_environment(self) -> None:
        """The admin key is taken from the environment when no option gives it."""
        options = self.parse([], {ADMIN_KEY_ENV: "k" * 20})
        self.assertEqual(options["admin-key"], "k" * 20)
        self.assertEqual(self.parse(["--admin-key", "o" * 20], {ADMIN_KEY_ENV: "k" * 20})["admin-key"],
                         "o" * 20)

    def test_admin_key_from_file(self) -> None:
        """--admin-key-file reads the key from a file, without its trailing newline."""
        path = os.path.join(tempfile.mkdtemp(), "key")
        with open(path, "w") as f:
            f.write("f" * 20 + "\n")
        self.assertEqual(self.parse(["--admin-key-file", path])["admin-key"], "f" * 20)

    def test_admin_key_required(self) -> None:
        """Without an admin key, or with a short one, the command line is refused."""
        self.assertRaises(usage.UsageError, self.parse, [])
        self.assertRaises(usage.UsageError, self.parse, ["--admin-key", "short"])

    def test_defaults_and_numbers(self) -> None:
        """Defaults: management on loopback, 10000 events, 60 s heartbeats; bad numbers are refused."""
        options = self.parse([], {ADMIN_KEY_ENV: "k" * 20})
        self.assertEqual(
            (options["management"], options["retain-events"], options["heartbeat-interval"],
             options["max-wait"]),
            ("tcp:8091:interface=127.0.0.1", 10000, 60.0, 60.0),
        )
        for argv in (["--retain-events", "0"], ["--retain-events", "x"], ["--max-wait", "-1"]):
            self.assertRaises(usage.UsageError, self.parse, argv, {ADMIN_KEY_ENV: "k" * 20})
