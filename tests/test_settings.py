"""Tests for the typed settings of :mod:`gateway.settings`."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.settings import (
    SETTINGS,
    CloudSettings,
    GatewayApiSourceSettings,
    GatewaySettings,
    IngressSourceSettings,
    SettingError,
)


class GatewaySettingsTests(SynchronousTestCase):
    """Raw strings become one typed, validated settings object."""

    def test_defaults(self) -> None:
        """With nothing set, the documented defaults apply and the optional sources are off."""
        settings = GatewaySettings.parse({})
        self.assertEqual(
            (settings.listen.http, settings.listen.https, settings.listen.https_redirect_port),
            ("tcp:8080", "tcp:8081", 443),
        )
        self.assertEqual((settings.proxy.grace, settings.proxy.max_body), (30.0, 100 * 1024 * 1024))
        self.assertEqual((settings.cloud, settings.ingress, settings.gateway_api), (None, None, None))

    def test_every_default_parses(self) -> None:
        """Each setting's own default is a valid value for it."""
        values = {s.name: s.default for s in SETTINGS if s.default is not None}
        values.update({"config.service.endpoint": "https://cfg", "config.service.auth": "f"})
        values["k8s.ingress.enabled"] = "true"
        values["k8s.gateway.enabled"] = "true"
        settings = GatewaySettings.parse(values)
        self.assertIsInstance(settings.cloud, CloudSettings)
        self.assertIsInstance(settings.ingress, IngressSourceSettings)
        self.assertIsInstance(settings.gateway_api, GatewayApiSourceSettings)

    def test_errors_name_the_setting(self) -> None:
        """An unusable value is refused with the setting's dotted name in the message."""
        cases = {
            "gateway.shutdown.grace": "soon",
            "gateway.backend.max-idle": "-1",
            "gateway.errors.mode": "teapot",
            "net.server.tls.min-version": "1.1",
            "telemetry.logs.std": "xml",
            "gateway.https.redirect-port": "0",
            "gateway.listen.https": "ssl:8443:privateKey=k",
            "gateway.http1.server": "nginx",
            "net.server.header-timeout": "0",
            "net.server.max-target": "lots",
            "rate-limit.redis.url": "http://redis:6379",
            "rate-limit.redis.timeout": "0",
        }
        for name, value in cases.items():
            with self.assertRaises(SettingError) as caught:
                GatewaySettings.parse({name: value})
            self.assertIn(name, str(caught.exception))

    def test_http1_limits(self) -> None:
        """The strict server's limits come from net.server.* (shell-safe names too)."""
        proxy = GatewaySettings.parse({"net.server.header-timeout": "10", "net.server.max-header-bytes": "4096"}).proxy
        self.assertEqual((proxy.header_timeout, proxy.max_header_bytes, proxy.keepalive_timeout),
                         (10.0, 4096, 75.0))

    def test_cloud_needs_auth_and_a_positive_heartbeat(self) -> None:
        """An endpoint without a token, or a zero heartbeat interval, is refused."""
        with self.assertRaises(SettingError):
            GatewaySettings.parse({"config.service.endpoint": "https://cfg"})
        with self.assertRaises(SettingError):
            GatewaySettings.parse(
                {
                    "config.service.endpoint": "https://cfg",
                    "config.service.auth": "f",
                    "config.service.heartbeat-interval": "0",
                }
            )

    def test_ingress_settings(self) -> None:
        """Ingress: an empty namespace means all, addresses split on commas, publish-service checked."""
        settings = GatewaySettings.parse(
            {
                "k8s.ingress.enabled": "yes",
                "k8s.ingress.namespace": "",
                "k8s.ingress.publish-address": " 10.0.0.1, ,lb.example.com",
            }
        ).ingress
        assert settings is not None
        self.assertEqual(settings.namespace, None)
        self.assertEqual(settings.publish_addresses, ("10.0.0.1", "lb.example.com"))
        with self.assertRaises(SettingError):
            GatewaySettings.parse({"k8s.ingress.enabled": "true", "k8s.ingress.publish-service": "x"})

    def test_gateway_api_defaults(self) -> None:
        """
        Gateway API on with nothing else set: our controller name, all
        namespaces, its own Lease, and the Ingress source's DNS suffix.
        """
        settings = GatewaySettings.parse({"k8s.gateway.enabled": "true"}).gateway_api
        self.assertEqual(
            settings,
            GatewayApiSourceSettings(
                controller="apimgw.io/gateway-controller",
                namespace=None,
                dns_suffix="svc.cluster.local",
                config_path=None,
                election_id="apimgw-gateway-api",
            ),
        )

    def test_gateway_api_settings(self) -> None:
        """
        Each k8s.gateway.* setting reaches its field; an empty election id
        means no election; the kubeconfig falls back to the Ingress
        source's, and the DNS suffix is the Ingress source's.
        """
        settings = GatewaySettings.parse(
            {
                "k8s.gateway.enabled": "yes",
                "k8s.gateway.controller": "example.com/gw",
                "k8s.gateway.namespace": "infra",
                "k8s.gateway.election-id": "",
                "k8s.ingress.config.path": "/etc/kube/config",
                "k8s.ingress.dns.suffix": "cluster.example",
            }
        ).gateway_api
        assert settings is not None
        self.assertEqual(
            (settings.controller, settings.namespace, settings.election_id),
            ("example.com/gw", "infra", None),
        )
        self.assertEqual(
            (settings.config_path, settings.dns_suffix), ("/etc/kube/config", "cluster.example")
        )
        own = GatewaySettings.parse(
            {
                "k8s.gateway.enabled": "true",
                "k8s.gateway.config.path": "/gw.kubeconfig",
                "k8s.ingress.config.path": "/ingress.kubeconfig",
            }
        ).gateway_api
        assert own is not None
        self.assertEqual(own.config_path, "/gw.kubeconfig")
        self.assertFalse(own.allow_external_name)
        allowed = GatewaySettings.parse(
            {"k8s.gateway.enabled": "true", "k8s.gateway.allow-external-name": "true"}
        ).gateway_api
        assert allowed is not None
        self.assertTrue(allowed.allow_external_name)
        self.assertEqual((own.http_port, own.https_port), (80, 443))
        ports = GatewaySettings.parse(
            {"k8s.gateway.enabled": "true", "k8s.gateway.http-port": "8080",
             "k8s.gateway.https-port": "8443"}
        ).gateway_api
        assert ports is not None
        self.assertEqual((ports.http_port, ports.https_port), (8080, 8443))
        with self.assertRaises(SettingError):
            GatewaySettings.parse({"k8s.gateway.enabled": "true", "k8s.gateway.http-port": "0"})

    def test_gateway_api_off_ignores_its_settings(self) -> None:
        """Not enabled: no Gateway API settings, and an unusable controller is not even read."""
        settings = GatewaySettings.parse({"k8s.gateway.controller": "nope"})
        self.assertIsNone(settings.gateway_api)

    def test_gateway_api_controller_must_be_a_controller_name(self) -> None:
        """A controller name no GatewayClass could carry (not a domain-prefixed path) is refused, named."""
        for bad in ("nope", "/gateway", "Example.com/gw", "example.com/"):
            with self.assertRaises(SettingError) as caught:
                GatewaySettings.parse({"k8s.gateway.enabled": "true", "k8s.gateway.controller": bad})
            self.assertIn("k8s.gateway.controller", str(caught.exception))

    def test_redirect_to_the_listener_port(self) -> None:
        """``listener`` makes redirects name the HTTPS listener's own port."""
        settings = GatewaySettings.parse({"gateway.https.redirect-port": "listener"})
        self.assertIsNone(settings.listen.https_redirect_port)


class WorkersSettingTests(SynchronousTestCase):
    def test_workers(self) -> None:
        """gateway.workers: auto by default (None: the composition counts the CPUs), a count, or auto."""
        self.assertIsNone(GatewaySettings.parse({}).workers)
        self.assertEqual(GatewaySettings.parse({"gateway.workers": "3"}).workers, 3)
        self.assertEqual(GatewaySettings.parse({"gateway.workers": "0"}).workers, 0)
        self.assertIsNone(GatewaySettings.parse({"gateway.workers": "auto"}).workers)
        self.assertIsNone(GatewaySettings.parse({"gateway.workers": "AUTO"}).workers)

    def test_bad_workers_refused(self) -> None:
        """A negative count, a word other than auto, or an absurd count is refused by name."""
        for value in ("-1", "many", "1000"):
            e = self.assertRaises(SettingError, GatewaySettings.parse, {"gateway.workers": value})
            self.assertIn("gateway.workers", str(e))
