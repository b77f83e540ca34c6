"""
``twistd apimgw-config``: command-line options and the service tree.

The only module that touches the global reactor. The service opens (and
migrates) the database first; the two listeners start listening only once
that is done, so no request ever meets an unmigrated schema. At shutdown
the long polls are answered first, then the listeners close, then the
database.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python import usage
from twisted.web.server import Site

from ._feed import ChangeFeed
from ._gatewayapi import GatewayApi
from ._http import JsonResource
from ._instances import Instances
from ._management import ManagementApi
from ._schema import connect, migrate
from ._store import ConfigStore

__all__ = ["ADMIN_KEY_ENV", "ConfigService", "Options", "build_service", "makeService"]

#: The environment variable holding the admin key (preferred to the
#: command line, which ``ps`` shows to every local user).
ADMIN_KEY_ENV = "APIMGW_CONFIG_ADMIN_KEY"
_MIN_KEY = 16

_log = Logger(namespace="apimgw-config")


class Options(usage.Options):
    """Options of ``twistd apimgw-config``."""

    synopsis = "[--db FILE] [--listen ENDPOINT] [--management ENDPOINT] [--admin-key KEY]"
    longdesc = (
        "apimgw-config: the configuration service of apimgw gateways. Gateways fetch their "
        "configuration, follow its changes and send heartbeats on --listen; operators manage "
        "APIs, products, subscriptions, policies, certificates and gateways through the REST "
        "API on --management (Authorization: Bearer <admin key>). Endpoints are strports "
        "descriptions, e.g. tcp:8090:interface=0.0.0.0 or ssl:8443:privateKey=key.pem:"
        f"certKey=cert.pem. The admin key is taken from --admin-key, --admin-key-file or "
        f"${ADMIN_KEY_ENV}. Gateway tokens: python -m configservice token --help."
    )
    optParameters = [
        ["db", None, "apimgw-config.db", "SQLite database file (created and migrated on start)."],
        ["listen", None, "tcp:8090", "Endpoint of the gateway-facing API."],
        ["management", None, "tcp:8091:interface=127.0.0.1", "Endpoint of the management API."],
        ["admin-key", None, None, f"Bearer key of the management API (or ${ADMIN_KEY_ENV})."],
        ["admin-key-file", None, None, "A file holding the admin key (e.g. a mounted Secret)."],
        ["retain-events", None, "10000",
         "How many change events to keep; a gateway further behind refetches the snapshot."],
        ["heartbeat-interval", None, "60",
         "Seconds between gateway heartbeats; an instance is alive for 3 intervals."],
        ["max-wait", None, "60", "The longest a change-feed long poll is held, in seconds."],
    ]

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        super().__init__()
        self._environ = os.environ if environ is None else environ

    def postOptions(self) -> None:
        key = self["admin-key"]
        if key is None and self["admin-key-file"]:
            try:
                with open(self["admin-key-file"], encoding="utf-8") as f:
                    key = f.read().strip()
            except OSError as e:
                raise usage.UsageError(f"--admin-key-file: cannot read it ({e.strerror})") from None
        if key is None:
            key = self._environ.get(ADMIN_KEY_ENV)
        if not key or len(key.strip()) < _MIN_KEY:
            raise usage.UsageError(
                f"an admin key of at least {_MIN_KEY} characters is required: --admin-key, "
                f"--admin-key-file or ${ADMIN_KEY_ENV}"
            )
        self["admin-key"] = key.strip()
        self["retain-events"] = self._number("retain-events", int, 1)
        self["heartbeat-interval"] = self._number("heartbeat-interval", float, 0.001)
        self["max-wait"] = self._number("max-wait", float, 0)

    def _number(self, name: str, kind: type, minimum: float) -> Any:
        try:
            value = kind(self[name])
        except (TypeError, ValueError):
            raise usage.UsageError(f"--{name} must be a number, not {self[name]!r}") from None
        if value < minimum:
            raise usage.UsageError(f"--{name} must be at least {minimum}")
        return value


class _Connections(WrappingFactory):
    """
    The site's factory, keeping track of open connections, so stopping
    closes the idle keep-alive ones instead of leaving them to the OS.
    """

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self._empty: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:  # noqa: N802 (Twisted's name)
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._empty = self._empty, []
            for d in waiting:
                d.callback(None)

    def close_all(self) -> Deferred[None]:
        """Close every connection (after what it is writing); fires once all are closed."""
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._empty.append(d)
        for protocol in list(self.protocols):
            protocol.transport.loseConnection()
        return d


class _Listener(Service):
    """One listening port, opened once the database is ready; ``port`` for tests (port 0)."""

    def __init__(self, reactor: Any, name: str, description: str, site: Site,
                 ready: Callable[[], Deferred[bool]], fatal: Callable[[str], None]) -> None:
        self._reactor = reactor
        self.name = name
        self._description = description
        self._factory = _Connections(site)
        self._ready = ready
        self._fatal = fatal
        self.port: Any = None
        self._waiting: list[Deferred[Any]] = []

    def when_listening(self) -> Deferred[Any]:
        """Fires with the listening port (at once if it listens already)."""
        if self.port is not None:
            return succeed(self.port)
        d: Deferred[Any] = Deferred()
        self._waiting.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        self._ready().addCallback(self._listen)

    def _listen(self, ready: bool) -> Any:
        if not ready or not self.running:
            return None
        d = serverFromString(self._reactor, self._description).listen(self._factory)
        return d.addCallbacks(self._listened, self._failed)

    def _listened(self, port: Any) -> Any:
        if not self.running:  # stopped while the port was opening
            return port.stopListening()
        self.port = port
        _log.info("{name} API listening on {address}", name=self.name, address=str(port.getHost()))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)
        return port

    def _failed(self, failure: Any) -> None:
        _log.failure("{name} API cannot listen on {description}", failure, name=self.name,
                     description=self._description)
        self._fatal(f"the {self.name} listener failed")

    def stopService(self) -> Any:
        super().stopService()
        if self.port is None:
            return None
        port, self.port = self.port, None
        d = maybeDeferred(port.stopListening)
        return d.addBoth(lambda _: self._factory.close_all())


class ConfigService(MultiService):
    """
    The service tree, with handles for tests and embedding: ``store``,
    ``feed``, ``instances`` and ``listeners`` (``gateway``, ``management``).
    """

    def __init__(self, store: ConfigStore, feed: ChangeFeed, instances: Instances,
                 on_fatal: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.store = store
        self.feed = feed
        self.instances = instances
        self.listeners: dict[str, _Listener] = {}
        self._on_fatal = on_fatal
        self._opened: bool | None = None
        self._waiting: list[Deferred[bool]] = []

    def when_ready(self) -> Deferred[bool]:
        """Fires with whether the database could be opened and migrated."""
        if self._opened is not None:
            return succeed(self._opened)
        d: Deferred[bool] = Deferred()
        self._waiting.append(d)
        return d

    def fatal(self, reason: str) -> None:
        _log.critical("Cannot run: {reason}", reason=reason)
        if self._on_fatal is not None:
            self._on_fatal(reason)

    def _settle(self, opened: bool) -> None:
        self._opened = opened
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(opened)

    def startService(self) -> None:
        self._opened = None

        def failed(failure: Any) -> None:
            _log.failure("Opening the database {path} failed", failure, path=self.store.path)
            self._settle(False)
            self.fatal(f"the database {self.store.path} cannot be opened")

        self.store.start().addCallbacks(lambda _: self._settle(True), failed)
        super().startService()

    def stopService(self) -> Deferred[Any]:
        self.feed.close()
        d = super().stopService()

        def close(result: Any) -> Any:
            self.store.close()
            return result

        return d.addBoth(close)


def build_service(
    options: Options,
    reactor: Any,
    *,
    clock: Any = None,
    on_fatal: Callable[[str], None] | None = None,
) -> ConfigService:
    """
    Compose the service from parsed options (testable without twistd).

    :param clock: the time of changes, tokens, heartbeats and long-poll
        timeouts; the reactor by default (tests pass a ``task.Clock``).
    """
    clock = reactor if clock is None else clock
    feed = ChangeFeed(clock)
    instances = Instances(clock, options["heartbeat-interval"])
    store = ConfigStore(options["db"], reactor, clock, retain=options["retain-events"],
                        on_commit=feed.notify)
    top = ConfigService(store, feed, instances, on_fatal)
    gateway = GatewayApi(store, feed, instances, clock, max_wait=options["max-wait"])
    management = ManagementApi(store, instances, clock, options["admin-key"])
    for name, description, api in (
        ("gateway", options["listen"], gateway),
        ("management", options["management"], management),
    ):
        site = Site(JsonResource(api.router(), api.authenticate, name))
        listener = _Listener(reactor, name, description, site, top.when_ready, top.fatal)
        listener.setServiceParent(top)
        top.listeners[name] = listener
    return top


def makeService(options: Options) -> IService:  # noqa: N802 (twistd's name)
    """
    twistd entry point. The database is opened and migrated once here,
    before the reactor runs, so a bad ``--db`` fails the command at once.
    """
    from twisted.internet import reactor

    try:
        connection = connect(options["db"])
        try:
            migrate(connection)
        finally:
            connection.close()
    except Exception as e:
        raise SystemExit(f"apimgw-config: cannot open the database {options['db']}: {e}") from None

    def stop(reason: str) -> None:
        if reactor.running:
            reactor.stop()

    return build_service(options, reactor, on_fatal=stop)
