"""
The heartbeat: ``POST /gateways/{id}/heartbeat`` with this instance's id,
host name, version and revision, so the service (and its operators, through
``GET /gateways/{id}/instances``) know which instances are alive and how
far each has applied the configuration.

The first one goes out as soon as the first snapshot from the service is
applied, then one every interval: an instance that waited a whole interval
(a minute by default) before its first heartbeat was listed as absent right
after it started serving.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cloudproto import Token, TokenError

from ._protocol import CloudClient

__all__ = ["DISTRIBUTION", "UNKNOWN_VERSION", "Heartbeat", "package_version"]

#: The distribution whose version the heartbeat reports (pyproject ``name``).
DISTRIBUTION = "apimgw"
#: The version reported when there is no package metadata (a source tree
#: not installed): says so, never a made-up release number.
UNKNOWN_VERSION = "0+unknown"


def package_version() -> str:
    """The installed ``apimgw`` version, or :data:`UNKNOWN_VERSION` without metadata."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


class Heartbeat:
    """
    Sends heartbeats on ``clock``: :meth:`start` sends one at once and then
    one every ``interval`` seconds; at most one is in flight.

    :ivar instances: the instance count the last answer reported.
    """

    _log = Logger()

    def __init__(
        self,
        client: Callable[[], CloudClient | None],
        token: Callable[[], Token],
        body: Callable[[], dict[str, Any]],
        clock: IReactorTime,
        interval: float,
    ) -> None:
        """
        :param client: the client to send with (``None``: not connected).
        :param token: the current token (may raise :class:`TokenError`).
        :param body: the heartbeat's body at the time it is sent.
        """
        self._client = client
        self._token = token
        self._body = body
        self._interval = interval
        self._loop = LoopingCall(self.send)
        self._loop.clock = clock
        self._request: Deferred[Any] | None = None
        self.instances: int | None = None

    @property
    def running(self) -> bool:
        """Whether the timer runs."""
        return self._loop.running

    def start(self) -> None:
        """Send one now, then every interval (no-op when running already)."""
        if not self._loop.running:
            self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        """Stop the timer and cancel a heartbeat in flight."""
        if self._loop.running:
            self._loop.stop()
        if self._request is not None:
            self._request.cancel()

    def send(self) -> None:
        """Send one heartbeat now (unless one is in flight)."""
        try:
            token = self._token()
        except TokenError:
            return  # reported by the source's main loop
        client = self._client()
        if self._request is not None or client is None:
            return
        d = client.heartbeat(token, self._body())

        def answered(answer: Any) -> None:
            if isinstance(answer, dict) and isinstance(answer.get("instances"), int):
                self.instances = answer["instances"]

        def failed(failure: Any) -> None:
            if not failure.check(CancelledError):
                self._log.debug("Heartbeat failed: {reason}", reason=str(failure.value))

        def done(_: Any) -> None:
            self._request = None

        d.addCallbacks(answered, failed)
        d.addBoth(done)
        self._request = d if not d.called else None
