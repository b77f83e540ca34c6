"""
Tests for the Kubernetes manifests in ``k8s/`` and their agreement with the
``Dockerfile`` and the gateway's settings.

These read the YAML files as they are shipped; they need no cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gateway.settings import SETTINGS

_REPO = Path(__file__).resolve().parent.parent
_K8S = _REPO / "k8s"
_STATUS_PATH = "/status-0123456789abcdef"


def _documents(name: str) -> list[dict[str, Any]]:
    with open(_K8S / name) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _one(name: str, kind: str, metadata_name: str) -> dict[str, Any]:
    found = [
        doc
        for doc in _documents(name)
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == metadata_name
    ]
    if len(found) != 1:
        raise AssertionError(f"{name}: expected one {kind} {metadata_name}, found {len(found)}")
    return found[0]


def _deployment() -> dict[str, Any]:
    return _one("deployment.yaml", "Deployment", "apimgw")


def _container() -> dict[str, Any]:
    containers = _deployment()["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "apimgw"]
    return container


def _port_number(port: int | str) -> int:
    """
    A port as a probe or Service names it (a number or a container port
    name), as a number.
    """
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in _container()["ports"] if p["name"] == port]
    return number


def _env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container().get("env", []) if "value" in e}


def _dockerfile_instructions(word: str) -> list[str]:
    lines = (_REPO / "Dockerfile").read_text().splitlines()
    return [
        line.split(None, 1)[1].strip()
        for line in lines
        if line.strip() and line.split(None, 1)[0].upper() == word and " " in line.strip()
    ]


class ManifestFilesTests(SynchronousTestCase):
    """
    The files themselves.
    """

    def test_everyFileParses(self) -> None:
        """
        Every YAML file in ``k8s/`` parses, and every document in it names
        its apiVersion, kind and (except the Kustomization) metadata.name.
        """
        names = sorted(p.name for p in _K8S.glob("*.yaml"))
        self.assertIn("deployment.yaml", names)
        for name in names:
            for doc in _documents(name):
                self.assertTrue(doc.get("apiVersion"), name)
                self.assertTrue(doc.get("kind"), name)
                if doc["kind"] != "Kustomization":
                    self.assertTrue(doc.get("metadata", {}).get("name"), name)

    def test_kustomizationListsEveryManifest(self) -> None:
        """
        The kustomization lists each manifest file of ``k8s/`` exactly once,
        and only files that exist.
        """
        (kustomization,) = _documents("kustomization.yaml")
        resources = kustomization["resources"]
        self.assertEqual(len(resources), len(set(resources)))
        expected = {p.name for p in _K8S.glob("*.yaml")} - {"kustomization.yaml"}
        self.assertEqual(set(resources), expected)


class DeploymentTests(SynchronousTestCase):
    """
    The Deployment: replicas, rollout, probes, shutdown, resources, security.
    """

    def test_replicasAndRollout(self) -> None:
        """
        Two replicas roll out one surge pod at a time and never fewer than
        two serve (maxUnavailable 0, maxSurge 1).
        """
        spec = _deployment()["spec"]
        self.assertEqual(spec["replicas"], 2)
        self.assertEqual(spec["strategy"]["type"], "RollingUpdate")
        self.assertEqual(spec["strategy"]["rollingUpdate"], {"maxUnavailable": 0, "maxSurge": 1})

    def test_selectorMatchesPodLabels(self) -> None:
        """
        The Deployment's selector matches the labels of its pod template.
        """
        spec = _deployment()["spec"]
        labels = spec["template"]["metadata"]["labels"]
        for key, value in spec["selector"]["matchLabels"].items():
            self.assertEqual(labels.get(key), value)

    def test_probesUseTheStatusPath(self) -> None:
        """
        Readiness, liveness and startup probes GET the status path on the
        HTTP port, 8080.
        """
        container = _container()
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            get = container[probe]["httpGet"]
            self.assertEqual(get["path"], _STATUS_PATH, probe)
            self.assertEqual(_port_number(get["port"]), 8080, probe)

    def test_gracePeriodCoversDrainDelayAndGrace(self) -> None:
        """
        The pod's termination grace period is at least the gateway's drain
        delay plus its grace period (5 + 30 s), so the kubelet's SIGKILL
        never cuts a drain short.
        """
        env = _env()
        delay = float(env["GATEWAY_SHUTDOWN_DELAY"])
        grace = float(env["GATEWAY_SHUTDOWN_GRACE"])
        self.assertEqual((delay, grace), (5.0, 30.0))
        period = _deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        self.assertEqual(period, 60)
        self.assertGreaterEqual(period, delay + grace)

    def test_noPreStopSleep(self) -> None:
        """
        The container has no preStop hook: the gateway's drain delay keeps
        it accepting while the endpoints drop it.
        """
        self.assertNotIn("preStop", _container().get("lifecycle", {}))

    def test_ports(self) -> None:
        """
        The container declares http 8080, https 8081 and admin 8082.
        """
        ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
        self.assertEqual(ports, {"http": 8080, "https": 8081, "admin": 8082})

    def test_resources(self) -> None:
        """
        The container requests two CPUs and 2 GiB of memory.
        """
        requests = _container()["resources"]["requests"]
        self.assertEqual(str(requests["cpu"]), "2")
        self.assertEqual(requests["memory"], "2Gi")

    def test_runsAsNonRoot(self) -> None:
        """
        The pod and the container run as a non-root uid, without privilege
        escalation, on a read-only root filesystem with a writable /tmp.
        """
        pod = _deployment()["spec"]["template"]["spec"]
        self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
        self.assertGreater(pod["securityContext"]["runAsUser"], 0)
        container = _container()["securityContext"]
        self.assertIs(container["runAsNonRoot"], True)
        self.assertIs(container["allowPrivilegeEscalation"], False)
        self.assertIs(container["readOnlyRootFilesystem"], True)
        self.assertEqual(container["capabilities"]["drop"], ["ALL"])
        mounts = {m["mountPath"] for m in _container()["volumeMounts"]}
        self.assertIn("/tmp", mounts)

    def test_runsAsTheImageUser(self) -> None:
        """
        The pod's uid is the numeric USER of the Dockerfile, and the image
        exposes the container's ports.
        """
        (user,) = _dockerfile_instructions("USER")
        uid = int(user.split(":")[0])
        pod = _deployment()["spec"]["template"]["spec"]
        self.assertEqual(pod["securityContext"]["runAsUser"], uid)
        exposed = {int(p) for line in _dockerfile_instructions("EXPOSE") for p in line.split()}
        self.assertEqual(exposed, {p["containerPort"] for p in _container()["ports"]})
        (entrypoint,) = _dockerfile_instructions("ENTRYPOINT")
        self.assertEqual(json.loads(entrypoint), ["twistd", "-n", "--pidfile=", "apimgw"])

    def test_backupVolume(self) -> None:
        """
        ``/apim/config`` is a volume (emptyDir or a claim), and it is the
        backup path the ConfigMap sets.
        """
        pod = _deployment()["spec"]["template"]["spec"]
        (mount,) = [m for m in _container()["volumeMounts"] if m["mountPath"] == "/apim/config"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        self.assertTrue({"emptyDir", "persistentVolumeClaim"} & set(volume))
        data = _one("configmap.yaml", "ConfigMap", "apimgw-env")["data"]
        self.assertEqual(data["config.backup.path"], "/apim/config")

    def test_serviceAccountAndSettings(self) -> None:
        """
        The pod runs as the ServiceAccount ``apimgw`` and takes its settings
        from the ConfigMap ``apimgw-env``, both defined in ``k8s/``.
        """
        pod = _deployment()["spec"]["template"]["spec"]
        self.assertEqual(pod["serviceAccountName"], "apimgw")
        _one("serviceaccount.yaml", "ServiceAccount", "apimgw")
        refs = [s["configMapRef"]["name"] for s in _container()["envFrom"] if "configMapRef" in s]
        self.assertEqual(refs, ["apimgw-env"])
        _one("configmap.yaml", "ConfigMap", "apimgw-env")


class ConfigMapTests(SynchronousTestCase):
    """
    The settings ConfigMap.
    """

    def test_keysAreKnownSettingsWithTheirDefaults(self) -> None:
        """
        Every key is a dotted setting the gateway knows, every value is a
        string (the API server rejects other types) and equals that
        setting's default.
        """
        known = {s.name: s for s in SETTINGS}
        data = _one("configmap.yaml", "ConfigMap", "apimgw-env")["data"]
        self.assertIn("telemetry.logs.std", data)
        for key, value in data.items():
            self.assertIn(key, known)
            self.assertIsInstance(value, str, key)
            if known[key].default is not None:
                self.assertEqual(value, known[key].default, key)

    def test_shutdownTimesAreNotOverridden(self) -> None:
        """
        The ConfigMap leaves the shutdown delay and grace to the Deployment:
        a dotted name there would win over the Deployment's
        ``GATEWAY_SHUTDOWN_*`` and could outlast the termination grace
        period.
        """
        data = _one("configmap.yaml", "ConfigMap", "apimgw-env")["data"]
        self.assertNotIn("gateway.shutdown.grace", data)
        self.assertNotIn("gateway.shutdown.delay", data)


class ServiceTests(SynchronousTestCase):
    """
    The LoadBalancer Service and the internal admin Service.
    """

    def test_loadBalancerPorts(self) -> None:
        """
        The LoadBalancer maps 80 to the http port (8080) and 443 to the
        https port (8081), with the port names http and https.
        """
        service = _one("service.yaml", "Service", "apimgw")
        self.assertEqual(service["spec"]["type"], "LoadBalancer")
        ports = {
            p["name"]: (p["port"], _port_number(p["targetPort"]))
            for p in service["spec"]["ports"]
        }
        self.assertEqual(ports, {"http": (80, 8080), "https": (443, 8081)})

    def test_externalTrafficPolicyLocal(self) -> None:
        """
        The LoadBalancer keeps traffic on the node it arrives at
        (``externalTrafficPolicy: Local``).
        """
        service = _one("service.yaml", "Service", "apimgw")
        self.assertEqual(service["spec"]["externalTrafficPolicy"], "Local")

    def test_adminPortStaysInside(self) -> None:
        """
        The admin port is only on a ClusterIP Service, never on the
        LoadBalancer.
        """
        public = _one("service.yaml", "Service", "apimgw")
        self.assertNotIn(8082, [_port_number(p["targetPort"]) for p in public["spec"]["ports"]])
        admin = _one("service.yaml", "Service", "apimgw-admin")
        self.assertEqual(admin["spec"]["type"], "ClusterIP")
        self.assertEqual([_port_number(p["targetPort"]) for p in admin["spec"]["ports"]], [8082])

    def test_selectorsMatchThePods(self) -> None:
        """
        Both Services and the PodDisruptionBudget select the Deployment's
        pods.
        """
        labels = _deployment()["spec"]["template"]["metadata"]["labels"]
        selectors = [
            _one("service.yaml", "Service", "apimgw")["spec"]["selector"],
            _one("service.yaml", "Service", "apimgw-admin")["spec"]["selector"],
            _one("pdb.yaml", "PodDisruptionBudget", "apimgw")["spec"]["selector"]["matchLabels"],
        ]
        for selector in selectors:
            self.assertTrue(selector)
            for key, value in selector.items():
                self.assertEqual(labels.get(key), value)

