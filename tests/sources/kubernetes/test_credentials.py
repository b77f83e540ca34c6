"""
Tests for :mod:`gateway.sources.kubernetes._credentials`: kubeconfig and
in-cluster loading through the ``kubernetes`` package's loaders, the
choice between them, loading off the reactor thread, and the token source
that follows a rotating token file.
"""

from __future__ import annotations

import base64
import os
import threading

import yaml
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.sources.kubernetes import (
    ClusterCredentials,
    CredentialsError,
    TokenSource,
    load_credentials,
    load_credentials_in_thread,
    load_in_cluster,
    load_kubeconfig,
)
from gateway.testing.fakekube import FakeKubeServer


def write_kubeconfig(
    path: str,
    *,
    server: str = "https://192.0.2.10:6443",
    user: dict | None = None,  # type: ignore[type-arg]
    cluster_extra: dict | None = None,
    namespace: str | None = None,
    name: str = "c",
) -> str:
    cluster = {"server": server}
    cluster.update(cluster_extra or {})
    context = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user if user is not None else {"token": "s3cr3t-value"}}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


class KubeconfigTests(SynchronousTestCase):
    """Loading a kubeconfig."""

    def test_token(self) -> None:
        """
        A kubeconfig with a token gives the server, a Bearer authorization and the context's
        namespace.
        """
        path = write_kubeconfig(self.mktemp(), namespace="apps")
        credentials = load_kubeconfig(path)
        self.assertEqual(credentials.server, "https://192.0.2.10:6443")
        self.assertEqual(credentials.authorization, "Bearer s3cr3t-value")
        self.assertIsNone(credentials.token_file)
        self.assertEqual(credentials.namespace, "apps")
        self.assertTrue(credentials.verify_tls)
        self.assertNotIn("s3cr3t", repr(credentials))

    def test_tls_material_inline(self) -> None:
        """certificate-authority-data and client certificate data come out as PEM bytes."""
        server = FakeKubeServer(tls=True)
        cert, key = server.issue_client_certificate("me")
        path = server.kubeconfig(self.mktemp(), client_certificate=(cert, key))
        credentials = load_kubeconfig(path)
        self.assertEqual(credentials.ca_pem, server.ca_pem)
        self.assertEqual((credentials.client_cert_pem, credentials.client_key_pem), (cert, key))
        self.assertIsNone(credentials.authorization)

    def test_ca_file_relative(self) -> None:
        """A certificate-authority file named relative to the kubeconfig is read from beside it."""
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "ca.pem"), "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        path = write_kubeconfig(
            os.path.join(directory, "config"), cluster_extra={"certificate-authority": "ca.pem"}
        )
        self.assertTrue(load_kubeconfig(path).ca_pem.startswith(b"-----BEGIN CERTIFICATE-----"))

    def test_token_file_relative(self) -> None:
        """
        A tokenFile is kept as a path (resolved against the kubeconfig's directory) instead of a
        fixed header.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "token"), "w") as f:
            f.write("from-file")
        path = write_kubeconfig(os.path.join(directory, "config"), user={"tokenFile": "token"})
        credentials = load_kubeconfig(path)
        self.assertEqual(credentials.token_file, os.path.join(os.path.abspath(directory), "token"))
        self.assertIsNone(credentials.authorization)
        self.assertEqual(TokenSource(credentials).header(), "Bearer from-file")

    def test_basic_auth(self) -> None:
        """A username and password become a Basic authorization."""
        path = write_kubeconfig(self.mktemp(), user={"username": "u", "password": "p"})
        expected = "Basic " + base64.b64encode(b"u:p").decode()
        self.assertEqual(load_kubeconfig(path).authorization, expected)

    def test_insecure_and_server_name(self) -> None:
        """insecure-skip-tls-verify and tls-server-name are carried over."""
        path = write_kubeconfig(
            self.mktemp(),
            cluster_extra={
                "insecure-skip-tls-verify": True,
                "tls-server-name": "kubernetes.default",
            },
        )
        credentials = load_kubeconfig(path)
        self.assertFalse(credentials.verify_tls)
        self.assertEqual(credentials.tls_server_name, "kubernetes.default")

    def test_kubeconfig_variable(self) -> None:
        """
        Without a path, KUBECONFIG is used, and of several files the first one's current-context
        wins, as with kubectl.
        """
        first = write_kubeconfig(self.mktemp(), server="https://192.0.2.1:6443", name="one")
        second = write_kubeconfig(self.mktemp(), server="https://192.0.2.2:6443", name="two")
        credentials = load_kubeconfig(environ={"KUBECONFIG": f"{first}:{second}"})
        self.assertEqual(credentials.server, "https://192.0.2.1:6443")

    def test_context_choice(self) -> None:
        """An explicit context is used instead of current-context."""
        first = write_kubeconfig(self.mktemp(), server="https://192.0.2.1:6443", name="one")
        second = write_kubeconfig(self.mktemp(), server="https://192.0.2.2:6443", name="two")
        credentials = load_kubeconfig(f"{first}:{second}", context="two")
        self.assertEqual(credentials.server, "https://192.0.2.2:6443")

    def test_missing(self) -> None:
        """A kubeconfig that does not exist is a CredentialsError."""
        with self.assertRaises(CredentialsError):
            load_kubeconfig(self.mktemp())


class InClusterTests(SynchronousTestCase):
    """The pod's service account."""

    def mount(self) -> tuple[str, str, str]:
        directory = self.mktemp()
        os.makedirs(directory)
        paths = tuple(os.path.join(directory, n) for n in ("token", "ca.crt", "namespace"))
        for path, content in zip(
            paths,
            (
                "sa-token",
                "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n",
                "gateway-ns",
            ),
        ):
            with open(path, "w") as f:
                f.write(content)
        return paths  # type: ignore[return-value]

    def test_service_account(self) -> None:
        """
        The server comes from the service environment, the CA and namespace from the mount, and the
        token stays a file.
        """
        token, ca, namespace = self.mount()
        environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
        credentials = load_in_cluster(
            environ=environ, token_path=token, ca_path=ca, namespace_path=namespace
        )
        self.assertEqual(credentials.server, "https://10.96.0.1:443")
        self.assertEqual(credentials.token_file, token)
        self.assertIsNone(credentials.authorization)
        self.assertTrue(credentials.ca_pem.startswith(b"-----BEGIN"))
        self.assertEqual(credentials.namespace, "gateway-ns")
        self.assertEqual(TokenSource(credentials).header(), "Bearer sa-token")

    def test_ipv6_service_host(self) -> None:
        """An IPv6 service host is bracketed in the URL."""
        token, ca, namespace = self.mount()
        environ = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
        credentials = load_in_cluster(
            environ=environ, token_path=token, ca_path=ca, namespace_path=namespace
        )
        self.assertEqual(credentials.server, "https://[fd00::1]:443")

    def test_not_in_a_pod(self) -> None:
        """Without the service environment, in-cluster loading is a CredentialsError."""
        token, ca, namespace = self.mount()
        with self.assertRaises(CredentialsError):
            load_in_cluster(environ={}, token_path=token, ca_path=ca, namespace_path=namespace)


class ChoiceTests(SynchronousTestCase):
    """Which credentials :func:`load_credentials` picks."""

    def test_explicit_path_first(self) -> None:
        """An explicit kubeconfig path wins even inside a pod."""
        path = write_kubeconfig(self.mktemp(), server="https://192.0.2.5:6443")
        chosen = load_credentials(
            path,
            environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            in_cluster=lambda: self.fail("in-cluster used"),
        )
        self.assertEqual(chosen.server, "https://192.0.2.5:6443")

    def test_in_cluster_next(self) -> None:
        """In a pod without a path, the service account is used."""
        marker = ClusterCredentials(server="https://10.96.0.1:443")
        chosen = load_credentials(
            None, environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, in_cluster=lambda: marker
        )
        self.assertIs(chosen, marker)

    def test_kubeconfig_variable_last(self) -> None:
        """Outside a pod without a path, KUBECONFIG is used."""
        path = write_kubeconfig(self.mktemp(), server="https://192.0.2.6:6443")
        self.assertEqual(
            load_credentials(None, environ={"KUBECONFIG": path}).server, "https://192.0.2.6:6443"
        )


class TokenSourceTests(SynchronousTestCase):
    """The authorization header of the next request."""

    def test_static(self) -> None:
        """Without a token file the fixed authorization is used."""
        source = TokenSource(ClusterCredentials(server="https://x", authorization="Bearer a"))
        self.assertEqual(source.header(), "Bearer a")
        self.assertFalse(source.refreshable)

    def test_rotation(self) -> None:
        """A replaced token file is read again on the next call; an unchanged one is not re-read."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("one\n")
        source = TokenSource(ClusterCredentials(server="https://x", token_file=path))
        self.assertEqual(source.header(), "Bearer one")
        reads = []
        real_open = open

        def counting_open(*args, **kwargs):  # type: ignore[no-untyped-def]
            reads.append(args[0])
            return real_open(*args, **kwargs)

        import builtins

        self.patch(builtins, "open", counting_open)
        self.assertEqual(source.header(), "Bearer one")
        self.assertEqual(reads, [])
        with real_open(path + ".new", "w") as f:
            f.write("two")
        os.replace(path + ".new", path)
        self.assertEqual(source.header(), "Bearer two")
        self.assertEqual(reads, [path])

    def test_missing_file_keeps_token(self) -> None:
        """A token file that is briefly missing keeps the last token rather than sending none."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("one")
        source = TokenSource(ClusterCredentials(server="https://x", token_file=path))
        self.assertEqual(source.header(), "Bearer one")
        os.remove(path)
        self.assertEqual(source.header(), "Bearer one")

    def test_refresh_hook(self) -> None:
        """refresh_blocking runs the loader's hook and reports whether the value changed."""
        values = iter(["Bearer b", "Bearer b"])
        source = TokenSource(
            ClusterCredentials(
                server="https://x", authorization="Bearer a", refresh=lambda: next(values)
            )
        )
        self.assertTrue(source.refresh_blocking())
        self.assertEqual(source.header(), "Bearer b")
        self.assertFalse(source.refresh_blocking())


class ThreadTests(TestCase):
    """Loading off the reactor thread."""

    async def test_loads_in_a_thread(self) -> None:
        """
        load_credentials_in_thread runs the loader outside the reactor thread and delivers its
        result.
        """
        path = write_kubeconfig(self.mktemp(), server="https://192.0.2.7:6443")
        import gateway.sources.kubernetes._credentials as module

        threads = []
        real = module.load_credentials

        def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread())
            return real(*args, **kwargs)

        self.patch(module, "load_credentials", spy)
        credentials = await load_credentials_in_thread(reactor, path)
        self.assertEqual(credentials.server, "https://192.0.2.7:6443")
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())
