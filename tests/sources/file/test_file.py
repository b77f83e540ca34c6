"""
Tests for :mod:`gateway.sources.file`: the configuration file format, the
built-in default configuration, and the polling file source.
"""

from __future__ import annotations

import os
import time
import textwrap
from itertools import count

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import (
    Api,
    Certificate,
    ObjectRef,
    Operation,
    Route,
    RouteSet,
    SourceObject,
    Store,
)
from gateway.sources.file import _source as file_module
from gateway.sources.file import (
    DEFAULT_CONFIG_TEMPLATE,
    ConfigFileError,
    FileSource,
    default_objects,
    parse_config,
)
from gateway.translate import translate

EXAMPLE = FilePath(__file__).parent().parent().parent().parent().descendant(["examples", "gateway.yaml"])
APIM_EXAMPLE = EXAMPLE.sibling("apim-policies.yaml")


def parse(text: str, **kwargs: object) -> list[SourceObject]:
    """Parse dedented ``text`` with a fixed modification time."""
    kwargs.setdefault("modified", 7.0)
    return parse_config(textwrap.dedent(text), **kwargs)  # type: ignore[arg-type]


FULL = """\
apis:
  - name: users
    displayName: Users API
    path: users/v1
    serviceUrl: http://users.internal:8000/api
    hostnames: [api.example.com, "*.example.org"]
    subscriptionRequired: true
    operations:
      - {name: get-user, method: GET, urlTemplate: "/users/{id}"}
      - name: create-user
        method: POST
        urlTemplate: /users
  - name: open
    path: open
    serviceUrl: http://open.internal
routes:
  - host: www.example.com
    path: /app
    pathType: Prefix
    backend: http://127.0.0.1:9001
  - path: /exact
    pathType: Exact
    backend: http://127.0.0.1:9002
    preserveHost: true
  - host: "*.example.com"
    path: /any
    pathType: ImplementationSpecific
    backend: https://127.0.0.1:9003
    httpsRedirect: true
certificates:
  - name: main
    hosts: [www.example.com]
    cert: "CERT-A"
    key: "KEY-A"
  - name: other
    hosts: ["*.example.com", example.com]
    cert: "CERT-B"
    key: "KEY-B"
defaultCertificate: other
"""


class ParseConfigTests(SynchronousTestCase):
    """The YAML format of a configuration file, turned into model objects."""

    def test_full_example(self) -> None:
        """Every field of every entity lands in the matching model field."""
        objects = parse(FULL, source="file", modified=42.5)
        users = Api(
            name="users",
            path="users/v1",
            service_url="http://users.internal:8000/api",
            hostnames=("api.example.com", "*.example.org"),
            subscription_required=True,
            operations=(
                Operation(name="get-user", method="GET", url_template="/users/{id}"),
                Operation(name="create-user", method="POST", url_template="/users"),
            ),
            display_name="Users API",
        )
        open_api = Api(name="open", path="open", service_url="http://open.internal")
        routes = RouteSet(
            (
                Route(
                    path="/app",
                    backend="http://127.0.0.1:9001",
                    host="www.example.com",
                    path_type="Prefix",
                    preserve_host=False,
                ),
                Route(
                    path="/exact",
                    backend="http://127.0.0.1:9002",
                    host=None,
                    path_type="Exact",
                    preserve_host=True,
                ),
                Route(
                    path="/any",
                    backend="https://127.0.0.1:9003",
                    host="*.example.com",
                    path_type="ImplementationSpecific",
                    https_redirect=True,
                ),
            )
        )
        main = Certificate(("www.example.com",), "CERT-A", "KEY-A", is_default=False)
        other = Certificate(("*.example.com", "example.com"), "CERT-B", "KEY-B", is_default=True)
        self.assertEqual(
            objects,
            [
                SourceObject(ObjectRef("file", "api", "users"), 42.5, users),
                SourceObject(ObjectRef("file", "api", "open"), 42.5, open_api),
                SourceObject(ObjectRef("file", "routes", "routes"), 42.5, routes),
                SourceObject(ObjectRef("file", "certificate", "main"), 42.5, main),
                SourceObject(ObjectRef("file", "certificate", "other"), 42.5, other),
            ],
        )
        # Certificate PEMs are left out of repr, so check them explicitly.
        pems = [(o.body.cert_pem, o.body.key_pem) for o in objects[3:]]
        self.assertEqual(pems, [("CERT-A", "KEY-A"), ("CERT-B", "KEY-B")])

    def test_optional_fields_default(self) -> None:
        """Omitted optional fields, or fields left empty, take the model's defaults."""
        objects = parse(
            """\
            apis:
              - {name: a, path: a, serviceUrl: "http://a"}
              - name: b
                path: b
                serviceUrl: http://b
                hostnames:
                operations:
            routes:
              - {path: /p, backend: "http://r"}
            """
        )
        self.assertEqual(
            [o.body for o in objects],
            [
                Api("a", "a", "http://a", (), False, (), ""),
                Api("b", "b", "http://b", (), False, (), ""),
                RouteSet((Route("/p", "http://r", None, "Prefix", False),)),
            ],
        )

    def test_source_name_in_refs(self) -> None:
        """The refs carry the given source name and every object the given time."""
        objects = parse(FULL, source="local", modified=3.0)
        self.assertEqual({(o.ref.source, o.modified) for o in objects}, {("local", 3.0)})

    def test_empty_documents(self) -> None:
        """An empty file, a file of comments, ``{}`` and ``~`` are empty configurations."""
        for text in ("", "# nothing yet\n", "{}", "~\n", "apis: []\nroutes:\n"):
            self.assertEqual(parse(text), [], text)

    def test_empty_routes_give_no_routeset(self) -> None:
        """An empty ``routes:`` list produces no routes object at all."""
        objects = parse("apis: [{name: a, path: a, serviceUrl: 'http://a'}]\nroutes: []\n")
        self.assertEqual([o.ref.kind for o in objects], ["api"])

    def test_unnamed_operation(self) -> None:
        """An operation without a name is named after its method and template."""
        [api] = parse(
            """\
            apis:
              - name: a
                path: a
                serviceUrl: http://a
                operations: [{method: GET, urlTemplate: /x}]
            """
        )
        self.assertEqual(api.body.operations, (Operation("GET /x", "GET", "/x"),))

    def test_merge_keys(self) -> None:
        """YAML merge keys are honoured, and an own key overrides a merged one."""
        objects = parse(
            """\
            routes:
              - &base {path: /a, backend: "http://one", pathType: Exact}
              - <<: *base
                path: /b
            """
        )
        self.assertEqual(objects[0].body.routes[1], Route("/b", "http://one", None, "Exact", False))

    def test_semantics_not_checked(self) -> None:
        """A malformed URL, host or path parses: translation reports those per object."""
        [routes] = parse("routes: [{host: 'bad host!', path: nope, backend: 'ftp:x'}]")
        self.assertEqual(routes.body.routes, (Route("nope", "ftp:x", "bad host!"),))

    def test_example_file(self) -> None:
        """
        examples/gateway.yaml parses with its certificate files, and translates
        (certificates checked against the current time) without a single problem.
        """
        objects = parse_config(
            EXAMPLE.getContent().decode("utf-8"), modified=1.0, base_dir=EXAMPLE.parent().path
        )
        self.assertEqual(
            [str(o.ref) for o in objects],
            ["file:api/echo", "file:api/orders", "file:routes/routes", "file:certificate/example"],
        )
        path_types = {r.path_type for r in objects[2].body.routes}
        self.assertEqual(path_types, {"Exact", "Prefix", "ImplementationSpecific"})
        self.assertIn(True, [r.preserve_host for r in objects[2].body.routes])
        self.assertIn(True, [r.https_redirect for r in objects[2].body.routes])
        config = translate(objects, now=time.time())
        self.assertEqual(config.problems, ())
        self.assertEqual(config.certificates[0].hosts, ("www.example.com", "*.example.com"))
        self.assertEqual(str(config.default_certificate), "file:certificate/example")


class ConfigFileErrorTests(SynchronousTestCase):
    """Structural errors name the file, the line and the place in the document."""

    def assertError(self, text: str, line: int | None, message: str) -> ConfigFileError:
        """Parsing ``text`` fails on ``line`` with exactly ``message``."""
        error = self.assertRaises(
            ConfigFileError, parse_config, textwrap.dedent(text), path="gw.yaml", modified=0.0
        )
        self.assertEqual((error.line, error.message), (line, message))
        return error

    def test_str(self) -> None:
        """The text is ``path:line: message``, or ``path: message`` without a line."""
        self.assertEqual(
            str(ConfigFileError("apis[0]: 'name' is required", path="g.yaml", line=12)),
            "g.yaml:12: apis[0]: 'name' is required",
        )
        self.assertEqual(str(ConfigFileError("unreadable", path="g.yaml")), "g.yaml: unreadable")
        self.assertIsInstance(ConfigFileError("x"), ValueError)

    def test_syntax_error(self) -> None:
        """A YAML syntax error is reported on the line the parser stopped at."""
        error = self.assertError(
            """\
            apis:
              - name: a
                path: [a, b
            routes: []
            """,
            4,
            "invalid YAML: expected ',' or ']', but got ':'"
            " (while parsing a flow sequence started on line 3)",
        )
        self.assertTrue(str(error).startswith("gw.yaml:4: invalid YAML"))

    def test_missing_field(self) -> None:
        """A missing required field is reported on the line of its mapping."""
        self.assertError(
            """\
            apis:
              - name: a
                path: a
                serviceUrl: http://a
                operations:
                  - {method: GET, urlTemplate: /a}
                  - name: b
                    urlTemplate: /b
            """,
            7,
            "apis[0].operations[1]: 'method' is required",
        )

    def test_empty_required_field(self) -> None:
        """A required field left empty counts as missing."""
        self.assertError(
            "routes:\n  - path: /a\n    backend:\n", 2, "routes[0]: 'backend' is required"
        )

    def test_wrong_types(self) -> None:
        """A value of the wrong type is reported on its own line."""
        self.assertError(
            "apis:\n  - name: a\n    path: 1.10\n    serviceUrl: http://a\n",
            3,
            "apis[0].path: must be a string, not a number (quote it)",
        )
        self.assertError(
            "apis:\n  - name: a\n    path: a\n    serviceUrl: http://a\n    hostnames: a.com\n",
            5,
            "apis[0].hostnames: must be a list, not a string",
        )
        self.assertError(
            "routes:\n  - path: /a\n    backend: http://a\n    preserveHost: 'yes'\n",
            4,
            "routes[0].preserveHost: must be true or false, not a string",
        )
        self.assertError("routes:\n  - /a\n", 2, "routes[0]: must be a mapping, not a string")
        self.assertError("- a\n", 1, "the configuration must be a mapping, not a list")

    def test_duplicate_names(self) -> None:
        """A repeated API, certificate or operation name is reported where it repeats."""
        self.assertError(
            """\
            apis:
              - {name: a, path: a, serviceUrl: "http://a"}
              - {name: b, path: b, serviceUrl: "http://b"}
              - {name: a, path: c, serviceUrl: "http://c"}
            """,
            4,
            "apis[2]: duplicate API name 'a'",
        )
        self.assertError(
            "certificates:\n  - {name: c, cert: x}\n  - {name: c, cert: y}\n",
            3,
            "certificates[1]: duplicate certificate name 'c'",
        )
        self.assertError(
            """\
            apis:
              - name: a
                path: a
                serviceUrl: http://a
                operations:
                  - {method: GET, urlTemplate: /a}
                  - {method: GET, urlTemplate: /a}
            """,
            7,
            "apis[0].operations[1]: duplicate operation name 'GET /a'",
        )

    def test_unknown_keys(self) -> None:
        """An unknown key, top-level or nested, is reported on its own line."""
        self.assertError(
            "apis: []\nroute:\n  - {path: /a, backend: 'http://a'}\n",
            2,
            "unknown key 'route' (expected one of: apis, routes, certificates, defaultCertificate,"
            " products, subscriptions, namedValues, policies)",
        )
        self.assertError(
            "routes:\n  - path: /a\n    backend: http://a\n    pathtype: Exact\n",
            4,
            "routes[0]: unknown key 'pathtype' (expected one of: host, path, pathType, backend,"
            " preserveHost, httpsRedirect)",
        )

    def test_repeated_key(self) -> None:
        """A key given twice in one mapping is an error, not a silent override."""
        self.assertError(
            "routes:\n  - path: /a\n    backend: http://a\n    path: /b\n",
            4,
            "routes[0]: 'path' is given twice",
        )

    def test_blank_name(self) -> None:
        """A blank name cannot identify an object."""
        self.assertError(
            "apis:\n  - {name: ' ', path: a, serviceUrl: 'http://a'}\n",
            2,
            "apis[0].name: must not be blank",
        )

    def test_default_certificate_unknown(self) -> None:
        """``defaultCertificate`` must name one of the certificates."""
        self.assertError(
            "certificates:\n  - {name: c, cert: x, key: y}\ndefaultCertificate: d\n",
            3,
            "defaultCertificate: names no certificate: 'd'",
        )

    def test_certificate_needs_cert(self) -> None:
        """A certificate needs its chain, inline or from a file, not both."""
        self.assertError(
            "certificates:\n  - {name: c, hosts: [a.com], key: y}\n",
            2,
            "certificates[0]: 'cert' or 'certFile' is required",
        )
        self.assertError(
            "certificates:\n  - name: c\n    cert: x\n    certFile: c.pem\n",
            4,
            "certificates[0]: give either 'cert' or 'certFile', not both",
        )

    def test_unreadable_cert_file(self) -> None:
        """A certFile that cannot be read is reported on its line, with the path tried."""
        base = self.mktemp()
        os.mkdir(base)
        missing = os.path.join(base, "missing.pem")
        error = self.assertRaises(
            ConfigFileError,
            parse_config,
            "certificates:\n  - name: c\n    certFile: missing.pem\n",
            modified=0.0,
            base_dir=base,
        )
        self.assertEqual(error.line, 3)
        self.assertTrue(
            error.message.startswith(f"certificates[0].certFile: cannot read {missing!r}: "),
            error.message,
        )


class CertificateFileTests(SynchronousTestCase):
    """Certificates read from PEM files beside the configuration file."""

    def setUp(self) -> None:
        self.base = FilePath(self.mktemp())
        self.base.child("certs").makedirs()
        self.base.descendant(["certs", "a.pem"]).setContent(b"CHAIN-A\n")
        self.base.descendant(["certs", "a.key"]).setContent(b"KEY-A\n")

    def test_relative_to_base_dir(self) -> None:
        """certFile and keyFile are read relative to base_dir, not the working directory."""
        [cert] = parse(
            """\
            certificates:
              - {name: a, hosts: [a.com], certFile: certs/a.pem, keyFile: certs/a.key}
            """,
            base_dir=self.base.path,
        )
        self.assertEqual(
            (cert.body.hosts, cert.body.cert_pem, cert.body.key_pem, cert.body.is_default),
            (("a.com",), "CHAIN-A\n", "KEY-A\n", False),
        )

    def test_absolute_path(self) -> None:
        """An absolute certFile is read as it is."""
        absolute = self.base.descendant(["certs", "a.pem"]).path
        [cert] = parse(
            f"certificates:\n  - {{name: a, certFile: '{absolute}', key: k}}\n",
            base_dir="/nonexistent",
        )
        self.assertEqual(cert.body.cert_pem, "CHAIN-A\n")

    def test_combined_pem(self) -> None:
        """Without key or keyFile the key is expected in the chain's own PEM."""
        [cert] = parse(
            "certificates:\n  - {name: a, certFile: certs/a.pem}\ndefaultCertificate: a\n",
            base_dir=self.base.path,
        )
        self.assertEqual(
            (cert.body.cert_pem, cert.body.key_pem, cert.body.is_default),
            ("CHAIN-A\n", "CHAIN-A\n", True),
        )


ECHO_OPERATIONS = {
    ("GET", "/resource"),
    ("GET", "/resource-cached"),
    ("HEAD", "/resource"),
    ("POST", "/resource"),
    ("PUT", "/resource"),
    ("DELETE", "/resource"),
}


class DefaultConfigTests(SynchronousTestCase):
    """The built-in configuration: the Echo API in front of the echo backend."""

    def test_default_objects(self) -> None:
        """default_objects gives the echo API under source ``default``, with its operations."""
        [obj] = default_objects("http://127.0.0.1:4321", modified=5.0)
        api = obj.body
        self.assertEqual(
            (obj.ref, obj.modified, api.path, api.service_url),
            (ObjectRef("default", "api", "echo"), 5.0, "echo", "http://127.0.0.1:4321"),
        )
        self.assertEqual((api.hostnames, api.subscription_required), ((), False))
        self.assertEqual({(op.method, op.url_template) for op in api.operations}, ECHO_OPERATIONS)
        self.assertEqual(translate([obj]).problems, ())

    def test_modified_defaults_to_zero(self) -> None:
        """The default objects are older than anything real, so they lose every conflict."""
        self.assertEqual(default_objects("http://127.0.0.1:1")[0].modified, 0.0)

    def test_template_formats(self) -> None:
        """The template has one placeholder and no other braces, so str.format works on it."""
        text = DEFAULT_CONFIG_TEMPLATE.format(echo_url="http://127.0.0.1:4321")
        objects = parse_config(text, modified=0.0, source="default")
        self.assertEqual(objects, default_objects("http://127.0.0.1:4321"))

    def test_url_inserted_verbatim(self) -> None:
        """A URL with YAML-special characters reaches serviceUrl unchanged."""
        url = 'http://127.0.0.1:1/a #b: "c"'
        self.assertEqual(default_objects(url)[0].body.service_url, url)


VALID = """\
apis:
  - {name: a, path: a, serviceUrl: "http://a"}
"""

VALID_2 = """\
apis:
  - {name: b, path: b, serviceUrl: "http://b"}
routes:
  - {path: /r, backend: "http://r"}
"""

INVALID = """\
apis:
  - {name: c, path: c}
"""


class FileSourceTests(SynchronousTestCase):
    """The file source, polled on a fake clock."""

    def setUp(self) -> None:
        self.store = Store()
        self.clock = Clock()
        self.failures: list[ConfigFileError] = []
        self.dir = FilePath(self.mktemp())
        self.dir.makedirs()
        self.path = self.dir.child("gateway.yaml").path
        self.mtimes = count(1_000_000)
        self.source = FileSource(
            self.store,
            self.path,
            reactor=self.clock,
            poll_interval=2.0,
            on_reload_failed=self.failures.append,
        )
        self.events: list[dict] = []
        self.source._log = Logger(observer=self.events.append)
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.source.running:
            self.source.stopService()

    def write(self, text: str) -> float:
        """Write the file and give it a new, later mtime; returns that mtime."""
        mtime = float(next(self.mtimes))
        with open(self.path, "w") as f:
            f.write(text)
        os.utime(self.path, (mtime, mtime))
        return mtime

    def expected(self, text: str, mtime: float) -> tuple[SourceObject, ...]:
        return tuple(parse_config(text, modified=mtime, base_dir=self.dir.path))

    def test_start_loads(self) -> None:
        """Starting loads the file into the store, each object modified at the file's mtime."""
        mtime = self.write(VALID_2)
        self.source.startService()
        self.assertEqual(self.store.objects("file"), self.expected(VALID_2, mtime))
        self.assertEqual({o.modified for o in self.store.objects()}, {mtime})

    def test_change_picked_up_on_next_poll(self) -> None:
        """An edit is applied by the next poll, not before."""
        self.write(VALID)
        self.source.startService()
        mtime = self.write(VALID_2)
        self.clock.advance(1.9)
        self.assertEqual([o.ref.name for o in self.store.objects()], ["a"])
        self.clock.advance(0.1)
        self.assertEqual(self.store.objects("file"), self.expected(VALID_2, mtime))

    def test_unchanged_file_not_reread(self) -> None:
        """Polls that find the file unchanged do not parse it again."""
        parsed = []

        def counting(*args: object, **kwargs: object) -> list[SourceObject]:
            parsed.append(1)
            return parse_config(*args, **kwargs)  # type: ignore[arg-type]

        self.patch(file_module, "parse_config", counting)
        self.write(VALID)
        self.source.startService()
        self.clock.pump([2.0] * 5)
        self.assertEqual(len(parsed), 1)

    def test_invalid_edit_keeps_previous(self) -> None:
        """An invalid edit leaves the store as it was and reports the error once."""
        mtime = self.write(VALID)
        self.source.startService()
        self.write(INVALID)
        self.clock.pump([2.0] * 3)
        self.assertEqual(self.store.objects("file"), self.expected(VALID, mtime))
        self.assertEqual(
            [(f.path, f.line, f.message) for f in self.failures],
            [(self.path, 2, "apis[0]: 'serviceUrl' is required")],
        )

    def test_valid_edit_after_invalid(self) -> None:
        """A valid edit after an invalid one is applied."""
        self.write(VALID)
        self.source.startService()
        self.write(INVALID)
        self.clock.advance(2.0)
        mtime = self.write(VALID_2)
        self.clock.advance(2.0)
        self.assertEqual(self.store.objects("file"), self.expected(VALID_2, mtime))
        self.assertEqual(len(self.failures), 1)

    def test_error_logged_with_line(self) -> None:
        """A failed reload is logged as an error naming the file and line, fields attached."""
        self.write(VALID)
        self.source.startService()
        self.write(INVALID)
        self.clock.advance(2.0)
        [event] = [e for e in self.events if e["log_level"] is LogLevel.error]
        self.assertEqual((event["path"], event["line"]), (self.path, 2))
        self.assertIn(f"{self.path}:2: apis[0]: 'serviceUrl' is required", formatEvent(event))
        self.assertIn("previous one stays in service", formatEvent(event))

    def test_missing_file_retried(self) -> None:
        """A file missing at start is reported, then loaded once it appears."""
        self.source.startService()
        self.assertEqual(len(self.failures), 1)
        self.assertIsNone(self.failures[0].line)
        self.assertIn("No such file", self.failures[0].message)
        self.assertEqual(self.store.objects(), ())
        mtime = self.write(VALID)
        self.clock.advance(2.0)
        self.assertEqual(self.store.objects("file"), self.expected(VALID, mtime))
        self.assertEqual(len(self.failures), 1)

    def test_deleted_file_keeps_previous(self) -> None:
        """Deleting the file is a failed reload: the previous objects stay."""
        mtime = self.write(VALID)
        self.source.startService()
        os.remove(self.path)
        self.clock.advance(2.0)
        self.assertEqual(self.store.objects("file"), self.expected(VALID, mtime))
        self.assertEqual(len(self.failures), 1)

    def test_when_synced(self) -> None:
        """when_synced fires after the first successful load, with a new Deferred per call."""
        first = self.source.when_synced()
        second = self.source.when_synced()
        self.assertIsNot(first, second)
        self.source.startService()
        self.assertNoResult(first)
        self.write(VALID)
        self.clock.advance(2.0)
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        later = self.source.when_synced()
        self.assertIsNot(later, first)
        self.assertIsNone(self.successResultOf(later))

    def test_when_synced_cancel(self) -> None:
        """A cancelled when_synced Deferred is forgotten, so the load does not fire it again."""
        waiting = self.source.when_synced()
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.write(VALID)
        self.assertTrue(self.source.reload())

    def test_reload_result(self) -> None:
        """reload() says whether the file was loaded, and works without the service running."""
        self.assertFalse(self.source.reload())
        self.write(INVALID)
        self.assertFalse(self.source.reload())
        self.assertEqual(self.store.objects(), ())
        mtime = self.write(VALID)
        self.assertTrue(self.source.reload())
        self.assertEqual(self.store.objects("file"), self.expected(VALID, mtime))
        self.assertEqual(len(self.failures), 2)

    def test_stop_stops_polling(self) -> None:
        """After stopService nothing is scheduled and edits are not applied."""
        mtime = self.write(VALID)
        self.source.startService()
        self.source.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.write(VALID_2)
        self.clock.advance(10.0)
        self.assertEqual(self.store.objects("file"), self.expected(VALID, mtime))

    def test_cert_file_beside_config(self) -> None:
        """certFile is read from the configuration file's directory."""
        self.dir.child("c.pem").setContent(b"PEM")
        self.write("certificates:\n  - {name: c, certFile: c.pem, key: k}\n")
        self.assertTrue(self.source.reload())
        self.assertEqual(self.store.objects()[0].body.cert_pem, "PEM")

    def test_certificate_file_change_reloads(self) -> None:
        """
        Replacing a certificate file the configuration names (the
        configuration itself unchanged) is picked up by the next poll.
        """
        self.dir.child("c.pem").setContent(b"PEM-1")
        self.write("certificates:\n  - {name: c, certFile: c.pem, key: k}\n")
        self.source.startService()
        self.assertEqual(self.store.objects()[0].body.cert_pem, "PEM-1")
        replacement = self.dir.child("c.pem.new")
        replacement.setContent(b"PEM-2")
        os.replace(replacement.path, self.dir.child("c.pem").path)
        self.clock.advance(2.0)
        self.assertEqual(self.store.objects()[0].body.cert_pem, "PEM-2")
        self.assertTrue(
            [e for e in self.events if "c.pem, named by the configuration, changed" in formatEvent(e)]
        )

    def test_policy_file_change_reloads(self) -> None:
        """
        Replacing a policy's xmlFile (the configuration itself unchanged)
        is picked up by the next poll, like a certificate file.
        """
        self.dir.child("p.xml").setContent(b"<policies>1</policies>")
        self.write("policies:\n  - {scope: global, xmlFile: p.xml}\n")
        self.source.startService()
        self.assertEqual(self.store.objects()[0].body.xml, "<policies>1</policies>")
        replacement = self.dir.child("p.xml.new")
        replacement.setContent(b"<policies>2</policies>")
        os.replace(replacement.path, self.dir.child("p.xml").path)
        self.clock.advance(2.0)
        self.assertEqual(self.store.objects()[0].body.xml, "<policies>2</policies>")

    def test_unchanged_certificate_file_not_reread(self) -> None:
        """Polls that find neither the configuration nor its certificate files changed parse nothing."""
        parsed = []

        def counting(*args: object, **kwargs: object) -> list[SourceObject]:
            parsed.append(1)
            return parse_config(*args, **kwargs)  # type: ignore[arg-type]

        self.patch(file_module, "parse_config", counting)
        self.dir.child("c.pem").setContent(b"PEM")
        self.write("certificates:\n  - {name: c, certFile: c.pem, key: k}\n")
        self.source.startService()
        self.clock.pump([2.0] * 5)
        self.assertEqual(len(parsed), 1)

    def test_missing_certificate_file_retried_when_it_appears(self) -> None:
        """
        A certificate file that is missing fails the load; once it appears
        the next poll loads the configuration.
        """
        self.write("certificates:\n  - {name: c, certFile: c.pem, key: k}\n")
        self.source.startService()
        self.assertEqual(len(self.failures), 1)
        self.clock.advance(2.0)
        self.assertEqual(len(self.failures), 1)
        self.dir.child("c.pem").setContent(b"PEM")
        self.clock.advance(2.0)
        self.assertEqual(self.store.objects()[0].body.cert_pem, "PEM")

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is an error on the line of the bad byte."""
        with open(self.path, "wb") as f:
            f.write(b"apis: []\n# caf\xe9\n")
        self.assertFalse(self.source.reload())
        self.assertEqual((self.failures[0].line, self.failures[0].message), (2, "not UTF-8 text"))

    def test_file_changing_while_read(self) -> None:
        """A file that keeps changing while read is not applied, and the next poll retries."""
        self.write(VALID)
        self.source.startService()
        versions = count()
        real_stat = file_module._stat
        self.patch(file_module, "_stat", lambda path: (next(versions),) * 5)
        mtime = self.write(VALID_2)
        self.clock.advance(2.0)
        self.assertEqual([o.ref.name for o in self.store.objects()], ["a"])
        self.assertEqual(
            self.failures[0].message, "the configuration file kept changing while being read"
        )
        self.patch(file_module, "_stat", real_stat)
        self.clock.advance(2.0)
        self.assertEqual(self.store.objects("file"), self.expected(VALID_2, mtime))

    def test_failing_callback_keeps_polling(self) -> None:
        """An on_reload_failed that raises is logged and polling goes on."""

        def broken(error: ConfigFileError) -> None:
            raise RuntimeError("broken callback")

        self.source._on_reload_failed = broken
        self.write(INVALID)
        self.source.startService()
        mtime = self.write(VALID)
        self.clock.advance(2.0)
        self.assertEqual(self.store.objects("file"), self.expected(VALID, mtime))
        failures = [e for e in self.events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0]["log_failure"].value, RuntimeError)


class ManagementObjectTests(SynchronousTestCase):
    """Products, subscriptions, named values and policies in the file."""

    def test_apim_example_file(self) -> None:
        """
        examples/apim-policies.yaml parses (its policy file read beside it),
        every policy document is well-formed XML with a <policies> root, and
        it translates without a problem.
        """
        import xml.etree.ElementTree as ElementTree

        from gateway.model import SubscriptionScope

        objects = parse_config(
            APIM_EXAMPLE.getContent().decode("utf-8"), modified=1.0,
            base_dir=APIM_EXAMPLE.parent().path,
        )
        self.assertEqual(
            [str(o.ref) for o in objects],
            ["file:api/orders", "file:api/catalog", "file:product/starter",
             "file:subscription/contoso", "file:subscription/orders-ops",
             "file:namedvalue/backend-region", "file:namedvalue/backend-api-key",
             "file:policy/global", "file:policy/products/starter", "file:policy/apis/orders",
             "file:policy/apis/orders/operations/get-order"],
        )
        bodies = {str(o.ref): o.body for o in objects}
        names = bodies["file:api/catalog"].subscription_key_parameter_names
        self.assertEqual((names.header, names.query), ("X-Catalog-Key", "catalog-key"))
        self.assertEqual(bodies["file:product/starter"].api_ids, ("catalog", "orders"))
        self.assertEqual(bodies["file:subscription/orders-ops"].scope,
                         SubscriptionScope("api", "orders"))
        self.assertIsNone(bodies["file:subscription/orders-ops"].secondary_key)
        self.assertTrue(bodies["file:namedvalue/backend-api-key"].secret)
        self.assertNotIn("s3cr3t", repr(bodies["file:namedvalue/backend-api-key"]))
        self.assertIn("{{backend-api-key}}", bodies["file:policy/apis/orders"].xml)
        for ref, body in bodies.items():
            if ref.startswith("file:policy/"):
                self.assertEqual(ElementTree.fromstring(body.xml).tag, "policies", ref)
        self.assertEqual(translate(objects).problems, ())

    def test_fields(self) -> None:
        """Each entity's fields reach its object; states match without regard to case."""
        from gateway.model import NamedValue, PolicyScope, Product, Subscription, SubscriptionScope

        objects = parse(
            """\
            apis:
              - {name: a, path: a, serviceUrl: "http://a", subscriptionKeyParameterNames: {query: k}}
            products:
              - {name: p, apis: [a], subscriptionRequired: false, state: NotPublished}
            subscriptions:
              - {name: s, scope: /apis, primaryKey: k1, secondaryKey: k2, state: Suspended}
            namedValues:
              - {name: empty, value:}
              - {name: n, value: v, secret: true, tags: [t], displayName: N}
            policies:
              - {scope: operation, apiId: a, operationId: o, format: rawxml, xml: <policies/>}
            """
        )
        bodies = [o.body for o in objects]
        self.assertEqual(bodies[0].subscription_key_parameter_names.header,
                         "Ocp-Apim-Subscription-Key")
        self.assertEqual(bodies[0].subscription_key_parameter_names.query, "k")
        self.assertEqual(bodies[1], Product("p", "", ("a",), False, "notPublished"))
        self.assertEqual(bodies[2], Subscription("s", SubscriptionScope("all"), "k1", "k2",
                                                 "suspended"))
        self.assertEqual(bodies[3], NamedValue("empty", ""))
        self.assertEqual(bodies[4], NamedValue("n", "v", True, "N", ("t",)))
        self.assertEqual(bodies[5].scope, PolicyScope("operation", api_id="a", operation_id="o"))
        self.assertEqual((bodies[5].xml, bodies[5].format), ("<policies/>", "rawxml"))
        self.assertEqual(str(objects[5].ref), "file:policy/apis/a/operations/o")
        self.assertEqual(objects[1].modified, 7.0)

    def test_policy_xml_file(self) -> None:
        """xmlFile is read relative to base_dir through the injected reader."""
        read: list[str] = []

        def reader(path: str) -> str:
            read.append(path)
            return "<policies/>"

        [policy] = parse("policies:\n  - {scope: global, xmlFile: p/g.xml}\n",
                         base_dir="/cfg", read_file=reader)
        self.assertEqual((policy.body.xml, read), ("<policies/>", ["/cfg/p/g.xml"]))


class ManagementObjectErrorTests(SynchronousTestCase):
    """Structure errors in products, subscriptions, named values and policies, with lines."""

    def assertError(self, text: str, line: int, message: str) -> None:
        """Parsing ``text`` fails on ``line`` with exactly ``message``."""
        error = self.assertRaises(
            ConfigFileError, parse_config, textwrap.dedent(text), path="gw.yaml", modified=0.0,
            read_file=_no_file,
        )
        self.assertEqual((error.line, error.message), (line, message))

    def test_products(self) -> None:
        """An unknown state or a non-list of APIs is reported on its line."""
        self.assertError(
            "products:\n  - name: p\n    state: draft\n", 3,
            "products[0].state: must be one of published, notPublished, not 'draft'",
        )
        self.assertError(
            "products:\n  - name: p\n    apis: a\n", 3,
            "products[0].apis: must be a list, not a string",
        )
        self.assertError(
            "products:\n  - {name: p}\n  - {name: p}\n", 3, "products[1]: duplicate product name 'p'"
        )

    def test_subscriptions(self) -> None:
        """A bad scope, a missing or blank key, an unknown state are reported on their lines."""
        self.assertError(
            "subscriptions:\n  - name: s\n    primaryKey: k\n    scope: /users/u\n", 4,
            "subscriptions[0].scope: a subscription's scope must be /apis, /apis/{apiId} or "
            "/products/{productId}, not '/users/u'",
        )
        self.assertError(
            "subscriptions:\n  - name: s\n    scope: /apis\n", 2,
            "subscriptions[0]: 'primaryKey' is required",
        )
        self.assertError(
            "subscriptions:\n  - {name: s, scope: /apis, primaryKey: k, secondaryKey: ' '}\n", 2,
            "subscriptions[0].secondaryKey: must not be blank",
        )
        self.assertError(
            "subscriptions:\n  - name: s\n    scope: /apis\n    primaryKey: k\n"
            "    state: paused\n", 5,
            "subscriptions[0].state: must be one of active, suspended, submitted, rejected, "
            "cancelled, expired, not 'paused'",
        )
        self.assertError(
            "subscriptions:\n  - {name: s, scope: /apis, primaryKey: 1234}\n", 2,
            "subscriptions[0].primaryKey: must be a string, not a number (quote it)",
        )

    def test_named_values(self) -> None:
        """A missing value or a non-boolean secret is reported on its line."""
        self.assertError("namedValues:\n  - name: n\n", 2, "namedValues[0]: 'value' is required")
        self.assertError(
            "namedValues:\n  - name: n\n    value: v\n    secret: 'yes'\n", 4,
            "namedValues[0].secret: must be true or false, not a string",
        )

    def test_policies(self) -> None:
        """Scope, target ids and the document are checked, each on its line."""
        self.assertError("policies:\n  - xml: <policies/>\n", 2, "policies[0]: 'scope' is required")
        self.assertError(
            "policies:\n  - scope: tenant\n    xml: <policies/>\n", 2,
            "policies[0].scope: must be one of global, product, api, operation, not 'tenant'",
        )
        self.assertError(
            "policies:\n  - scope: operation\n    apiId: a\n    xml: <policies/>\n", 2,
            "policies[0]: 'operationId' is required at operation scope",
        )
        self.assertError(
            "policies:\n  - scope: api\n    apiId: a\n    productId: p\n    xml: x\n", 4,
            "policies[0].productId: does not apply at api scope",
        )
        self.assertError(
            "policies:\n  - scope: global\n", 2, "policies[0]: 'xml' or 'xmlFile' is required"
        )
        self.assertError(
            "policies:\n  - scope: global\n    xml: x\n    xmlFile: g.xml\n", 4,
            "policies[0]: give either 'xml' or 'xmlFile', not both",
        )
        self.assertError(
            "policies:\n  - scope: global\n    xml: x\n    format: xml-link\n", 4,
            "policies[0].format: must be one of xml, rawxml, not 'xml-link'",
        )
        self.assertError(
            "policies:\n  - {scope: api, apiId: a, xml: x}\n  - {scope: API, apiId: a, xml: y}\n",
            3, "policies[1]: duplicate policy for scope 'apis/a'",
        )
        self.assertError(
            "policies:\n  - scope: global\n    xmlFile: gone.xml\n", 3,
            "policies[0].xmlFile: cannot read 'gone.xml': [Errno 2] No such file",
        )

    def test_key_names(self) -> None:
        """An API's subscriptionKeyParameterNames takes header and query only, not blank."""
        api = "apis:\n  - name: a\n    path: a\n    serviceUrl: http://a\n"
        self.assertError(
            api + "    subscriptionKeyParameterNames:\n      cookie: k\n", 6,
            "apis[0].subscriptionKeyParameterNames: unknown key 'cookie' (expected one of: "
            "header, query)",
        )
        self.assertError(
            api + "    subscriptionKeyParameterNames: {header: ''}\n", 5,
            "apis[0].subscriptionKeyParameterNames.header: must not be blank",
        )

    def test_key_names_that_never_match(self) -> None:
        """
        A key name no request could carry is refused on its line, by the
        rules the configuration service and the cloud decoder share: a
        header that is not an HTTP token (a space, a colon, a character
        outside ASCII; one outside Latin-1 could not even be encoded), a
        query name the gateway could not find as ``name=`` in a raw query
        (``&``, ``=``, ``+``, a space, a character needing
        percent-encoding), and a name over 100 characters.
        """
        api = "apis:\n  - name: a\n    path: a\n    serviceUrl: http://a\n"
        header = "must be an HTTP header name (letters, digits and !#$%&'*+.^_`|~-), not "
        query = ("must be letters, digits, '.', '_', '~' or '-' (a query parameter name the "
                 "gateway can find as written), not ")
        for part, name, rule in [
            ("header", "X Key", header),
            ("header", "X-Key:", header),
            ("header", "X-Kéy", header),
            ("header", "\u2603", header),
            ("query", "a&b", query),
            ("query", "a=b", query),
            ("query", "a+b", query),
            ("query", "my key", query),
            ("query", "schlüssel", query),
        ]:
            self.assertError(
                api + f"    subscriptionKeyParameterNames:\n      {part}: \"{name}\"\n", 6,
                f"apis[0].subscriptionKeyParameterNames.{part}: {rule}{name!r}",
            )
        self.assertError(
            api + "    subscriptionKeyParameterNames:\n      query: k\n      header: " + "X" * 101
            + "\n", 7,
            "apis[0].subscriptionKeyParameterNames.header: must be at most 100 characters",
        )

    def test_key_names_accepted(self) -> None:
        """Any HTTP token is a header name, and unreserved characters a query name."""
        objects = parse(
            """\
            apis:
              - name: a
                path: a
                serviceUrl: http://a
                subscriptionKeyParameterNames: {header: "X_Key.v2~!#$%&'*+^`|", query: a.b_c~d-9}
            """
        )
        names = objects[0].body.subscription_key_parameter_names
        self.assertEqual((names.header, names.query), ("X_Key.v2~!#$%&'*+^`|", "a.b_c~d-9"))


def _no_file(path: str) -> str:
    raise FileNotFoundError(2, "No such file")
