"""Tests for the options of ``twistd apimgw`` and the settings environment."""

from __future__ import annotations

from typing import Any

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.settings import read_environment
from gateway.tap import Options, build_gateway


def parse(argv: list[str], environ: dict[str, str]) -> Options:
    options = Options(environ=environ)
    options.parseOptions(argv)
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        With nothing set, the listeners are tcp:8080 / tcp:8081 and the admin
        port on loopback only (tcp:8082:interface=127.0.0.1) with no token, TLS
        starts at 1.2, redirects go to port 443 and the access log is text.
        """
        o = parse([], {})
        self.assertEqual(
            (o["http"], o["https"], o["admin"], o["admin-token"]),
            ("tcp:8080", "tcp:8081", "tcp:8082:interface=127.0.0.1", ""),
        )
        self.assertEqual((o["tls-min-version"], o["https-redirect-port"]), ("1.2", "443"))
        self.assertEqual((o["access-log"], o["grace"], o["backup-path"]), ("text", 30.0, "/apim/config"))

    def test_environment_dotted_and_shell_forms(self) -> None:
        """Dotted and shell-safe names both set a setting; the dotted one wins when both are present."""
        o = parse([], {"TELEMETRY_LOGS_STD": "json", "GATEWAY_LISTEN_HTTP": "tcp:9999"})
        self.assertEqual((o["access-log"], o["http"]), ("json", "tcp:9999"))
        o = parse([], {"telemetry.logs.std": "none", "TELEMETRY_LOGS_STD": "json"})
        self.assertEqual(o["access-log"], "none")

    def test_command_line_overrides_environment(self) -> None:
        """A twistd option wins over the environment."""
        o = parse(["--http", "tcp:1"], {"GATEWAY_LISTEN_HTTP": "tcp:2"})
        self.assertEqual(o["http"], "tcp:1")

    def test_unknown_keys_reported(self) -> None:
        """Unknown keys under our prefixes are collected for a warning; unrelated variables are not."""
        _, unknown = read_environment(
            {"k8s.ingress.nope": "1", "TELEMETRY_FOO": "x", "PATH": "/bin", "HOME": "/root",
             "K8S_INGRESS_ENABLED": "true"}
        )
        self.assertEqual(sorted(unknown), ["TELEMETRY_FOO", "k8s.ingress.nope"])

    def test_invalid_values_are_usage_errors(self) -> None:
        """A bad access-log format, a non-number or a negative grace is refused with a clear message."""
        self.assertRaises(usage.UsageError, parse, [], {"TELEMETRY_LOGS_STD": "xml"})
        self.assertRaises(usage.UsageError, parse, ["--grace", "soon"], {})
        self.assertRaises(usage.UsageError, parse, ["--grace", "-1"], {})
        self.assertRaises(usage.UsageError, parse, ["--error-mode", "teapot"], {})

    def test_https_can_be_turned_off(self) -> None:
        """An empty --https (or gateway.listen.https) means no HTTPS listener."""
        self.assertEqual(parse(["--https", ""], {})["https"], "")
        self.assertEqual(parse([], {"GATEWAY_LISTEN_HTTPS": ""})["https"], "")

    def test_tls_settings(self) -> None:
        """
        net.server.tls.min-version takes 1.2 or 1.3; an ssl: listener, another
        TLS version or a bad redirect port is refused with a usage error.
        """
        self.assertEqual(parse([], {"net.server.tls.min-version": "1.3"})["tls-min-version"], "1.3")
        self.assertEqual(parse([], {"NET_SERVER_TLS_MIN_VERSION": "1.3"})["tls-min-version"], "1.3")
        self.assertRaises(usage.UsageError, parse, ["--tls-min-version", "1.1"], {})
        self.assertRaises(usage.UsageError, parse, ["--https", "ssl:8443:privateKey=k"], {})
        self.assertRaises(usage.UsageError, parse, ["--https-redirect-port", "0"], {})
        self.assertRaises(usage.UsageError, parse, ["--https-redirect-port", "https"], {})
        self.assertEqual(
            parse(["--https-redirect-port", "listener"], {})["https-redirect-port"], "listener"
        )


class IngressWiringTests(SynchronousTestCase):
    """How ``k8s.ingress.*`` settings turn into the Ingress source."""

    def _build(self, **environ: str) -> Any:
        from twisted.internet.task import Clock

        options = parse([], {"k8s.ingress.enabled": "true", **environ})
        return build_gateway(options, Clock())

    def test_ingress_replaces_the_default_echo(self) -> None:
        """With Ingress on and no other source, there is no built-in Echo API, and readiness waits for it."""
        from gateway.echo import EchoBackend

        gateway = self._build()
        self.assertIsNotNone(gateway.ingress)
        self.assertFalse(any(isinstance(child, EchoBackend) for child in gateway))
        self.assertEqual(gateway.ingress.namespace, "default")
        self.assertIn("kubernetes ingress", gateway.health.waiting)

    def test_settings_reach_the_source(self) -> None:
        gateway = self._build(
            **{
                "k8s.ingress.namespace": "",
                "k8s.ingress.class": "example.com/gw",
                "k8s.ingress.backend": "endpoints",
                "k8s.ingress.election-id": "",
            }
        )
        source = gateway.ingress
        self.assertIsNone(source.namespace)
        self.assertEqual(source.settings.ingress_class, "example.com/gw")
        self.assertEqual(source.settings.backend_mode, "endpoints")
        self.assertIsNone(source._election_id)

    def test_invalid_settings_are_usage_errors(self) -> None:
        from twisted.python.usage import UsageError

        with self.assertRaises(UsageError) as backend:
            self._build(**{"k8s.ingress.backend": "nodeport"})
        self.assertIn("k8s.ingress.backend", str(backend.exception))
        with self.assertRaises(UsageError) as publish:
            self._build(**{"k8s.ingress.publish-service": "apimgw"})
        self.assertIn("namespace/name", str(publish.exception))


class GatewayApiWiringTests(SynchronousTestCase):
    """How ``k8s.gateway.*`` settings turn into the Gateway API source."""

    def _build(self, **environ: str) -> Any:
        from twisted.internet.task import Clock

        options = parse([], {"k8s.gateway.enabled": "true", **environ})
        return build_gateway(options, Clock())

    def test_gateway_api_alone_replaces_the_default_echo(self) -> None:
        """
        Alone, it is the only source: no built-in Echo API, and readiness
        waits for its first resolution (``when_synced`` only fires then).
        """
        from gateway.echo import EchoBackend
        from gateway.sources.gatewayapi import WAITING

        gateway = self._build()
        source = gateway.gateway_api
        self.assertIsNotNone(source)
        self.assertIsNone(gateway.ingress)
        self.assertFalse(any(isinstance(child, EchoBackend) for child in gateway))
        self.assertIn(source, list(gateway))
        self.assertIn(WAITING, gateway.health.waiting)
        self.assertTrue(source._require_configuration)

    def test_settings_reach_the_source(self) -> None:
        gateway = self._build(
            **{
                "k8s.gateway.controller": "example.com/gw",
                "k8s.gateway.namespace": "infra",
                "k8s.gateway.election-id": "",
                "k8s.gateway.config.path": "/kubeconfig",
                "k8s.ingress.dns.suffix": "cluster.example",
                "k8s.gateway.allow-external-name": "true",
            }
        )
        source = gateway.gateway_api
        self.assertEqual(
            (source.controller_name, source.namespace, source._election_id, source._config_path),
            ("example.com/gw", "infra", None, "/kubeconfig"),
        )
        self.assertEqual(source.settings.dns_suffix, "cluster.example")
        self.assertTrue(source.settings.allow_external_name)
        self.assertFalse(self._build().gateway_api.settings.allow_external_name)

    def test_beside_ingress_neither_holds_the_other_back(self) -> None:
        """With Ingress on too, both sources run, each with its own Lease, neither required alone."""
        gateway = self._build(**{"k8s.ingress.enabled": "true"})
        self.assertIsNotNone(gateway.ingress)
        self.assertIsNotNone(gateway.gateway_api)
        self.assertFalse(gateway.gateway_api._require_configuration)
        self.assertFalse(gateway.ingress._require_configuration)
        self.assertEqual(
            (gateway.gateway_api._election_id, gateway.ingress._election_id),
            ("apimgw-gateway-api", "apimgw-leader"),
        )

    def test_off_by_default(self) -> None:
        from twisted.internet.task import Clock

        gateway = build_gateway(parse([], {}), Clock())
        self.assertIsNone(gateway.gateway_api)

    def test_invalid_controller_is_a_usage_error(self) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            self._build(**{"k8s.gateway.controller": "not-a-controller"})
        self.assertIn("k8s.gateway.controller", str(caught.exception))


class CloudWiringTests(SynchronousTestCase):
    """How ``config.service.*`` and ``config.backup.*`` settings turn into the cloud source."""

    def _build(self, **environ: str) -> Any:
        from twisted.internet.task import Clock

        token = "GatewayKey gw&203001010000&" + "A" * 86 + "=="
        options = parse(
            [],
            {
                "config.service.endpoint": "https://config.example.com",
                "config.service.auth": token,
                "config.backup.path": "",
                **environ,
            },
        )
        return build_gateway(options, Clock())

    def test_cloud_replaces_the_default_echo(self) -> None:
        """With the configuration service set, the cloud source runs and no built-in Echo API does."""
        from gateway.echo import EchoBackend

        gateway = self._build()
        self.assertIsNotNone(gateway.cloud)
        self.assertFalse(any(isinstance(child, EchoBackend) for child in gateway))

    def test_backup_key_and_ca_reach_the_source(self) -> None:
        """A CA without a certificate and a too-short backup key are refused as usage errors, naming what is wrong."""
        with self.assertRaises(usage.UsageError) as ca:
            self._build(**{"config.service.ca": "/nonexistent/ca.pem"})
        self.assertIn("CA", str(ca.exception))
        with self.assertRaises(usage.UsageError) as key:
            self._build(**{"config.backup.key": "short"})
        self.assertIn("config.backup.key", str(key.exception))
        self.assertIsNotNone(self._build(**{"config.backup.key": "k" * 32}).cloud)


class TrafficWiringTests(SynchronousTestCase):
    """How the traffic settings reach the listeners."""

    def test_strict_server_gets_its_limits(self) -> None:
        """The plain listener's strict HTTP/1.1 server is built with the net.server.* limits."""
        from twisted.internet.task import Clock

        from gateway.proxy import H2CServer

        options = parse([], {"NET_SERVER_MAX_TARGET": "100", "net.server.keepalive-timeout": "5"})
        server = build_gateway(options, Clock()).listeners["http"].site
        # HTTP/1.1 by the strict server, HTTP/2 with prior knowledge beside it.
        self.assertIsInstance(server, H2CServer)
        limits = server.h1.limits
        self.assertEqual((limits.max_target, limits.keepalive_timeout), (100, 5.0))

    def test_twisted_server_on_request(self) -> None:
        """gateway.http1.server: twisted brings back twisted.web on the plain listener."""
        from twisted.internet.task import Clock

        from gateway.proxy import GatewaySite

        options = parse([], {"gateway.http1.server": "twisted"})
        gateway = build_gateway(options, Clock())
        self.assertIsInstance(gateway.listeners["http"].site, GatewaySite)
        self.assertIsInstance(gateway.listeners["https"].site, GatewaySite)

    def test_https_listener_switches_by_alpn(self) -> None:
        """
        The HTTPS listener's connections go to the strict HTTP/1.1 server
        (with the same net.server.* limits) unless ALPN chose h2.
        """
        from twisted.internet.task import Clock

        from gateway.proxy import ALPNServer

        options = parse([], {"NET_SERVER_MAX_TARGET": "100"})
        server = build_gateway(options, Clock()).listeners["https"].site
        self.assertIsInstance(server, ALPNServer)
        self.assertEqual(server.h1.limits.max_target, 100)


class GatewayApiServingTests(TestCase):
    """
    A gateway whose only source is the Gateway API, in this process, on
    loopback: a fake API server, one backend reached through an
    ``ExternalName`` Service naming 127.0.0.1 (no cluster DNS needed).
    """

    async def test_serves_only_its_routes(self) -> None:
        """
        The HTTPRoute's path reaches the backend; anything else is the
        gateway's 404 (no built-in Echo API beside it); /readyz is 200
        once the first resolution is live.
        """
        import os

        import treq
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        from gateway.testing.fakekube import FakeKubeServer
        from gateway.testing.waiting import wait_for

        class Backend(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                return b"backend " + request.path

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(Backend()))
        self.addCleanup(port.stopListening)
        kube = FakeKubeServer(reactor=reactor, bookmark_interval=0.5)
        await kube.start()
        self.addCleanup(kube.stop)
        api = "gateway.networking.k8s.io/v1"
        for obj in (
            {
                "apiVersion": api,
                "kind": "GatewayClass",
                "metadata": {"name": "apimgw"},
                "spec": {"controllerName": "apimgw.io/gateway-controller"},
            },
            {
                "apiVersion": api,
                "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "default"},
                "spec": {
                    "gatewayClassName": "apimgw",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "backend", "namespace": "default"},
                "spec": {
                    "type": "ExternalName",
                    "externalName": "127.0.0.1",
                    "ports": [{"port": port.getHost().port}],
                },
            },
            {
                "apiVersion": api,
                "kind": "HTTPRoute",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "parentRefs": [{"name": "gw"}],
                    "hostnames": ["www.example.com"],
                    "rules": [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": "/app"}}],
                            "backendRefs": [{"name": "backend", "port": port.getHost().port}],
                        }
                    ],
                },
            },
        ):
            kube.set_object(obj)
        options = parse(
            [
                "--http", "tcp:0:interface=127.0.0.1",
                "--https", "",
                "--admin", "tcp:0:interface=127.0.0.1",
                "--grace", "1",
            ],
            {
                "k8s.gateway.enabled": "true",
                "k8s.gateway.config.path": kube.kubeconfig(os.path.abspath(self.mktemp())),
                "k8s.gateway.election-id": "",
                # The backend is an ExternalName Service naming 127.0.0.1.
                "k8s.gateway.allow-external-name": "true",
                "telemetry.logs.std": "none",
            },
        )
        gateway = build_gateway(options, reactor)
        gateway.startService()
        self.addCleanup(gateway.stopService)
        await gateway.reconciler.when_live()

        from twisted.web.client import HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=False)

        def get(listener: str, path: str, host: str | None = None) -> Any:
            port = gateway.listeners[listener].port.getHost().port
            headers = {"Host": host} if host else None
            return treq.get(f"http://127.0.0.1:{port}{path}", headers=headers, pool=pool)

        await wait_for(lambda: gateway.health.ready, what="ready")
        ready = await get("admin", "/readyz")
        self.assertEqual((ready.code, await ready.content())[0], 200)
        served = await get("http", "/app/x", "www.example.com")
        self.assertEqual((served.code, await served.content()), (200, b"backend /app/x"))
        for host, path in (("www.example.com", "/echo/resource"), ("other.example.com", "/app/x")):
            missing = await get("http", path, host)
            self.assertEqual((missing.code, await missing.content())[0], 404)


class WorkersWiringTests(SynchronousTestCase):
    """``--workers``: one process as today, or a supervisor of worker processes."""

    def supervisor(self, argv: list[str], cpus: Any = None) -> Any:
        from twisted.internet.task import Clock

        gateway = build_gateway(parse(argv, {}), Clock(), cpus=cpus)
        if gateway.workers is not None:
            for group in gateway.workers.sockets.values():
                for s in group:
                    self.addCleanup(s.close)
        return gateway

    def test_one_worker_is_one_process(self) -> None:
        """
        --workers 1 and 0 compose today's single process: traffic listeners
        here, no pool; so does the default (auto) in-process, where no CPU
        count is given (tests and embedders never fork), and auto with a
        count of 1 CPU.
        """
        for argv, cpus in (
            ([], None),
            (["--workers", "auto"], None),
            ([], lambda: 1),
            (["--workers", "1"], lambda: 4),
            (["--workers", "0"], lambda: 4),
        ):
            gateway = self.supervisor(argv, cpus)
            self.assertIsNone(gateway.workers, (argv, cpus))
            self.assertEqual(sorted(gateway.listeners), ["admin", "http", "https"])

    def test_default_counts_the_cpus_given(self) -> None:
        """The default (auto) with a count of 3 CPUs (what twistd's makeService passes) is 3 workers."""
        gateway = self.supervisor(
            ["--http", "tcp:0:interface=127.0.0.1", "--https", ""], cpus=lambda: 3
        )
        self.assertEqual(len(gateway.workers.workers), 3)
        self.assertEqual(sorted(gateway.listeners), ["admin"])

    def test_two_workers_make_a_supervisor(self) -> None:
        """
        --workers 2: the supervisor keeps the sources, reconciler and admin
        port, serves no traffic itself, and holds two listening sockets per
        listener on one port for its two workers.
        """
        gateway = self.supervisor(
            ["--workers", "2", "--http", "tcp:0:interface=127.0.0.1", "--https", ""]
        )
        self.assertEqual(sorted(gateway.listeners), ["admin"])
        self.assertEqual(len(gateway.workers.workers), 2)
        (name, group), = gateway.workers.sockets.items()
        self.assertEqual(name, "http")
        self.assertEqual(len(group), 2)
        self.assertEqual(len({s.getsockname() for s in group}), 1)
        self.assertIsNotNone(gateway.reconciler)
        # The supervisor is the last service: it stops (drains its workers) first.
        self.assertIs(list(gateway)[-1], gateway.workers)

    def test_listeners_workers_cannot_share_are_refused(self) -> None:
        """With workers, a non-TCP listener is a usage error naming it."""
        e = self.assertRaises(
            usage.UsageError,
            self.supervisor,
            ["--workers", "2", "--http", "unix:/tmp/apimgw-test.sock", "--https", ""],
        )
        self.assertIn("unix:/tmp/apimgw-test.sock", str(e))
