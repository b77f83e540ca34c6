"""
What the Kubernetes sources (Ingress, Gateway API) do the same way around
their own objects: reach the API server (credentials loaded off the
reactor thread, retried with backoff), elect the one replica that writes
status (:class:`Leadership`), and say why a first list failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ._client import KubeClient
from ._credentials import load_credentials_in_thread
from ._election import LeaderElection
from ._errors import ApiError

__all__ = ["Leadership", "connect", "list_failure"]

_log = Logger(namespace="apimgw")


async def connect(
    reactor: Any,
    config_path: str | None,
    environ: Mapping[str, str],
    *,
    label: str,
    running: Callable[[], bool],
    backoff: Callable[[int], float],
    failed: Callable[[str], None],
) -> KubeClient | None:
    """
    A client for the cluster's API server: credentials loaded (kubeconfig
    at ``config_path``, else the pod's service account, else
    ``KUBECONFIG``) in a thread, retried after ``backoff(attempt)`` seconds
    with an error line naming ``label`` and ``failed(why)`` called, for as
    long as ``running()``; ``None`` once it is not.
    """
    attempt = 0
    while running():
        try:
            credentials = await load_credentials_in_thread(reactor, config_path, environ=environ)
        except Exception as e:  # noqa: BLE001 (any failure: retried, and said)
            attempt += 1
            delay = backoff(attempt)
            _log.error(
                "{label}: cannot load credentials ({error}); retrying in {delay:.0f} s",
                label=label,
                error=f"{type(e).__name__}: {e}",
                delay=delay,
            )
            failed(str(e))
            await deferLater(reactor, delay, lambda: None)
            continue
        if not running():
            return None
        _log.info(
            "{label}: API server {server} ({origin})",
            label=label,
            server=credentials.server,
            origin=credentials.origin,
        )
        return KubeClient(credentials, reactor=reactor)
    return None


def list_failure(plural: str, error: Exception) -> str:
    """Why a first list failed, as the readiness reason and the log say it."""
    if isinstance(error, ApiError):
        # 401, 403 (RBAC), 404 (an API group or CRD the cluster lacks): not
        # an outage, a setup problem the operator must fix; say which.
        return f"the API server refused to list {plural} ({error})"
    return f"the API server cannot be reached ({type(error).__name__}: {error})"


class Leadership:
    """
    Whether this replica writes a source's status, and who wants to know.

    With an election id, a :class:`LeaderElection` on the Lease of that
    name decides (in the pod's namespace, else the credentials', else the
    watched one); without one, this replica leads from the start.

    :ivar election: the election, once started with an id.
    """

    def __init__(
        self,
        *,
        label: str,
        what: str,
        identity: str,
        reactor: Any,
        election_id: str | None,
        lease_timing: tuple[float, float, float],
        environ: Mapping[str, str],
    ) -> None:
        """
        :param label: the source's name in log lines.
        :param what: what the leader writes, for the log line when this
            replica starts leading.
        :param lease_timing: lease duration, renew deadline, retry period.
        """
        self._label = label
        self._what = what
        self.identity = identity
        self._reactor = reactor
        self._election_id = election_id
        self._lease_timing = lease_timing
        self._environ = environ
        self.election: LeaderElection | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self._started = False

    def start(self, parent: MultiService, client: KubeClient, watched: str | None) -> None:
        """Run the election under ``parent`` (or lead at once without one)."""
        if self._election_id:
            duration, deadline, retry = self._lease_timing
            self.election = LeaderElection(
                client,
                reactor=self._reactor,
                namespace=(
                    self._environ.get("POD_NAMESPACE")
                    or client.credentials.namespace
                    or watched
                    or "default"
                ),
                name=self._election_id,
                identity=self.identity,
                lease_duration=duration,
                renew_deadline=deadline,
                retry_period=retry,
                on_started_leading=self._started_leading,
                on_stopped_leading=lambda: self._tell(False),
            )
            self.election.setServiceParent(parent)
        else:
            self._started_leading()
        self._started = True

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """
        Call ``listener(True)`` when this replica starts leading and
        ``listener(False)`` when it stops; called at once with the current
        state when the election has started (the listener may come late).
        """
        self._listeners.append(listener)
        if self._started:
            listener(self.leading)

    @property
    def leading(self) -> bool:
        """Whether this replica writes status (no election: always)."""
        return self.election is None or self.election.is_leader

    def _started_leading(self) -> None:
        _log.info(
            "{label}: {identity} now writes {what}",
            label=self._label,
            identity=self.identity,
            what=self._what,
        )
        self._tell(True)

    def _tell(self, leading: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(leading)
            except Exception:  # noqa: BLE001 (one listener never stops the others)
                _log.failure("{label}: a leadership listener raised", label=self._label)
