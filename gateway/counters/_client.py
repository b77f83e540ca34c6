"""
A small Redis client on the reactor: one pipelined connection, kept open,
re-opened with backoff when it drops.

No thread per call and no blocking: every command is a write on the one
connection and a Deferred for its reply. While no connection is ready,
commands fail at once with :class:`RedisUnavailable` (the fallback then
decides locally, without waiting) — except during the very first connection
attempt, when they wait for it (bounded by the command timeout), so a
gateway that just started does not decide its first requests locally.

The connection is "ready" after its handshake: ``AUTH`` (when a password is
set), ``SELECT`` (db other than 0) and ``SCRIPT LOAD`` of our scripts, so
that a steady-state check is one ``EVALSHA``. A ``NOSCRIPT`` answer (script
cache flushed) is retried once with ``EVAL``, which also reloads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.application.internet import backoffPolicy
from twisted.internet import ssl
from twisted.internet.defer import Deferred, FirstError, fail, gatherResults
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.ready import OneShot

from ._connection import RedisProtocol
from ._errors import RedisAuthError, RedisNoScript, RedisTimeout, RedisUnavailable
from ._resp import Arg, Reply
from ._scripts import Script
from ._url import RedisAddress

__all__ = ["RedisClient"]


class RedisClient:
    """
    :param reactor: provides ``IReactorTime`` and ``IReactorTCP``.
    :param address: where Redis is (:func:`parse_redis_url`).
    :param scripts: loaded at each connection.
    :param connect_timeout: seconds for TCP, TLS and the handshake.
    :param command_timeout: seconds a command may wait for its reply.
    :param ca_file: PEM file of the CA that signs Redis's certificate
        (``rediss://``); the platform's trust store by default.
    :param tls_verify: ``False`` skips certificate verification (tests,
        never production).
    :param endpoint: overrides the endpoint built from ``address``.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        address: RedisAddress,
        *,
        scripts: Sequence[Script] = (),
        connect_timeout: float = 2.0,
        command_timeout: float = 0.25,
        ca_file: str | None = None,
        tls_verify: bool = True,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        self._reactor = reactor
        self.address = address
        self._scripts = tuple(scripts)
        self._connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._endpoint = endpoint or self._make_endpoint(ca_file, tls_verify)
        self._policy = backoffPolicy(initialDelay=0.05, maxDelay=5.0, factor=2.0)
        self._protocol: RedisProtocol | None = None
        self._ready: OneShot[RedisProtocol] = OneShot()
        self._first: OneShot[RedisProtocol] = OneShot()  # the first attempt's outcome
        self._attempt: Deferred[None] | None = None
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._ever_failed = False
        self._running = False
        self._logged: str | None = None
        self.last_error: Exception | None = None
        self._listeners: list[Callable[[], None]] = []
        self._lost_listeners: list[Callable[[Exception], None]] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Connect, and keep reconnecting with backoff until :meth:`stop`."""
        if not self._running:
            self._running = True
            self._connect()

    def stop(self) -> Deferred[None]:
        """Close the connection and stop reconnecting; fires when closed."""
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        protocol, self._protocol = self._protocol, None
        done: Deferred[None] = Deferred()
        if protocol is not None and protocol.transport is not None:
            protocol._on_lost = lambda _: done.callback(None)
            protocol.transport.loseConnection()
        else:
            done.callback(None)
        return done

    @property
    def connected(self) -> bool:
        """A handshaken connection is ready."""
        return self._protocol is not None

    def when_connected(self) -> Deferred[RedisProtocol]:
        """Fires when a connection is ready (at once if one is)."""
        return self._ready.when()

    def on_connected(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` each time a new connection becomes ready."""
        self._listeners.append(listener)

    def on_lost(self, listener: Callable[[Exception], None]) -> None:
        """Call ``listener(reason)`` each time a ready connection is lost."""
        self._lost_listeners.append(listener)

    # -- commands ----------------------------------------------------------

    def execute(self, *args: Arg, timeout: float | None = None) -> Deferred[Reply]:
        """Send one command on the ready connection (pipelined)."""
        timeout = self.command_timeout if timeout is None else timeout
        protocol = self._protocol
        if protocol is not None:
            return protocol.command(args, timeout)
        if self._running and not self._ever_failed:
            waiting = self._first.when()
            waiting.addTimeout(timeout, self._reactor, lambda *_: self._raise_timeout())
            return waiting.addCallback(lambda p: p.command(args, timeout))
        return fail(RedisUnavailable(self._why_not()))

    def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Deferred[Reply]:
        """Run ``script`` by its SHA; on ``NOSCRIPT``, once more with its source."""
        d = self.execute(b"EVALSHA", script.sha, len(keys), *keys, *args)

        def reload(failure: Failure) -> Deferred[Reply]:
            failure.trap(RedisNoScript)
            return self.execute(b"EVAL", script.source, len(keys), *keys, *args)

        return d.addErrback(reload)

    # -- connection management --------------------------------------------

    def _why_not(self) -> str:
        where = str(self.address)
        if self.last_error is None:
            return f"not connected to Redis at {where}"
        return f"not connected to Redis at {where}: {self.last_error}"

    def _make_endpoint(self, ca_file: str | None, tls_verify: bool) -> IStreamClientEndpoint:
        address = self.address
        tcp: IStreamClientEndpoint
        # An IP literal needs no resolver thread, and fails at once when
        # refused (HostnameEndpoint waits for its other attempts).
        if isIPAddress(address.host):
            tcp = TCP4ClientEndpoint(self._reactor, address.host, address.port, self._connect_timeout)
        elif isIPv6Address(address.host):
            tcp = TCP6ClientEndpoint(self._reactor, address.host, address.port, self._connect_timeout)
        else:
            tcp = HostnameEndpoint(
                self._reactor, address.host, address.port, timeout=self._connect_timeout
            )
        if not address.tls:
            return tcp
        if not tls_verify:
            creator = ssl.CertificateOptions(verify=False)
        else:
            trust = None
            if ca_file is not None:
                with open(ca_file, "rb") as f:
                    trust = ssl.Certificate.loadPEM(f.read())
            creator = ssl.optionsForClientTLS(address.host, trustRoot=trust)
        return wrapClientTLS(creator, tcp)  # type: ignore[arg-type]

    def _connect(self) -> None:
        self._retry = None
        if not self._running:
            return
        factory = Factory.forProtocol(lambda: RedisProtocol(self._reactor, self._lost))
        attempt = self._endpoint.connect(factory)
        attempt.addCallback(self._handshake)
        attempt.addCallbacks(self._connected, self._failed)
        self._attempt = attempt

    def _handshake(self, protocol: RedisProtocol) -> Deferred[RedisProtocol]:
        address = self.address
        t = self._connect_timeout
        steps: list[Deferred[Reply]] = []
        if address.password is not None:
            auth: list[Arg] = [b"AUTH"]
            if address.username:
                auth.append(address.username)
            auth.append(address.password)
            steps.append(protocol.command(auth, t))
        if address.db:
            steps.append(protocol.command([b"SELECT", address.db], t))
        for script in self._scripts:
            steps.append(protocol.command([b"SCRIPT", b"LOAD", script.source], t))
        steps.append(protocol.command([b"PING"], t))

        def check(_: object) -> RedisProtocol:
            return protocol

        def close(failure: Failure) -> Failure:
            if failure.check(FirstError):
                failure = failure.value.subFailure
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
            if failure.check(RedisAuthError):
                failure = Failure(
                    RedisAuthError(
                        f"Redis at {address} refused the password "
                        f"(user {address.username or 'default'}): {failure.getErrorMessage()}"
                    )
                )
            return failure

        # Pipelined: the steps are all written at once; the first error
        # fails the handshake (and the connection).
        return gatherResults(steps, consumeErrors=True).addCallbacks(check, close)

    def _connected(self, protocol: RedisProtocol) -> None:
        self._attempt = None
        if not self._running:
            if protocol.transport is not None:
                protocol.transport.loseConnection()
            return
        if protocol._lost is not None:  # lost during the handshake's last step
            self._failed(Failure(protocol._lost))
            return
        self._protocol = protocol
        self._failures = 0
        self.last_error = None
        self._logged = None
        self._log.info("Connected to Redis at {address}", address=str(self.address))
        self._ready.fire(protocol)
        self._first.fire(protocol)
        for listener in list(self._listeners):
            listener()

    def _failed(self, failure: Failure) -> None:
        self._attempt = None
        if not self._running:
            return
        self._ever_failed = True
        error = failure.value
        self.last_error = error if isinstance(error, Exception) else RedisUnavailable(str(error))
        self._first.fail(RedisUnavailable(self._why_not()))  # commands waiting for the first connection
        message = f"{type(error).__name__}: {failure.getErrorMessage()}"
        if message != self._logged:  # one line per distinct failure, not per retry
            self._logged = message
            log = self._log.error if failure.check(RedisAuthError) else self._log.warn
            log("Cannot connect to Redis at {address}: {error}", address=str(self.address), error=message)
        self._schedule()

    def _lost(self, reason: Exception) -> None:
        # Also called for connections lost during their handshake: those are
        # reported through _failed by the handshake's Deferred.
        if self._protocol is None or self._protocol._lost is not reason:
            return
        self._protocol = None
        self._ever_failed = True
        self.last_error = reason
        self._ready.reset()
        self._schedule()
        for listener in list(self._lost_listeners):
            listener(reason)

    def _schedule(self) -> None:
        if not self._running or self._retry is not None:
            return
        self._failures += 1
        self._retry = self._reactor.callLater(self._policy(self._failures), self._connect)

    def _raise_timeout(self) -> None:
        raise RedisTimeout(f"no connection to Redis at {self.address} within the command timeout")
