"""Tests for the typed settings of :mod:`gateway.settings`."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.settings import (
    SETTINGS,
    CloudSettings,
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
        self.assertEqual((settings.cloud, settings.ingress), (None, None))

    def test_every_default_parses(self) -> None:
        """Each setting's own default is a valid value for it."""
        values = {s.name: s.default for s in SETTINGS if s.default is not None}
        values.update({"config.service.endpoint": "https://cfg", "config.service.auth": "f"})
        values["k8s.ingress.enabled"] = "true"
        settings = GatewaySettings.parse(values)
        self.assertIsInstance(settings.cloud, CloudSettings)
        self.assertIsInstance(settings.ingress, IngressSourceSettings)

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

    def test_redirect_to_the_listener_port(self) -> None:
        """``listener`` makes redirects name the HTTPS listener's own port."""
        settings = GatewaySettings.parse({"gateway.https.redirect-port": "listener"})
        self.assertIsNone(settings.listen.https_redirect_port)
