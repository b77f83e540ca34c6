"""Tests for the address the Ingress status publisher writes."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.sources._ingressstatus import address_entries, service_addresses


class AddressTests(SynchronousTestCase):
    def test_fixed_addresses(self) -> None:
        """IPs (v4 and v6) become ip entries, names hostname entries; blanks are dropped."""
        self.assertEqual(
            address_entries(("203.0.113.7", " gw.example.com ", "", "2001:db8::1")),
            [{"ip": "203.0.113.7"}, {"hostname": "gw.example.com"}, {"ip": "2001:db8::1"}],
        )

    def test_service_load_balancer_first(self) -> None:
        """The Service's load-balancer entries win; only ip and hostname are copied."""
        svc = {
            "spec": {"clusterIP": "10.0.0.5", "externalIPs": ["192.0.2.1"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.4", "ports": [{"port": 80}]}]}},
        }
        self.assertEqual(service_addresses(svc), [{"ip": "198.51.100.4"}])

    def test_service_fallbacks(self) -> None:
        """No load balancer: external IPs, else the cluster IP (not for headless Services)."""
        self.assertEqual(
            service_addresses({"spec": {"clusterIP": "10.0.0.5", "externalIPs": ["192.0.2.1"]}}),
            [{"ip": "192.0.2.1"}],
        )
        self.assertEqual(service_addresses({"spec": {"clusterIP": "10.0.0.5"}}), [{"ip": "10.0.0.5"}])
        self.assertEqual(service_addresses({"spec": {"clusterIP": "None"}}), [])
        self.assertEqual(service_addresses(None), [])
