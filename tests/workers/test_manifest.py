"""The shipped Deployment's worker count: what ``auto`` cannot know there."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.test_manifests import _container


class DeploymentWorkersTests(SynchronousTestCase):
    def test_workers_follow_the_cpu_request(self) -> None:
        """
        The Deployment sets no CPU limit, so ``auto`` (the default) would
        count every CPU of the node; it sets ``GATEWAY_WORKERS`` to its own
        container's CPU request instead, through the downward API in whole
        CPUs (divisor 1, rounded up by the kubelet).
        """
        container = _container()
        self.assertNotIn("cpu", container["resources"].get("limits", {}))
        (entry,) = [e for e in container["env"] if e["name"] == "GATEWAY_WORKERS"]
        self.assertEqual(
            entry["valueFrom"]["resourceFieldRef"],
            {"containerName": container["name"], "resource": "requests.cpu", "divisor": "1"},
        )
        self.assertEqual(str(container["resources"]["requests"]["cpu"]), "2")
