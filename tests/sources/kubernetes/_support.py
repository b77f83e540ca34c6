"""
Helpers shared by the Kubernetes tests: waiting for a condition with a
deadline (never a fixed sleep), and a fake API server with a client that
reaches it through a kubeconfig, as the gateway will.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from gateway.sources.kubernetes import NAMESPACE, ClusterCredentials, KubeClient, load_kubeconfig
from gateway.testing.fakekube import FakeKubeServer
from gateway.testing.waiting import wait_for

__all__ = [
    "REAL_KUBECONFIG_VARIABLE",
    "Backend",
    "fake_backend",
    "real_backend",
    "start_fake",
    "wait_for",
]

#: Names a kubeconfig: the contract suite then also runs against that cluster.
REAL_KUBECONFIG_VARIABLE = "APIMGW_TEST_KUBECONFIG"


async def start_fake(test: TestCase, **kwargs: Any) -> tuple[FakeKubeServer, KubeClient]:
    """
    A started fake API server (stopped at cleanup) and a client loaded from
    a kubeconfig the fake wrote (closed at cleanup).
    """
    kwargs.setdefault("bookmark_interval", 0.5)
    server = FakeKubeServer(reactor=reactor, **kwargs)
    await server.start()
    test.addCleanup(server.stop)
    path = server.kubeconfig(os.path.join(test.mktemp() + ".kubeconfig"))
    client = KubeClient(load_kubeconfig(path), reactor=reactor)
    test.addCleanup(client.close)
    return server, client


class Backend:
    """
    What the contract suite runs against: a client, a namespace of its
    own, and the one operation only a fake can do on demand.
    """

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        expire_history: Callable[[], None],
        credentials: ClusterCredentials,
        fake: FakeKubeServer | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.expire_history = expire_history
        self.credentials = credentials
        self.fake = fake


def _namespace_name() -> str:
    return f"apimgw-contract-{uuid.uuid4().hex[:10]}"


async def _own_namespace(test: TestCase, client: KubeClient) -> str:
    name = _namespace_name()
    await client.create(
        NAMESPACE, {"metadata": {"name": name, "labels": {"apimgw-test": "contract"}}}
    )

    def remove() -> Deferred[Any]:
        return client.delete(NAMESPACE, None, name)

    test.addCleanup(remove)
    return name


async def fake_backend(test: TestCase) -> Backend:
    """The fake API server, through a kubeconfig it wrote."""
    server, client = await start_fake(test)
    namespace = await _own_namespace(test, client)
    return Backend(client, namespace, server.compact, client.credentials, fake=server)


async def real_backend(test: TestCase, kubeconfig: str) -> Backend:
    """
    A real cluster named by a kubeconfig. History cannot be expired on
    demand there; the tests that need an expired version use version
    ``"1"``, which a cluster running for more than a moment has compacted
    (or never had in its watch cache).
    """
    from twisted.internet.threads import deferToThread

    credentials = await deferToThread(load_kubeconfig, kubeconfig)
    client = KubeClient(credentials, reactor=reactor)
    test.addCleanup(client.close)
    namespace = await _own_namespace(test, client)
    return Backend(client, namespace, lambda: None, credentials)
