"""
Tests for the Kubernetes manifests in ``k8s/`` and their agreement with the
``Dockerfile`` and the gateway's settings.

These read the YAML files as they are shipped; they need no cluster (the
RBAC of the Gateway API Component is also enforced by the fake API server,
:class:`GatewayApiEnforcedTests`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.counters import parse_redis_url
from gateway.settings import SETTINGS
from gateway.sources.kubernetes import (
    GATEWAY,
    GATEWAY_CLASS,
    HTTP_ROUTE,
    LEASE,
    NAMESPACE,
    REFERENCE_GRANT,
    SECRET,
    SERVICE,
    Forbidden,
    KubeClient,
    load_kubeconfig,
)
from gateway.testing._kuberbac import Rule, rules_for_service_account
from gateway.testing.certs import self_signed
from tests.sources.kubernetes._support import start_fake
from gateway.sources.ingress import IngressInputs, IngressSettings
from gateway.sources.ingress import decode_ingresses as translate_ingresses

_REPO = Path(__file__).resolve().parent.parent
_K8S = _REPO / "k8s"
_EXAMPLES = "examples"
#: The kustomize Component that makes the gateway watch all namespaces.
_CLUSTER_WIDE = "cluster-wide"
#: The kustomize Component that adds a Redis for shared rate-limit counters.
_REDIS = "redis"
_RBAC_KINDS = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
_STATUS_PATH = "/status-0123456789abcdef"
_DEFAULTS = {s.name: s.default for s in SETTINGS}

#: Environment variables the Deployment sets that are not settings: the
#: downward API's pod name and namespace, read by leader election.
_POD_VARIABLES = {"POD_NAME", "POD_NAMESPACE"}

#: ConfigMap values that differ from the setting's default on purpose. The
#: admin port defaults to loopback; in a pod the kubelet, Prometheus and
#: the ClusterIP Service apimgw-admin reach it on the pod's address.
_CONFIGMAP_OVERRIDES = {"k8s.ingress.enabled": "true", "gateway.listen.admin": "tcp:8082"}


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


def _field_refs() -> dict[str, str]:
    """The Deployment's env entries set from the downward API: name → fieldPath."""
    return {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in _container().get("env", [])
        if "fieldRef" in e.get("valueFrom", {})
    }


def _configmap() -> dict[str, str]:
    data: dict[str, str] = _one("configmap.yaml", "ConfigMap", "apimgw-env")["data"]
    return data


def _setting_name(variable: str) -> str | None:
    """The dotted setting an environment variable sets, by either form."""
    for setting in SETTINGS:
        if variable in (setting.name, setting.shell_name):
            return setting.name
    return None


def _kustomization_resources() -> list[str]:
    (kustomization,) = _documents("kustomization.yaml")
    resources: list[str] = kustomization["resources"]
    return resources


def _shipped() -> list[dict[str, Any]]:
    """Every object the kustomization deploys."""
    return [doc for name in _kustomization_resources() for doc in _documents(name)]


def _grants(rules: Iterable[dict[str, Any]]) -> set[tuple[str, str, str, str | None]]:
    """
    The permissions of RBAC rules, one ``(apiGroup, resource, verb,
    resourceName)`` per combination; ``None`` when the rule names no
    resources (any name). A wildcard stays ``"*"``, so it never equals an
    expected grant.
    """
    grants: set[tuple[str, str, str, str | None]] = set()
    for rule in rules:
        names: list[str | None] = list(rule.get("resourceNames") or [None])
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in names:
                        grants.add((group, resource, verb, name))
    return grants


def _read_grants(group: str, resource: str) -> set[tuple[str, str, str, str | None]]:
    return {(group, resource, verb, None) for verb in ("get", "list", "watch")}


def _cluster_wide_kustomization() -> dict[str, Any]:
    (kustomization,) = _documents(f"{_CLUSTER_WIDE}/kustomization.yaml")
    return kustomization


def _cluster_wide_patches() -> list[dict[str, Any]]:
    """
    The patch documents of the cluster-wide Component, in order. Only
    patches given by ``path`` (strategic merge patches naming their target
    by kind and name) are understood here: anything else fails, so that
    :func:`cluster_wide_rbac_documents` never misreads the Component.
    """
    patches = []
    for entry in _cluster_wide_kustomization().get("patches") or []:
        if set(entry) != {"path"}:
            raise AssertionError(f"{_CLUSTER_WIDE}: unsupported patch entry {entry!r}")
        (patch,) = _documents(f"{_CLUSTER_WIDE}/{entry['path']}")
        patches.append(patch)
    return patches


def _merge(base: Any, patch: Any) -> Any:
    """
    A strategic merge patch of RBAC objects: maps merge key by key, ``null``
    deletes a key, lists are replaced (``rules``, ``subjects``,
    ``apiGroups``, ... have no merge key). ``$patch`` directives are not
    understood and fail.
    """
    if not (isinstance(base, dict) and isinstance(patch, dict)):
        return patch
    if any(key.startswith("$") for key in patch):
        raise AssertionError(f"unsupported patch directive in {patch!r}")
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(base.get(key), value)
    return merged


def rbac_documents() -> list[dict[str, Any]]:
    """The RBAC objects the base kustomization (``k8s/``) deploys."""
    return [d for d in _shipped() if d["kind"] in _RBAC_KINDS]


def cluster_wide_rbac_documents() -> list[dict[str, Any]]:
    """
    The RBAC objects deployed by ``k8s/`` with the cluster-wide Component
    (``k8s/cluster-wide/``), composed as kustomize composes them, without
    kustomize: the base's RBAC objects, then the Component's resources, then
    its patches applied to the object of the same kind and name. (Where
    kubectl is installed, :class:`ClusterWideBuildTests` checks that this
    equals kustomize's own output.)
    """
    documents = rbac_documents()
    for name in _cluster_wide_kustomization()["resources"]:
        documents.extend(
            d for d in _documents(f"{_CLUSTER_WIDE}/{name}") if d["kind"] in _RBAC_KINDS
        )
    for patch in _cluster_wide_patches():
        if patch["kind"] not in _RBAC_KINDS:
            continue
        key = (patch["kind"], patch["metadata"]["name"])
        targets = [i for i, d in enumerate(documents) if (d["kind"], d["metadata"]["name"]) == key]
        if len(targets) != 1:
            raise AssertionError(f"patch {key}: {len(targets)} targets")
        documents[targets[0]] = _merge(documents[targets[0]], patch)
    return documents


def _scoped_grants(rules: Iterable[Rule]) -> set[tuple[str, str, str, str, str | None]]:
    """
    What rules (as the fake API server enforces them) allow, one ``(apiGroup,
    resource, verb, scope, resourceName)`` per combination: ``scope`` is the
    namespace of a Role's rule or ``"cluster"`` (every namespace, and
    cluster-scoped resources); ``resourceName`` ``None``: any name.
    """
    return {
        (group, resource, verb, rule.namespace or "cluster", name)
        for rule in rules
        for group in rule.api_groups
        for resource in rule.resources
        for verb in rule.verbs
        for name in (sorted(rule.resource_names) or [None])
    }


def _example_ingresses() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted((_K8S / _EXAMPLES).glob("*.yaml"))
        for doc in _documents(f"{_EXAMPLES}/{path.name}")
        if doc["kind"] == "Ingress"
    ]


def _backends(ingress: dict[str, Any]) -> list[dict[str, Any]]:
    """Every backend of an Ingress: the default one and those of its rules."""
    spec = ingress["spec"]
    found = [spec["defaultBackend"]] if "defaultBackend" in spec else []
    for rule in spec.get("rules", []):
        found.extend(path["backend"] for path in rule.get("http", {}).get("paths", []))
    return found


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

    def test_kustomizationResourcesExistAndParse(self) -> None:
        """
        Every resource the kustomization lists is a file of ``k8s/`` that
        holds at least one named object, among them the RBAC and the
        IngressClass of the Ingress source.
        """
        resources = _kustomization_resources()
        self.assertIn("rbac.yaml", resources)
        self.assertIn("ingressclass.yaml", resources)
        for name in resources:
            self.assertTrue((_K8S / name).is_file(), name)
            documents = _documents(name)
            self.assertTrue(documents, name)
            for doc in documents:
                self.assertTrue(doc.get("apiVersion"), name)
                self.assertTrue(doc.get("kind"), name)
                self.assertTrue(doc.get("metadata", {}).get("name"), name)

    def test_noNamespaceIsHardCoded(self) -> None:
        """
        No shipped object names a namespace: they go to the current one, or
        to the kustomization's ``namespace:``. (The ClusterRoleBinding's
        subject must name one; see :class:`RbacTests`.)
        """
        for doc in _shipped():
            self.assertNotIn("namespace", doc["metadata"], doc["metadata"]["name"])

    def test_examplesParse(self) -> None:
        """
        The examples (``k8s/examples/``, not deployed by the kustomization)
        parse, name their objects and leave the namespace to ``kubectl``.
        """
        names = sorted(p.name for p in (_K8S / _EXAMPLES).glob("*.yaml"))
        self.assertEqual(names, ["echo.yaml", "ingress-tls.yaml", "ingress.yaml"])
        self.assertTrue((_K8S / _EXAMPLES / "README.md").is_file())
        for name in names:
            for doc in _documents(f"{_EXAMPLES}/{name}"):
                self.assertTrue(doc.get("apiVersion"), name)
                self.assertTrue(doc.get("kind"), name)
                self.assertTrue(doc.get("metadata", {}).get("name"), name)
                self.assertNotIn("namespace", doc["metadata"], name)


class _Kubectl(SynchronousTestCase):
    """
    Tests that run ``kubectl kustomize`` (the kustomize built into kubectl);
    skipped where kubectl is not installed.
    """

    def setUp(self) -> None:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise self.skipTest("kubectl is not installed")
        self.kubectl: str = kubectl

    def _build(self, directory: Path) -> list[dict[str, Any]]:
        result = subprocess.run(
            [self.kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


class KustomizeBuildTests(_Kubectl):
    """
    ``kubectl kustomize`` (the kustomize built into kubectl) renders the
    manifests. Skipped where kubectl is not installed.
    """

    def test_builds(self) -> None:
        """
        The kustomization builds, into exactly the objects of its resource
        files.
        """
        built = self._build(_K8S)
        self.assertEqual(
            sorted((d["kind"], d["metadata"]["name"]) for d in built),
            sorted((d["kind"], d["metadata"]["name"]) for d in _shipped()),
        )

    def test_namespaceReachesTheBindings(self) -> None:
        """
        With ``namespace:`` set in the kustomization, every namespaced object
        goes there and both bindings name the ServiceAccount in it, the
        ClusterRoleBinding's subject included (kustomize rewrites the
        ``default`` it names).
        """
        copy = Path(self.mktemp())
        shutil.copytree(_K8S, copy)
        with open(copy / "kustomization.yaml", "a") as f:
            f.write("\nnamespace: apim-elsewhere\n")
        built = self._build(copy)
        cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "IngressClass"}
        for doc in built:
            if doc["kind"] in cluster_scoped:
                self.assertNotIn("namespace", doc["metadata"], doc["kind"])
            else:
                self.assertEqual(doc["metadata"]["namespace"], "apim-elsewhere", doc["kind"])
        bindings = [d for d in built if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
        self.assertEqual(len(bindings), 2)
        for binding in bindings:
            self.assertEqual(
                binding["subjects"],
                [{"kind": "ServiceAccount", "name": "apimgw", "namespace": "apim-elsewhere"}],
            )


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

    def test_imageListensForAdminOnEveryInterface(self) -> None:
        """
        The image sets the admin listener to every interface explicitly
        (``GATEWAY_LISTEN_ADMIN``), since the gateway's own default is
        loopback, which nothing outside the container could reach.
        """
        self.assertEqual(_DEFAULTS["gateway.listen.admin"], "tcp:8082:interface=127.0.0.1")
        variables = dict(
            item.split("=", 1)
            for line in _dockerfile_instructions("ENV")
            for item in line.rstrip("\\").split()
            if "=" in item
        )
        self.assertEqual(variables.get("GATEWAY_LISTEN_ADMIN"), "tcp:8082")

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

    def test_downwardApi(self) -> None:
        """
        ``POD_NAME`` and ``POD_NAMESPACE`` (the replica's identity in leader
        election, and the namespace of its Lease) and ``k8s.ingress.namespace``
        (the namespace watched, so the one deployed to) come from the pod's
        own metadata.
        """
        self.assertEqual(
            _field_refs(),
            {
                "POD_NAME": "metadata.name",
                "POD_NAMESPACE": "metadata.namespace",
                "k8s.ingress.namespace": "metadata.namespace",
            },
        )

    def test_publishServiceIsTheGatewaysService(self) -> None:
        """
        ``k8s.ingress.publish-service`` names the LoadBalancer Service of
        ``service.yaml`` in the pod's namespace, through ``$(POD_NAMESPACE)``,
        which Kubernetes expands only when it is defined earlier in ``env``.
        """
        value = _env()["k8s.ingress.publish-service"]
        prefix = "$(POD_NAMESPACE)/"
        self.assertTrue(value.startswith(prefix), value)
        service = _one("service.yaml", "Service", value[len(prefix) :])
        self.assertEqual(service["spec"]["type"], "LoadBalancer")
        names = [e["name"] for e in _container()["env"]]
        self.assertLess(names.index("POD_NAMESPACE"), names.index("k8s.ingress.publish-service"))

    def test_envNamesAreKnown(self) -> None:
        """
        Every variable the Deployment sets is a setting, by its dotted or
        shell-safe name, or one of the pod variables; none is set twice.
        """
        names = [e["name"] for e in _container()["env"]]
        self.assertEqual(len(names), len(set(names)))
        for name in names:
            if name not in _POD_VARIABLES:
                self.assertIsNotNone(_setting_name(name), name)

    def test_envAndConfigMapDoNotOverlap(self) -> None:
        """
        No setting is in both the Deployment's ``env`` and the ConfigMap:
        ``env`` would silently win over the ConfigMap's value.
        """
        from_env = {_setting_name(e["name"]) for e in _container()["env"]} - {None}
        from_configmap = {_setting_name(key) for key in _configmap()}
        self.assertEqual(from_env & from_configmap, set())


class ConfigMapTests(SynchronousTestCase):
    """
    The settings ConfigMap.
    """

    def test_keysAreKnownSettingsWithTheirDefaults(self) -> None:
        """
        Every key is a dotted setting the gateway knows, every value is a
        string (the API server rejects other types) and equals that
        setting's default, except the few overridden on purpose.
        """
        data = _configmap()
        self.assertIn("telemetry.logs.std", data)
        for key, value in data.items():
            self.assertIn(key, _DEFAULTS)
            self.assertIsInstance(value, str, key)
            expected = _CONFIGMAP_OVERRIDES.get(key, _DEFAULTS[key])
            if expected is not None:
                self.assertEqual(value, expected, key)

    def test_ingressSourceEnabled(self) -> None:
        """
        The manifests ship the Ingress source's permissions and IngressClass,
        and turn it on with the class that IngressClass names.
        """
        data = _configmap()
        self.assertEqual(data["k8s.ingress.enabled"], "true")
        self.assertEqual(data["k8s.ingress.class"], _DEFAULTS["k8s.ingress.class"])

    def test_adminListensOnThePodAddress(self) -> None:
        """
        The ConfigMap binds the admin port to every interface of the pod
        (no ``interface=``), overriding the loopback default, so Prometheus
        and the ClusterIP Service reach ``/metrics``; the dotted name wins
        over the image's ``GATEWAY_LISTEN_ADMIN`` with the same value.
        """
        value = _configmap()["gateway.listen.admin"]
        self.assertEqual(value, "tcp:8082")
        self.assertNotIn("interface=", value)
        self.assertEqual(_port_number("admin"), 8082)

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
            p["name"]: (p["port"], _port_number(p["targetPort"])) for p in service["spec"]["ports"]
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


class RbacTests(SynchronousTestCase):
    """
    ``rbac.yaml``: exactly what the Ingress source does against the API
    server, bound to the Deployment's ServiceAccount.
    """

    def test_objects(self) -> None:
        """
        ``rbac.yaml`` holds one Role, RoleBinding, ClusterRole and
        ClusterRoleBinding, and no other file deploys RBAC objects.
        """
        kinds = sorted(doc["kind"] for doc in _documents("rbac.yaml"))
        self.assertEqual(kinds, ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"])
        rbac = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
        others = [
            doc["kind"]
            for name in _kustomization_resources()
            if name != "rbac.yaml"
            for doc in _documents(name)
            if doc["kind"] in rbac
        ]
        self.assertEqual(others, [])

    def test_roleGrantsExactly(self) -> None:
        """
        The Role grants read access to Ingresses, Services, EndpointSlices
        and Secrets; updates of Ingress status; creating and patching
        Events; creating Leases; and reading and updating the one Lease the
        gateway elects its leader with. Nothing else: an extra verb,
        resource or wildcard fails.
        """
        role = _one("rbac.yaml", "Role", "apimgw")
        election = _configmap()["k8s.ingress.election-id"]
        expected = (
            _read_grants("networking.k8s.io", "ingresses")
            | {("networking.k8s.io", "ingresses/status", "update", None)}
            | _read_grants("", "services")
            | _read_grants("discovery.k8s.io", "endpointslices")
            | _read_grants("", "secrets")
            | {("", "events", "create", None), ("", "events", "patch", None)}
            | {("coordination.k8s.io", "leases", "create", None)}
            | {
                ("coordination.k8s.io", "leases", "get", election),
                ("coordination.k8s.io", "leases", "update", election),
            }
        )
        self.assertEqual(_grants(role["rules"]), expected)

    def test_leaseIsTheElectionId(self) -> None:
        """
        The Lease the Role names is ``k8s.ingress.election-id``, which the
        ConfigMap leaves at its default.
        """
        role = _one("rbac.yaml", "Role", "apimgw")
        names = {
            name
            for rule in role["rules"]
            if "leases" in rule["resources"]
            for name in rule.get("resourceNames", [])
        }
        default = _DEFAULTS["k8s.ingress.election-id"]
        self.assertEqual(names, {default})
        self.assertEqual(_configmap()["k8s.ingress.election-id"], default)

    def test_clusterRoleOnlyReadsIngressClasses(self) -> None:
        """
        The ClusterRole grants get, list and watch on IngressClasses (they
        are cluster-scoped) and nothing else.
        """
        role = _one("rbac.yaml", "ClusterRole", "apimgw-ingressclasses")
        self.assertEqual(
            _grants(role["rules"]), _read_grants("networking.k8s.io", "ingressclasses")
        )
        self.assertNotIn("aggregationRule", role)

    def test_bindingsNameTheDeploymentsServiceAccount(self) -> None:
        """
        The RoleBinding binds the Role, and the ClusterRoleBinding the
        ClusterRole, to the ServiceAccount the Deployment runs as and
        nothing else. The RoleBinding's subject names no namespace (its
        own); the ClusterRoleBinding's must, and names ``default``, which
        kustomize rewrites with the kustomization's ``namespace:``.
        """
        account = _deployment()["spec"]["template"]["spec"]["serviceAccountName"]
        _one("serviceaccount.yaml", "ServiceAccount", account)
        binding = _one("rbac.yaml", "RoleBinding", "apimgw")
        self.assertEqual(
            binding["roleRef"],
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "apimgw"},
        )
        self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": account}])
        cluster = _one("rbac.yaml", "ClusterRoleBinding", "apimgw-ingressclasses")
        self.assertEqual(
            cluster["roleRef"],
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "apimgw-ingressclasses",
            },
        )
        self.assertEqual(
            cluster["subjects"],
            [{"kind": "ServiceAccount", "name": account, "namespace": "default"}],
        )


#: What the gateway may do with the cluster-wide Component, as ``(apiGroup,
#: resource, verb, scope, resourceName)``: everything the Ingress source
#: does with ``k8s.ingress.namespace`` empty, in every namespace; its Lease
#: in its own namespace only (``default`` here, where ``kubectl apply``
#: puts the objects); IngressClasses (cluster-scoped) as in the base.
_CLUSTER_WIDE_GRANTS = {
    ("networking.k8s.io", "ingresses", "list", "cluster", None),
    ("networking.k8s.io", "ingresses", "watch", "cluster", None),
    ("networking.k8s.io", "ingresses/status", "update", "cluster", None),
    ("", "services", "list", "cluster", None),
    ("", "services", "watch", "cluster", None),
    ("discovery.k8s.io", "endpointslices", "list", "cluster", None),
    ("discovery.k8s.io", "endpointslices", "watch", "cluster", None),
    ("", "secrets", "get", "cluster", None),
    ("", "secrets", "list", "cluster", None),
    ("", "secrets", "watch", "cluster", None),
    ("", "events", "create", "cluster", None),
    ("", "events", "patch", "cluster", None),
    ("networking.k8s.io", "ingressclasses", "get", "cluster", None),
    ("networking.k8s.io", "ingressclasses", "list", "cluster", None),
    ("networking.k8s.io", "ingressclasses", "watch", "cluster", None),
    ("coordination.k8s.io", "leases", "create", "default", None),
    ("coordination.k8s.io", "leases", "get", "default", "apimgw-leader"),
    ("coordination.k8s.io", "leases", "update", "default", "apimgw-leader"),
}


def _deployment_env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "apimgw"]
    env: list[dict[str, Any]] = container["env"]
    return env


class ClusterWideTests(SynchronousTestCase):
    """
    ``k8s/cluster-wide/``: the kustomize Component for watching all
    namespaces, read without kustomize.
    """

    def test_filesParse(self) -> None:
        """
        The Component's kustomization is a ``Component``; the files it lists
        exist and hold named objects; it lists every YAML file of the
        directory; a README explains it.
        """
        kustomization = _cluster_wide_kustomization()
        self.assertEqual(kustomization["kind"], "Component")
        self.assertEqual(kustomization["apiVersion"], "kustomize.config.k8s.io/v1alpha1")
        listed = list(kustomization["resources"]) + [p["path"] for p in kustomization["patches"]]
        self.assertEqual(len(listed), len(set(listed)))
        directory = _K8S / _CLUSTER_WIDE
        self.assertEqual(
            set(listed), {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        )
        for name in listed:
            for doc in _documents(f"{_CLUSTER_WIDE}/{name}"):
                self.assertTrue(doc.get("apiVersion"), name)
                self.assertTrue(doc.get("kind"), name)
                self.assertTrue(doc.get("metadata", {}).get("name"), name)
                self.assertNotIn("namespace", doc["metadata"], name)
        self.assertTrue((directory / "README.md").is_file())

    def test_grantsExactly(self) -> None:
        """
        The base's RBAC with the Component's ClusterRole and its patch of the
        Role grants the ServiceAccount exactly :data:`_CLUSTER_WIDE_GRANTS`:
        an extra verb, resource, wildcard or scope fails.
        """
        rules = rules_for_service_account(cluster_wide_rbac_documents(), "default", "apimgw")
        self.assertEqual(_scoped_grants(rules), _CLUSTER_WIDE_GRANTS)

    def test_roleKeepsTheLeaseRules(self) -> None:
        """
        The patched Role holds exactly the base Role's Lease rules, so it
        still names ``k8s.ingress.election-id``; the base Role is untouched.
        """
        base = _one("rbac.yaml", "Role", "apimgw")
        (role,) = [
            d
            for d in cluster_wide_rbac_documents()
            if (d["kind"], d["metadata"]["name"]) == ("Role", "apimgw")
        ]
        leases = [r for r in base["rules"] if r["resources"] == ["leases"]]
        self.assertEqual(role["rules"], leases)
        self.assertEqual(role["metadata"], base["metadata"])
        self.assertGreater(len(base["rules"]), len(leases))

    def test_clusterRoleBindingNamesTheServiceAccount(self) -> None:
        """
        The Component's ClusterRoleBinding binds its ClusterRole to the
        Deployment's ServiceAccount, in ``default`` like the base's (which
        kustomize rewrites with ``namespace:``); its names differ from the
        base's objects.
        """
        documents = _documents(f"{_CLUSTER_WIDE}/rbac.yaml")
        self.assertEqual(
            sorted(d["kind"] for d in documents), ["ClusterRole", "ClusterRoleBinding"]
        )
        (role,) = [d for d in documents if d["kind"] == "ClusterRole"]
        (binding,) = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
        self.assertNotIn("aggregationRule", role)
        self.assertEqual(
            binding["roleRef"],
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role["metadata"]["name"],
            },
        )
        account = _deployment()["spec"]["template"]["spec"]["serviceAccountName"]
        self.assertEqual(
            binding["subjects"],
            [{"kind": "ServiceAccount", "name": account, "namespace": "default"}],
        )
        base_names = {(d["kind"], d["metadata"]["name"]) for d in _shipped()}
        for doc in documents:
            self.assertNotIn((doc["kind"], doc["metadata"]["name"]), base_names)

    def test_deploymentPatchWatchesAllNamespaces(self) -> None:
        """
        The Deployment patch sets only ``k8s.ingress.namespace``, to ``""``,
        of the base Deployment's container, and removes the ``valueFrom``
        the base sets it with (an entry with both is invalid).
        """
        (patch,) = [p for p in _cluster_wide_patches() if p["kind"] == "Deployment"]
        self.assertEqual(patch["metadata"]["name"], _deployment()["metadata"]["name"])
        (container,) = patch["spec"]["template"]["spec"]["containers"]
        self.assertEqual(set(container), {"name", "env"})
        self.assertEqual(container["name"], _container()["name"])
        self.assertEqual(
            container["env"], [{"name": "k8s.ingress.namespace", "value": "", "valueFrom": None}]
        )
        self.assertIn("k8s.ingress.namespace", _field_refs())
        self.assertNotEqual(_DEFAULTS["k8s.ingress.namespace"], "")
        kinds = sorted(p["kind"] for p in _cluster_wide_patches())
        self.assertEqual(kinds, ["Deployment", "Role"])


class ClusterWideBuildTests(_Kubectl):
    """
    ``kubectl kustomize`` of a kustomization holding ``k8s/`` and the
    cluster-wide Component, as its README shows. Skipped where kubectl is
    not installed.
    """

    def _build_cluster_wide(self, namespace: str | None = None) -> list[dict[str, Any]]:
        # Outside k8s/ (kustomize refuses a base containing the overlay);
        # relative paths (it refuses absolute ones).
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        kustomization: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(_K8S, directory)],
            "components": [os.path.relpath(_K8S / _CLUSTER_WIDE, directory)],
        }
        if namespace is not None:
            kustomization["namespace"] = namespace
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return self._build(directory)

    def test_builds(self) -> None:
        """
        It builds, into the base's objects and the Component's ClusterRole
        and ClusterRoleBinding.
        """
        built = self._build_cluster_wide()
        added = _documents(f"{_CLUSTER_WIDE}/rbac.yaml")
        self.assertEqual(
            sorted((d["kind"], d["metadata"]["name"]) for d in built),
            sorted((d["kind"], d["metadata"]["name"]) for d in _shipped() + added),
        )

    def test_deploymentWatchesAllNamespaces(self) -> None:
        """
        The built Deployment sets ``k8s.ingress.namespace`` to ``""`` with no
        ``valueFrom``; every other variable is the base's, and
        ``POD_NAMESPACE`` still precedes ``k8s.ingress.publish-service``,
        which expands it.
        """
        (deployment,) = [d for d in self._build_cluster_wide() if d["kind"] == "Deployment"]
        env = _deployment_env(deployment)
        (entry,) = [e for e in env if e["name"] == "k8s.ingress.namespace"]
        self.assertEqual(entry, {"name": "k8s.ingress.namespace", "value": ""})
        base = _container()["env"]
        self.assertEqual(
            [e for e in env if e["name"] != "k8s.ingress.namespace"],
            [e for e in base if e["name"] != "k8s.ingress.namespace"],
        )
        names = [e["name"] for e in env]
        self.assertLess(names.index("POD_NAMESPACE"), names.index("k8s.ingress.publish-service"))

    def test_rbacIsAsComposed(self) -> None:
        """
        kustomize's RBAC objects are those :func:`cluster_wide_rbac_documents`
        composes without it (which the kustomize-free tests, here and in
        ``tests/integration/test_ingress_rbac_cluster.py``, rely on).
        """
        built = [d for d in self._build_cluster_wide() if d["kind"] in _RBAC_KINDS]

        def key(doc: dict[str, Any]) -> tuple[str, str]:
            return (doc["kind"], doc["metadata"]["name"])

        self.assertEqual(sorted(built, key=key), sorted(cluster_wide_rbac_documents(), key=key))

    def test_bindingsNameTheServiceAccount(self) -> None:
        """
        Every binding names the ServiceAccount; with ``namespace:`` set in the
        including kustomization, all three name it in that namespace (the
        ClusterRoleBindings' ``default`` rewritten).
        """
        for namespace, expected in ((None, "default"), ("apim-elsewhere", "apim-elsewhere")):
            built = self._build_cluster_wide(namespace)
            bindings = {
                d["metadata"]["name"]: d
                for d in built
                if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
            }
            self.assertEqual(
                set(bindings), {"apimgw", "apimgw-ingressclasses", "apimgw-all-namespaces"}
            )
            for binding in bindings.values():
                (subject,) = binding["subjects"]
                self.assertEqual((subject["kind"], subject["name"]), ("ServiceAccount", "apimgw"))
                if binding["kind"] == "ClusterRoleBinding" or namespace is not None:
                    self.assertEqual(subject["namespace"], expected, binding["metadata"]["name"])
                else:
                    self.assertNotIn("namespace", subject)
            grants = _scoped_grants(
                rules_for_service_account(
                    [d for d in built if d["kind"] in _RBAC_KINDS], expected, "apimgw"
                )
            )
            self.assertEqual(
                grants,
                {
                    g[:3] + ((expected if g[3] == "default" else g[3]),) + g[4:]
                    for g in _CLUSTER_WIDE_GRANTS
                },
            )


class IngressClassTests(SynchronousTestCase):
    """
    ``ingressclass.yaml``: the class the gateway serves.
    """

    def test_controllerIsTheServedClass(self) -> None:
        """
        The IngressClass's controller is the default of ``k8s.ingress.class``,
        which the gateway matches against ``spec.controller``.
        """
        ingress_class = _one("ingressclass.yaml", "IngressClass", "azure-api-management")
        self.assertEqual(ingress_class["apiVersion"], "networking.k8s.io/v1")
        self.assertEqual(ingress_class["spec"]["controller"], _DEFAULTS["k8s.ingress.class"])

    def test_notTheDefaultClass(self) -> None:
        """
        The IngressClass is not the cluster's default: Ingresses without a
        class are left to whichever controller the cluster defaults to.
        """
        ingress_class = _one("ingressclass.yaml", "IngressClass", "azure-api-management")
        annotations = ingress_class["metadata"].get("annotations") or {}
        self.assertNotEqual(annotations.get("ingressclass.kubernetes.io/is-default-class"), "true")


class ExampleTests(SynchronousTestCase):
    """
    ``k8s/examples/``: the echo backend and the Ingresses that route to it.
    """

    def _service(self) -> dict[str, Any]:
        return _one(f"{_EXAMPLES}/echo.yaml", "Service", "echo-service")

    def test_echoServiceSelectsTheEchoPods(self) -> None:
        """
        The echo Service selects the echo Deployment's pods, and each of its
        target ports is a port of their container.
        """
        deployment = _one(f"{_EXAMPLES}/echo.yaml", "Deployment", "echo")
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        self.assertEqual(deployment["spec"]["selector"]["matchLabels"], labels)
        service = self._service()
        for key, value in service["spec"]["selector"].items():
            self.assertEqual(labels.get(key), value)
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            self.assertIn(target, set(ports) | set(ports.values()))

    def test_ingressesUseTheShippedClass(self) -> None:
        """
        Both example Ingresses (one plain, one with TLS) are
        ``networking.k8s.io/v1`` and name the shipped IngressClass.
        """
        ingresses = _example_ingresses()
        self.assertEqual(
            sorted(name for name, _ in ingresses), ["ingress-tls.yaml", "ingress.yaml"]
        )
        (shipped,) = [d for d in _shipped() if d["kind"] == "IngressClass"]
        for name, ingress in ingresses:
            self.assertEqual(ingress["apiVersion"], "networking.k8s.io/v1", name)
            self.assertEqual(ingress["spec"]["ingressClassName"], shipped["metadata"]["name"], name)

    def test_backendsNameTheEchoService(self) -> None:
        """
        Every backend names the echo Service and one of its ports, by number
        or by name.
        """
        service = self._service()
        numbers = {p["port"] for p in service["spec"]["ports"]}
        names = {p["name"] for p in service["spec"]["ports"]}
        for name, ingress in _example_ingresses():
            backends = _backends(ingress)
            self.assertTrue(backends, name)
            for backend in backends:
                self.assertEqual(backend["service"]["name"], "echo-service", name)
                port = backend["service"]["port"]
                self.assertTrue(port.get("number") in numbers or port.get("name") in names, name)

    def test_tlsSecretIsExplained(self) -> None:
        """
        The TLS example names a Secret for hosts of its rules, and its file
        shows the ``kubectl create secret tls`` command that makes it.
        """
        (ingress,) = [i for name, i in _example_ingresses() if name == "ingress-tls.yaml"]
        rule_hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        text = (_K8S / _EXAMPLES / "ingress-tls.yaml").read_text()
        self.assertTrue(ingress["spec"]["tls"])
        for tls in ingress["spec"]["tls"]:
            self.assertLessEqual(set(tls["hosts"]), rule_hosts)
            self.assertIn(f"kubectl create secret tls {tls['secretName']}", text)

    def test_gatewayTranslatesTheExamples(self) -> None:
        """
        The gateway's own Ingress translation, with the ConfigMap's settings
        and the shipped IngressClass, serves both examples without a problem:
        each path routes to the echo Service's cluster name, and the TLS
        example's Secret (made here as ``kubectl create secret tls`` would)
        becomes a certificate for its host.
        """
        namespace = "apim-example"
        data = _configmap()

        def placed(doc: dict[str, Any]) -> dict[str, Any]:
            return {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}

        issued = self_signed("www.contoso.com")
        (tls_ingress,) = [i for n, i in _example_ingresses() if n == "ingress-tls.yaml"]
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": tls_ingress["spec"]["tls"][0]["secretName"],
                "namespace": namespace,
            },
            "data": {
                "tls.crt": base64.b64encode(issued.cert_pem.encode()).decode(),
                "tls.key": base64.b64encode(issued.key_pem.encode()).decode(),
            },
        }
        inputs = IngressInputs(
            ingresses=tuple(placed(i) for _, i in _example_ingresses()),
            ingress_classes=tuple(d for d in _shipped() if d["kind"] == "IngressClass"),
            services=(placed(self._service()),),
            secrets=(secret,),
            settings=IngressSettings(
                ingress_class=data["k8s.ingress.class"],
                dns_suffix=data["k8s.ingress.dns.suffix"],
            ),
        )
        result = translate_ingresses(inputs)
        self.assertEqual(result.problems, ())
        self.assertEqual(
            sorted(result.served),
            sorted(f"{namespace}/{i['metadata']['name']}" for _, i in _example_ingresses()),
        )
        routes = [
            route for obj in result.objects if obj.ref.kind == "routes" for route in obj.body.routes
        ]
        self.assertEqual(
            sorted((r.host, r.path) for r in routes),
            [("echo.example.com", "/echo"), ("www.contoso.com", "/echo-tls")],
        )
        for route in routes:
            self.assertEqual(
                route.backend, f"http://echo-service.{namespace}.svc.cluster.local:8080"
            )
        certificates = [obj.body for obj in result.objects if obj.ref.kind == "certificate"]
        self.assertEqual([c.hosts for c in certificates], [("www.contoso.com",)])


def _redis_kustomization() -> dict[str, Any]:
    (kustomization,) = _documents(f"{_REDIS}/kustomization.yaml")
    return kustomization


def _redis_resources() -> list[dict[str, Any]]:
    """The objects the Redis Component's ``resources`` add."""
    return [
        doc
        for name in _redis_kustomization()["resources"]
        for doc in _documents(f"{_REDIS}/{name}")
    ]


def _redis_one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in _redis_resources() if d["kind"] == kind]
    return found


def _redis_container(deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    pod = (deployment or _redis_one("Deployment"))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def _redis_secret_generator() -> dict[str, Any]:
    """The Component's one ``secretGenerator`` entry."""
    (generator,) = _redis_kustomization()["secretGenerator"]
    return generator


def _redis_placeholder() -> tuple[str, str]:
    """The generated Secret's key and its placeholder value."""
    (literal,) = _redis_secret_generator()["literals"]
    key, value = literal.split("=", 1)
    return key, value


def _merge_named(base: list[dict[str, Any]], patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    A strategic merge of a list whose merge key is ``name`` (``containers``,
    ``env``): an entry of the patch merges into the base's entry of the same
    name, or is added. (kustomize adds new entries first; order is not
    compared here.) A ``null`` deletes a key, as in :func:`_merge`.
    """
    merged = [dict(entry) for entry in base]
    for entry in patch:
        matches = [i for i, e in enumerate(merged) if e["name"] == entry["name"]]
        if matches:
            (i,) = matches
            merged[i] = _merge(merged[i], {k: v for k, v in entry.items() if k != "name"})
            merged[i]["name"] = entry["name"]
        else:
            merged.append({k: v for k, v in entry.items() if v is not None})
    return merged


def redis_gateway_deployment() -> dict[str, Any]:
    """
    The gateway Deployment of ``k8s/`` with the Redis Component's patch
    applied without kustomize: the patch's containers merge by name and
    their ``env`` entries merge by name. Only ``path`` patches of the
    Deployment ``apimgw`` touching ``containers[].env`` are understood;
    anything else fails, so this never misreads the Component.
    """
    deployment = _deployment()
    for entry in _redis_kustomization().get("patches") or []:
        if set(entry) != {"path"}:
            raise AssertionError(f"{_REDIS}: unsupported patch entry {entry!r}")
        (patch,) = _documents(f"{_REDIS}/{entry['path']}")
        key = (patch["kind"], patch["metadata"]["name"])
        if key != ("Deployment", deployment["metadata"]["name"]):
            raise AssertionError(f"{_REDIS}: unexpected patch target {key!r}")
        patch_spec = patch["spec"]["template"]["spec"]
        if set(patch_spec) != {"containers"}:
            raise AssertionError(f"{_REDIS}: unsupported pod patch {sorted(patch_spec)}")
        pod = deployment["spec"]["template"]["spec"]
        containers = [dict(c) for c in pod["containers"]]
        for patched in patch_spec["containers"]:
            if set(patched) != {"name", "env"}:
                raise AssertionError(f"{_REDIS}: unsupported container patch {sorted(patched)}")
            (i,) = [i for i, c in enumerate(containers) if c["name"] == patched["name"]]
            containers[i]["env"] = _merge_named(containers[i].get("env", []), patched["env"])
        deployment = {
            **deployment,
            "spec": {
                **deployment["spec"],
                "template": {
                    **deployment["spec"]["template"],
                    "spec": {**pod, "containers": containers},
                },
            },
        }
    return deployment


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """A container's env entries from Secrets: variable → (Secret, key)."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


class RedisComponentTests(SynchronousTestCase):
    """
    ``k8s/redis/``: the kustomize Component adding a Redis for the shared
    rate-limit counters, read and composed without kustomize.
    """

    def test_filesParse(self) -> None:
        """
        The kustomization is a ``Component``; it lists every YAML file of the
        directory once, each holding named objects without a namespace; a
        README explains it.
        """
        kustomization = _redis_kustomization()
        self.assertEqual(kustomization["kind"], "Component")
        self.assertEqual(kustomization["apiVersion"], "kustomize.config.k8s.io/v1alpha1")
        listed = list(kustomization["resources"]) + [p["path"] for p in kustomization["patches"]]
        self.assertEqual(len(listed), len(set(listed)))
        directory = _K8S / _REDIS
        self.assertEqual(
            set(listed), {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        )
        for name in listed:
            for doc in _documents(f"{_REDIS}/{name}"):
                self.assertTrue(doc.get("apiVersion"), name)
                self.assertTrue(doc.get("kind"), name)
                self.assertTrue(doc.get("metadata", {}).get("name"), name)
                self.assertNotIn("namespace", doc["metadata"], name)
        self.assertTrue((directory / "README.md").is_file())

    def test_objects(self) -> None:
        """
        It adds the Deployment, Service and NetworkPolicy ``apimgw-redis``
        and generates the Secret ``apimgw-redis``; none clashes with an
        object of the base.
        """
        added = sorted((d["kind"], d["metadata"]["name"]) for d in _redis_resources())
        self.assertEqual(
            added,
            [
                ("Deployment", "apimgw-redis"),
                ("NetworkPolicy", "apimgw-redis"),
                ("Service", "apimgw-redis"),
            ],
        )
        self.assertEqual(_redis_secret_generator()["name"], "apimgw-redis")
        base = {(d["kind"], d["metadata"]["name"]) for d in _shipped()}
        self.assertEqual(base & (set(added) | {("Secret", "apimgw-redis")}), set())

    def test_redisDeployment(self) -> None:
        """
        One replica of ``redis:7-alpine`` (a tag, never ``latest``), recreated
        rather than surged, with no persistence, a password from the
        generated Secret, resource requests and limits, and exec probes.
        """
        deployment = _redis_one("Deployment")
        self.assertEqual(deployment["spec"]["replicas"], 1)
        self.assertEqual(deployment["spec"]["strategy"], {"type": "Recreate"})
        container = _redis_container()
        self.assertEqual(container["image"], "redis:7-alpine")
        script = " ".join(container["command"] + container["args"])
        self.assertIn('--save ""', script)
        self.assertIn("--appendonly no", script)
        self.assertIn('--requirepass "$REDIS_PASSWORD"', script)
        self.assertIn("--maxmemory ", script)
        key, _ = _redis_placeholder()
        name = _redis_secret_generator()["name"]
        self.assertEqual(
            _secret_refs(container),
            {"REDIS_PASSWORD": (name, key), "REDISCLI_AUTH": (name, key)},
        )
        resources = container["resources"]
        self.assertTrue(resources["requests"]["cpu"])
        self.assertEqual(resources["requests"]["memory"], resources["limits"]["memory"])
        for probe in ("readinessProbe", "livenessProbe"):
            command = " ".join(container[probe]["exec"]["command"])
            self.assertIn("redis-cli", command, probe)
            self.assertIn("ping", command, probe)
            self.assertNotIn("-a ", command, probe)
        self.assertIn("PONG", " ".join(container["readinessProbe"]["exec"]["command"]))
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.assertEqual(ports, {"redis": 6379})

    def test_placeholderRefused(self) -> None:
        """
        The generated Secret holds a placeholder, which the container
        refuses to start with; the placeholder is nowhere else.
        """
        _, placeholder = _redis_placeholder()
        self.assertIn("placeholder", placeholder)
        script = _redis_container()["args"][0]
        self.assertIn(f'[ "$REDIS_PASSWORD" = "{placeholder}" ]', script)
        self.assertIn("exit 1", script.split("exec redis-server")[0])
        self.assertNotIn(placeholder, (_K8S / _REDIS / "deployment-patch.yaml").read_text())
        self.assertNotIn(placeholder, (_K8S / _REDIS / "networkpolicy.yaml").read_text())

    def test_redisRunsLockedDown(self) -> None:
        """
        Non-root, no privilege escalation, all capabilities dropped, a
        read-only root filesystem with an emptyDir at /data, no
        ServiceAccount token, no service links.
        """
        pod = _redis_one("Deployment")["spec"]["template"]["spec"]
        self.assertIs(pod["automountServiceAccountToken"], False)
        self.assertIs(pod["enableServiceLinks"], False)
        self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
        self.assertGreater(pod["securityContext"]["runAsUser"], 0)
        security = _redis_container()["securityContext"]
        self.assertIs(security["runAsNonRoot"], True)
        self.assertIs(security["allowPrivilegeEscalation"], False)
        self.assertIs(security["readOnlyRootFilesystem"], True)
        self.assertEqual(security["capabilities"]["drop"], ["ALL"])
        (mount,) = _redis_container()["volumeMounts"]
        self.assertEqual(mount["mountPath"], "/data")
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        self.assertIn("emptyDir", volume)

    def test_serviceSelectsRedisOnly(self) -> None:
        """
        The ClusterIP Service selects the Redis pods, on 6379; the Redis pods
        carry none of the labels the gateway's Services, PodDisruptionBudget
        and Deployment select, so they never join the gateway.
        """
        service = _redis_one("Service")
        self.assertEqual(service["spec"]["type"], "ClusterIP")
        deployment = _redis_one("Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(_labels_match(service["spec"]["selector"], labels))
        self.assertTrue(_labels_match(deployment["spec"]["selector"]["matchLabels"], labels))
        (port,) = service["spec"]["ports"]
        self.assertEqual(port["port"], 6379)
        ports = {p["name"]: p["containerPort"] for p in _redis_container()["ports"]}
        self.assertEqual(ports.get(port["targetPort"], port["targetPort"]), 6379)
        gateway_selectors = [
            _one("service.yaml", "Service", "apimgw")["spec"]["selector"],
            _one("service.yaml", "Service", "apimgw-admin")["spec"]["selector"],
            _one("pdb.yaml", "PodDisruptionBudget", "apimgw")["spec"]["selector"]["matchLabels"],
            _deployment()["spec"]["selector"]["matchLabels"],
        ]
        for selector in gateway_selectors:
            self.assertFalse(_labels_match(selector, labels), selector)

    def test_networkPolicyAdmitsOnlyTheGateway(self) -> None:
        """
        The NetworkPolicy selects the Redis pods, and its one ingress rule
        admits pods with the gateway's pod labels (of this namespace: no
        namespaceSelector, no ipBlock) on TCP 6379 only. The Redis pods are
        not among those it admits; it allows no egress.
        """
        policy = _redis_one("NetworkPolicy")
        self.assertEqual(policy["apiVersion"], "networking.k8s.io/v1")
        spec = policy["spec"]
        redis_labels = _redis_one("Deployment")["spec"]["template"]["metadata"]["labels"]
        gateway_labels = _deployment()["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(_labels_match(spec["podSelector"]["matchLabels"], redis_labels))
        self.assertEqual(sorted(spec["policyTypes"]), ["Egress", "Ingress"])
        self.assertEqual(spec.get("egress") or [], [])
        (rule,) = spec["ingress"]
        (peer,) = rule["from"]
        self.assertEqual(set(peer), {"podSelector"})
        selector = peer["podSelector"]["matchLabels"]
        self.assertTrue(_labels_match(selector, gateway_labels))
        self.assertFalse(_labels_match(selector, redis_labels))
        self.assertEqual(rule["ports"], [{"protocol": "TCP", "port": 6379}])

    def test_gatewayPointsAtTheService(self) -> None:
        """
        The patched gateway sets ``RATE_LIMIT_REDIS_URL`` to the Service's
        name and port, without a password, and ``RATE_LIMIT_REDIS_PASSWORD``
        from the generated Secret's key; both are known settings, not in the
        ConfigMap (where their dotted name would win); the base's variables
        are unchanged.
        """
        (container,) = [
            c
            for c in redis_gateway_deployment()["spec"]["template"]["spec"]["containers"]
            if c["name"] == "apimgw"
        ]
        env = {e["name"]: e for e in container["env"]}
        url = env["RATE_LIMIT_REDIS_URL"]["value"]
        address = parse_redis_url(url)
        service = _redis_one("Service")
        self.assertEqual(address.host, service["metadata"]["name"])
        self.assertEqual(address.port, service["spec"]["ports"][0]["port"])
        self.assertIsNone(address.password)
        self.assertIsNone(address.username)
        self.assertFalse(address.tls)
        key, _ = _redis_placeholder()
        self.assertEqual(
            _secret_refs(container)["RATE_LIMIT_REDIS_PASSWORD"],
            (_redis_secret_generator()["name"], key),
        )
        for name in ("RATE_LIMIT_REDIS_URL", "RATE_LIMIT_REDIS_PASSWORD"):
            self.assertIsNotNone(_setting_name(name), name)
            self.assertNotIn(_setting_name(name), {_setting_name(k) for k in _configmap()})
        added = [e for e in container["env"] if e["name"].startswith("RATE_LIMIT_REDIS_")]
        self.assertEqual(len(added), 2)
        self.assertEqual([e for e in container["env"] if e not in added], _container()["env"])

    def test_noPlaintextPassword(self) -> None:
        """
        No container of the composition has a password as a plain ``value``:
        every variable naming a password or Redis's auth comes from a Secret,
        and the URL carries none.
        """
        containers = [
            *redis_gateway_deployment()["spec"]["template"]["spec"]["containers"],
            _redis_container(),
        ]
        for container in containers:
            for entry in container.get("env", []):
                if "PASSWORD" in entry["name"].upper() or "AUTH" in entry["name"].upper():
                    if entry["name"] == "config.service.auth":
                        continue
                    self.assertNotIn("value", entry, entry["name"])
                    self.assertIn("secretKeyRef", entry["valueFrom"], entry["name"])
                if "value" in entry and entry["value"].startswith(("redis://", "rediss://")):
                    self.assertIsNone(parse_redis_url(entry["value"]).password, entry["name"])


class RedisBuildTests(_Kubectl):
    """
    ``kubectl kustomize`` of a kustomization holding ``k8s/`` and the Redis
    Component, as its README shows. Skipped where kubectl is not installed.
    """

    def _build_with(
        self, *extra: tuple[str, dict[str, Any], dict[str, str]]
    ) -> list[dict[str, Any]]:
        """
        Build ``k8s/`` with the Redis Component and, after it, each of
        ``extra``: Components of ours, ``(directory, kustomization, files)``.
        """
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        components = [os.path.relpath(_K8S / _REDIS, directory)]
        for name, kustomization, files in extra:
            (directory / name).mkdir()
            (directory / name / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
            for file_name, text in files.items():
                (directory / name / file_name).write_text(text)
            components.append(name)
        top = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(_K8S, directory)],
            "components": components,
        }
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(top))
        return self._build(directory)

    def _gateway(self, built: list[dict[str, Any]]) -> dict[str, Any]:
        (deployment,) = [
            d for d in built if d["kind"] == "Deployment" and d["metadata"]["name"] == "apimgw"
        ]
        containers = deployment["spec"]["template"]["spec"]["containers"]
        (container,) = [c for c in containers if c["name"] == "apimgw"]
        return container

    def _redis(self, built: list[dict[str, Any]]) -> dict[str, Any]:
        (deployment,) = [
            d
            for d in built
            if d["kind"] == "Deployment" and d["metadata"]["name"] == "apimgw-redis"
        ]
        return deployment

    def test_builds(self) -> None:
        """
        It builds into the base's objects, the Component's and one Secret
        ``apimgw-redis-<hash>``, which both Deployments' secretKeyRefs name.
        """
        built = self._build_with()
        (secret,) = [d for d in built if d["kind"] == "Secret"]
        name = secret["metadata"]["name"]
        self.assertTrue(name.startswith("apimgw-redis-"), name)
        self.assertEqual(
            sorted((d["kind"], d["metadata"]["name"]) for d in built),
            sorted(
                [(d["kind"], d["metadata"]["name"]) for d in _shipped() + _redis_resources()]
                + [("Secret", name)]
            ),
        )
        key, _ = _redis_placeholder()
        self.assertIn(key, secret["data"])
        self.assertEqual(
            _secret_refs(self._gateway(built))["RATE_LIMIT_REDIS_PASSWORD"], (name, key)
        )
        for ref in _secret_refs(_redis_container(self._redis(built))).values():
            self.assertEqual(ref, (name, key))

    def test_asComposed(self) -> None:
        """
        kustomize's gateway env and Redis objects are those composed without
        it (up to the Secret's hash suffix and the env order), which the
        kustomize-free tests rely on.
        """
        built = self._build_with()
        (secret,) = [d for d in built if d["kind"] == "Secret"]
        generated = _redis_secret_generator()["name"]

        def unhashed(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
            text = json.dumps(env).replace(secret["metadata"]["name"], generated)
            return sorted(json.loads(text), key=lambda e: e["name"])

        (composed,) = [
            c
            for c in redis_gateway_deployment()["spec"]["template"]["spec"]["containers"]
            if c["name"] == "apimgw"
        ]
        self.assertEqual(unhashed(self._gateway(built)["env"]), unhashed(composed["env"]))
        for kind in ("Service", "NetworkPolicy"):
            (found,) = [
                d for d in built if d["kind"] == kind and d["metadata"]["name"] == "apimgw-redis"
            ]
            self.assertEqual(found, _redis_one(kind))
        self.assertEqual(
            unhashed(_redis_container(self._redis(built))["env"]),
            unhashed(_redis_container()["env"]),
        )

    def test_passwordComponentReplacesThePlaceholder(self) -> None:
        """
        README.md's password Component (a ``secretGenerator`` with
        ``behavior: replace`` from a file, listed after ``k8s/redis``)
        replaces the placeholder; the password is in the Secret only.
        """
        password = "0123456789abcdef0123456789abcdef"
        built = self._build_with(
            (
                "password",
                {
                    "apiVersion": "kustomize.config.k8s.io/v1alpha1",
                    "kind": "Component",
                    "secretGenerator": [
                        {
                            "name": "apimgw-redis",
                            "behavior": "replace",
                            "files": ["password=redis-password"],
                        }
                    ],
                },
                {"redis-password": password},
            )
        )
        (secret,) = [d for d in built if d["kind"] == "Secret"]
        self.assertEqual(base64.b64decode(secret["data"]["password"]).decode(), password)
        others = yaml.safe_dump_all([d for d in built if d["kind"] != "Secret"])
        self.assertNotIn(password, others)
        self.assertEqual(
            _secret_refs(self._gateway(built))["RATE_LIMIT_REDIS_PASSWORD"][0],
            secret["metadata"]["name"],
        )

    def test_externalSecretComponent(self) -> None:
        """
        README.md's Component deleting the generated Secret leaves no Secret,
        and the references name ``apimgw-redis``, the Secret made with
        ``kubectl create secret``.
        """
        built = self._build_with(
            (
                "external-secret",
                {
                    "apiVersion": "kustomize.config.k8s.io/v1alpha1",
                    "kind": "Component",
                    "patches": [
                        {
                            "patch": "$patch: delete\napiVersion: v1\nkind: Secret\n"
                            "metadata:\n  name: apimgw-redis\n"
                        }
                    ],
                },
                {},
            )
        )
        self.assertEqual([d for d in built if d["kind"] == "Secret"], [])
        self.assertEqual(
            _secret_refs(self._gateway(built))["RATE_LIMIT_REDIS_PASSWORD"],
            ("apimgw-redis", "password"),
        )


#: The kustomize Component that serves the Gateway API.
_GATEWAY_API = "gateway-api"
_GATEWAY_GROUP = "gateway.networking.k8s.io"


def _gateway_api_kustomization() -> dict[str, Any]:
    (kustomization,) = _documents(f"{_GATEWAY_API}/kustomization.yaml")
    return kustomization


def _gateway_api_resources() -> list[dict[str, Any]]:
    """The objects the Gateway API Component's ``resources`` add."""
    return [
        doc
        for name in _gateway_api_kustomization()["resources"]
        for doc in _documents(f"{_GATEWAY_API}/{name}")
    ]


def _gateway_api_patch(kind: str) -> dict[str, Any]:
    """The Component's patch of the base object of ``kind`` (patches given by path only)."""
    found = []
    for entry in _gateway_api_kustomization()["patches"]:
        if set(entry) != {"path"}:
            raise AssertionError(f"{_GATEWAY_API}: unsupported patch entry {entry!r}")
        found += [d for d in _documents(f"{_GATEWAY_API}/{entry['path']}") if d["kind"] == kind]
    (patch,) = found
    return patch


def gateway_api_rbac_documents() -> list[dict[str, Any]]:
    """
    The RBAC objects deployed by ``k8s/`` with the Gateway API Component: the
    base's and the Component's own (it patches no RBAC object; where kubectl
    is installed, :class:`GatewayApiBuildTests` checks that against
    kustomize's output).
    """
    return rbac_documents() + [d for d in _gateway_api_resources() if d["kind"] in _RBAC_KINDS]


#: What the Gateway API Component grants, as ``(apiGroup, resource, verb,
#: scope, resourceName)``: the Gateway API source's reads and the status
#: writer's updates in the gateway's own namespace (``default`` here), its
#: Lease there, and the cluster-scoped GatewayClasses (with their status)
#: and Namespaces.
_GATEWAY_API_GRANTS = (
    {
        (group, resource, verb, "default", None)
        for group, resource in (
            (_GATEWAY_GROUP, "gateways"),
            (_GATEWAY_GROUP, "httproutes"),
            (_GATEWAY_GROUP, "referencegrants"),
            ("", "services"),
            ("", "secrets"),
        )
        for verb in ("get", "list", "watch")
    }
    | {
        (_GATEWAY_GROUP, f"{plural}/status", verb, "default", None)
        for plural in ("gateways", "httproutes")
        for verb in ("update", "patch")
    }
    | {
        ("coordination.k8s.io", "leases", "create", "default", None),
        ("coordination.k8s.io", "leases", "get", "default", "apimgw-gateway-api"),
        ("coordination.k8s.io", "leases", "update", "default", "apimgw-gateway-api"),
    }
    | {
        (group, resource, verb, "cluster", None)
        for group, resource in ((_GATEWAY_GROUP, "gatewayclasses"), ("", "namespaces"))
        for verb in ("get", "list", "watch")
    }
    | {
        (_GATEWAY_GROUP, "gatewayclasses/status", verb, "cluster", None)
        for verb in ("update", "patch")
    }
)


def _in_namespace(
    grants: Iterable[tuple[str, str, str, str, str | None]], namespace: str
) -> set[tuple[str, str, str, str, str | None]]:
    """``grants`` with the scope ``default`` moved to ``namespace``."""
    return {g[:3] + ((namespace if g[3] == "default" else g[3]),) + g[4:] for g in grants}


class GatewayApiTests(SynchronousTestCase):
    """
    ``k8s/gateway-api/``: the kustomize Component serving the Gateway API,
    read without kustomize.
    """

    def test_filesParse(self) -> None:
        """
        The Component's kustomization is a ``Component``; the files it lists
        exist, hold named objects without a namespace, and are every YAML
        file of the directory; a README says the CRDs come first.
        """
        kustomization = _gateway_api_kustomization()
        self.assertEqual(kustomization["kind"], "Component")
        self.assertEqual(kustomization["apiVersion"], "kustomize.config.k8s.io/v1alpha1")
        listed = list(kustomization["resources"]) + [p["path"] for p in kustomization["patches"]]
        self.assertEqual(len(listed), len(set(listed)))
        directory = _K8S / _GATEWAY_API
        self.assertEqual(
            set(listed), {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        )
        for name in listed:
            for doc in _documents(f"{_GATEWAY_API}/{name}"):
                self.assertTrue(doc.get("apiVersion"), name)
                self.assertTrue(doc.get("kind"), name)
                self.assertTrue(doc.get("metadata", {}).get("name"), name)
                self.assertNotIn("namespace", doc["metadata"], name)
        readme = (directory / "README.md").read_text()
        self.assertIn("standard-install.yaml", readme)
        self.assertIn("kubectl get crd gatewayclasses.gateway.networking.k8s.io", readme)

    def test_objects(self) -> None:
        """
        It adds one Role, RoleBinding, ClusterRole, ClusterRoleBinding and
        GatewayClass, none named like an object of the base, and patches
        the ConfigMap and the Deployment.
        """
        added = sorted((d["kind"], d["metadata"]["name"]) for d in _gateway_api_resources())
        self.assertEqual(
            added,
            [
                ("ClusterRole", "apimgw-gateway-api"),
                ("ClusterRoleBinding", "apimgw-gateway-api"),
                ("GatewayClass", "apimgw"),
                ("Role", "apimgw-gateway-api"),
                ("RoleBinding", "apimgw-gateway-api"),
            ],
        )
        base = {(d["kind"], d["metadata"]["name"]) for d in _shipped()}
        self.assertEqual(base & set(added), set())
        self.assertEqual(
            _gateway_api_patch("ConfigMap")["metadata"]["name"],
            _one("configmap.yaml", "ConfigMap", "apimgw-env")["metadata"]["name"],
        )
        self.assertEqual(
            _gateway_api_patch("Deployment")["metadata"]["name"], _deployment()["metadata"]["name"]
        )

    def test_roleGrantsExactly(self) -> None:
        """
        The Role reads Gateways, HTTPRoutes, ReferenceGrants, Services and
        Secrets, updates and patches the status of Gateways and HTTPRoutes,
        creates Leases and reads and updates the one Lease the Gateway API
        source elects its status writer with. Nothing else: no write to the
        objects themselves, no ReferenceGrant status, no wildcard.
        """
        (role,) = [d for d in _gateway_api_resources() if d["kind"] == "Role"]
        election = _gateway_api_patch("ConfigMap")["data"]["k8s.gateway.election-id"]
        expected = (
            _read_grants(_GATEWAY_GROUP, "gateways")
            | _read_grants(_GATEWAY_GROUP, "httproutes")
            | _read_grants(_GATEWAY_GROUP, "referencegrants")
            | _read_grants("", "services")
            | _read_grants("", "secrets")
            | {
                (_GATEWAY_GROUP, f"{plural}/status", verb, None)
                for plural in ("gateways", "httproutes")
                for verb in ("update", "patch")
            }
            | {("coordination.k8s.io", "leases", "create", None)}
            | {
                ("coordination.k8s.io", "leases", "get", election),
                ("coordination.k8s.io", "leases", "update", election),
            }
        )
        self.assertEqual(_grants(role["rules"]), expected)

    def test_clusterRoleGrantsExactly(self) -> None:
        """
        The ClusterRole reads GatewayClasses and Namespaces (both
        cluster-scoped) and updates and patches GatewayClass status; nothing
        else.
        """
        (role,) = [d for d in _gateway_api_resources() if d["kind"] == "ClusterRole"]
        self.assertEqual(
            _grants(role["rules"]),
            _read_grants(_GATEWAY_GROUP, "gatewayclasses")
            | _read_grants("", "namespaces")
            | {(_GATEWAY_GROUP, "gatewayclasses/status", v, None) for v in ("update", "patch")},
        )
        self.assertNotIn("aggregationRule", role)

    def test_grantsExactly(self) -> None:
        """
        Bound to the ServiceAccount, the Component's RBAC grants exactly
        :data:`_GATEWAY_API_GRANTS` (an extra verb, resource, wildcard or
        scope fails), and leaves the base's grants as they are.
        """
        own = [d for d in _gateway_api_resources() if d["kind"] in _RBAC_KINDS]
        self.assertEqual(
            _scoped_grants(rules_for_service_account(own, "default", "apimgw")),
            _GATEWAY_API_GRANTS,
        )
        base = _scoped_grants(rules_for_service_account(rbac_documents(), "default", "apimgw"))
        self.assertEqual(
            _scoped_grants(
                rules_for_service_account(gateway_api_rbac_documents(), "default", "apimgw")
            ),
            base | _GATEWAY_API_GRANTS,
        )

    def test_bindingsNameTheServiceAccount(self) -> None:
        """
        The RoleBinding binds the Role and the ClusterRoleBinding the
        ClusterRole to the Deployment's ServiceAccount; the
        ClusterRoleBinding names it in ``default`` (rewritten by kustomize's
        ``namespace:``), the RoleBinding in its own namespace.
        """
        account = _deployment()["spec"]["template"]["spec"]["serviceAccountName"]
        resources = _gateway_api_resources()
        for kind, role_kind in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
            (binding,) = [d for d in resources if d["kind"] == kind]
            (role,) = [d for d in resources if d["kind"] == role_kind]
            self.assertEqual(
                binding["roleRef"],
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": role_kind,
                    "name": role["metadata"]["name"],
                },
            )
            subject = {"kind": "ServiceAccount", "name": account}
            if kind == "ClusterRoleBinding":
                subject["namespace"] = "default"
            self.assertEqual(binding["subjects"], [subject])

    def test_configMapPatchEnablesTheSource(self) -> None:
        """
        The ConfigMap patch turns the Gateway API source on and sets its
        controller and Lease names to their defaults: known settings, string
        values, none the base ConfigMap already sets.
        """
        data = _gateway_api_patch("ConfigMap")["data"]
        self.assertEqual(data["k8s.gateway.enabled"], "true")
        self.assertEqual(_DEFAULTS["k8s.gateway.enabled"], "false")
        for key, value in data.items():
            self.assertIn(key, _DEFAULTS)
            self.assertIsInstance(value, str, key)
            if key != "k8s.gateway.enabled":
                self.assertEqual(value, _DEFAULTS[key], key)
        self.assertEqual(set(data) & set(_configmap()), set())
        self.assertNotIn("k8s.gateway.namespace", data)

    def test_gatewayClassNamesTheController(self) -> None:
        """
        The GatewayClass is a ``gateway.networking.k8s.io/v1`` one whose
        ``controllerName`` is ``k8s.gateway.controller`` as the ConfigMap
        patch sets it (the default, ``apimgw.io/gateway-controller``).
        """
        (gateway_class,) = [d for d in _gateway_api_resources() if d["kind"] == "GatewayClass"]
        self.assertEqual(gateway_class["apiVersion"], f"{_GATEWAY_GROUP}/v1")
        controller = gateway_class["spec"]["controllerName"]
        self.assertEqual(
            controller, _gateway_api_patch("ConfigMap")["data"]["k8s.gateway.controller"]
        )
        self.assertEqual(controller, "apimgw.io/gateway-controller")
        self.assertNotIn("parametersRef", gateway_class["spec"])

    def test_leaseIsTheElectionId(self) -> None:
        """
        The Lease the Role names is ``k8s.gateway.election-id`` as the
        ConfigMap patch sets it, not the Ingress source's Lease.
        """
        (role,) = [d for d in _gateway_api_resources() if d["kind"] == "Role"]
        names = {
            name
            for rule in role["rules"]
            if "leases" in rule["resources"]
            for name in rule.get("resourceNames", [])
        }
        election = _gateway_api_patch("ConfigMap")["data"]["k8s.gateway.election-id"]
        self.assertEqual(names, {election})
        self.assertNotEqual(election, _configmap()["k8s.ingress.election-id"])

    def test_deploymentPatchWatchesItsNamespace(self) -> None:
        """
        The Deployment patch sets only ``k8s.gateway.namespace``, from the
        pod's namespace (the Role's), which the base does not set and whose
        default (``""``, every namespace) the Role would not allow.
        """
        patch = _gateway_api_patch("Deployment")
        (container,) = patch["spec"]["template"]["spec"]["containers"]
        self.assertEqual(set(container), {"name", "env"})
        self.assertEqual(container["name"], _container()["name"])
        self.assertEqual(
            container["env"],
            [
                {
                    "name": "k8s.gateway.namespace",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                }
            ],
        )
        self.assertNotIn("k8s.gateway.namespace", [e["name"] for e in _container()["env"]])
        self.assertEqual(_DEFAULTS["k8s.gateway.namespace"], "")


def _readme_component(readme: Path, directory: str) -> dict[str, str]:
    """The files of a Component a README shows as YAML blocks headed ``# <dir>/<dir>/<file>``."""
    text = readme.read_text()
    files: dict[str, str] = {}
    for block in text.split("```yaml\n")[1:]:
        body = block.split("```", 1)[0]
        first = body.splitlines()[0]
        prefix = f"# apimgw-gw/{directory}/"
        if first.startswith(prefix):
            files[first[len(prefix) :]] = body
    return files


class GatewayApiBuildTests(_Kubectl):
    """
    ``kubectl kustomize`` of a kustomization holding ``k8s/`` and the Gateway
    API Component, as its README shows. Skipped where kubectl is not
    installed.
    """

    def _build_gateway_api(
        self, namespace: str | None = None, extra: dict[str, dict[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        kustomization: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(_K8S, directory)],
            "components": [os.path.relpath(_K8S / _GATEWAY_API, directory)],
        }
        for name, files in (extra or {}).items():
            (directory / name).mkdir()
            for file_name, text in files.items():
                (directory / name / file_name).write_text(text)
            kustomization["components"].append(name)
        if namespace is not None:
            kustomization["namespace"] = namespace
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return self._build(directory)

    def test_builds(self) -> None:
        """It builds, into the base's objects and the Component's."""
        built = self._build_gateway_api()
        self.assertEqual(
            sorted((d["kind"], d["metadata"]["name"]) for d in built),
            sorted(
                (d["kind"], d["metadata"]["name"]) for d in _shipped() + _gateway_api_resources()
            ),
        )

    def test_settingsReachTheGateway(self) -> None:
        """
        The built ConfigMap holds the base's settings and the Gateway API
        source's; the built Deployment sets ``k8s.gateway.namespace`` from
        the pod's namespace and keeps every variable of the base.
        """
        built = self._build_gateway_api()
        (configmap,) = [d for d in built if d["kind"] == "ConfigMap"]
        self.assertEqual(
            configmap["data"], dict(_configmap(), **_gateway_api_patch("ConfigMap")["data"])
        )
        (deployment,) = [d for d in built if d["kind"] == "Deployment"]
        env = _deployment_env(deployment)
        (entry,) = [e for e in env if e["name"] == "k8s.gateway.namespace"]
        self.assertEqual(entry["valueFrom"], {"fieldRef": {"fieldPath": "metadata.namespace"}})
        self.assertEqual([e for e in env if e is not entry], _container()["env"])

    def test_rbacIsAsComposed(self) -> None:
        """
        kustomize's RBAC objects are those :func:`gateway_api_rbac_documents`
        composes without it.
        """
        built = [d for d in self._build_gateway_api() if d["kind"] in _RBAC_KINDS]

        def key(doc: dict[str, Any]) -> tuple[str, str]:
            return (doc["kind"], doc["metadata"]["name"])

        self.assertEqual(sorted(built, key=key), sorted(gateway_api_rbac_documents(), key=key))

    def test_namespaceReachesTheBindings(self) -> None:
        """
        With ``namespace:`` set, the bindings name the ServiceAccount there
        (the ClusterRoleBinding's ``default`` rewritten), so the grants hold
        in that namespace. (kustomize also writes the namespace into the
        GatewayClass, a custom resource it cannot know to be cluster-scoped;
        the API server ignores it, as the fake API server does.)
        """
        built = self._build_gateway_api("apim-elsewhere")
        bindings = [
            d
            for d in built
            if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
            and d["metadata"]["name"] == "apimgw-gateway-api"
        ]
        self.assertEqual(len(bindings), 2)
        for binding in bindings:
            self.assertEqual(
                binding["subjects"],
                [{"kind": "ServiceAccount", "name": "apimgw", "namespace": "apim-elsewhere"}],
            )
        own = [
            d
            for d in built
            if d["kind"] in _RBAC_KINDS and d["metadata"]["name"] == "apimgw-gateway-api"
        ]
        self.assertEqual(
            _scoped_grants(rules_for_service_account(own, "apim-elsewhere", "apimgw")),
            _in_namespace(_GATEWAY_API_GRANTS, "apim-elsewhere"),
        )

    def test_readmeAllNamespacesComponent(self) -> None:
        """
        README.md's Component for every namespace builds after this one: the
        gateway then watches all namespaces (``k8s.gateway.namespace``
        ``""``), and its ClusterRole grants the Role's reads and status
        writes everywhere, nothing more, the Lease staying in the gateway's
        namespace.
        """
        files = _readme_component(_K8S / _GATEWAY_API / "README.md", "all-namespaces")
        self.assertEqual(set(files), {"kustomization.yaml", "rbac.yaml"})
        built = self._build_gateway_api("apim-elsewhere", {"all-namespaces": files})
        (deployment,) = [d for d in built if d["kind"] == "Deployment"]
        (entry,) = [e for e in _deployment_env(deployment) if e["name"] == "k8s.gateway.namespace"]
        self.assertEqual(entry, {"name": "k8s.gateway.namespace", "value": ""})
        rbac = [
            d for d in built if d["kind"] in _RBAC_KINDS and "gateway-api" in d["metadata"]["name"]
        ]
        everywhere = {
            (group, resource, verb, "cluster", name)
            for group, resource, verb, scope, name in _GATEWAY_API_GRANTS
            if scope == "default" and resource != "leases"
        }
        self.assertEqual(
            _scoped_grants(rules_for_service_account(rbac, "apim-elsewhere", "apimgw")),
            _in_namespace(_GATEWAY_API_GRANTS, "apim-elsewhere") | everywhere,
        )


class GatewayApiEnforcedTests(TestCase):
    """
    The Gateway API Component's RBAC (with the base's), enforced by the fake
    API server for the ``apimgw`` ServiceAccount: what the Gateway API
    source and its status writer do is answered, and the writes and scopes
    the Component leaves out are refused with 403.
    """

    async def test_grantsAllowWhatTheSourceDoes(self) -> None:
        server, admin = await start_fake(self)
        user = "system:serviceaccount:default:apimgw"
        server.add_token("sa-token", user)
        server.rbac.grant(
            user, rules_for_service_account(gateway_api_rbac_documents(), "default", "apimgw")
        )
        path = server.kubeconfig(os.path.abspath(self.mktemp() + ".kubeconfig"), token="sa-token")
        client = KubeClient(load_kubeconfig(path), reactor=reactor)
        self.addCleanup(client.close)
        (gateway_class,) = [d for d in _gateway_api_resources() if d["kind"] == "GatewayClass"]
        gateway_class = await admin.create(GATEWAY_CLASS, gateway_class)
        gateway = await admin.create(
            GATEWAY,
            {
                "metadata": {"name": "web"},
                "spec": {
                    "gatewayClassName": "apimgw",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                },
            },
            "default",
        )
        await admin.create(
            HTTP_ROUTE,
            {"metadata": {"name": "r"}, "spec": {"parentRefs": [{"name": "web"}]}},
            "default",
        )
        await admin.create(
            REFERENCE_GRANT, {"metadata": {"name": "g"}, "spec": {"from": [], "to": []}}, "default"
        )
        await admin.create(NAMESPACE, {"metadata": {"name": "other"}})

        # Everything the source lists (and so watches), where it lists it.
        for kind, namespace in (
            (GATEWAY_CLASS, None),
            (GATEWAY, "default"),
            (HTTP_ROUTE, "default"),
            (REFERENCE_GRANT, "default"),
            (SERVICE, "default"),
            (SECRET, "default"),
            (NAMESPACE, None),
        ):
            await client.list(kind, namespace)
        accepted = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}
        written = await client.update_status(GATEWAY_CLASS, dict(gateway_class, status=accepted))
        self.assertEqual(written["status"], accepted)
        await client.update_status(GATEWAY, dict(gateway, status=accepted))
        await client.patch(
            HTTP_ROUTE, "default", "r", {"status": {"parents": []}}, subresource="status"
        )
        lease = await client.create(LEASE, {"metadata": {"name": "apimgw-gateway-api"}}, "default")
        await client.update(LEASE, dict(lease, spec={"holderIdentity": "me"}))
        await client.get(LEASE, "default", "apimgw-gateway-api")

        refused: list[Callable[[], Deferred[Any]]] = [
            lambda: client.update(
                GATEWAY, dict(gateway, metadata=dict(gateway["metadata"], labels={"a": "b"}))
            ),
            lambda: client.patch(
                GATEWAY_CLASS, None, "apimgw", {"metadata": {"labels": {"a": "b"}}}
            ),
            lambda: client.delete(HTTP_ROUTE, "default", "r"),
            lambda: client.create(
                REFERENCE_GRANT, {"metadata": {"name": "mine"}, "spec": {}}, "default"
            ),
            lambda: client.patch(
                REFERENCE_GRANT, "default", "g", {"status": {}}, subresource="status"
            ),
            lambda: client.list(HTTP_ROUTE, "other"),
            lambda: client.list(GATEWAY, None),
            lambda: client.get(LEASE, "default", "another-lease"),
        ]
        for request in refused:
            with self.assertRaises(Forbidden):
                await request()
