"""
A leaner I/O dispatch for the epoll reactor.

For every ready file descriptor, ``EPollReactor.doPoll`` calls
``log.callWithLogger(selectable, ...)``: it asks the selectable for its
log prefix and pushes a legacy logging context (a dict copy and a context
stack push and pop) so that old-style ``log.msg`` calls made while handling
the event are tagged with it. A proxied request takes several such events
(client read, backend write and read, client write), and py-spy put this
wrapping at about 15% of the gateway's CPU per request
(``docs/benchmarks.md``).

:func:`streamline` replaces the reactor's ``doIteration`` with the same
loop minus that wrapping, and handles the common event (readable, nothing
else) inline: ``doRead`` and, when it says the connection is done, the
reactor's own disconnect, as ``_doReadOrWrite`` would (two calls and a
``fileno()`` check fewer per event; a proxied request is two such
events). What changes: legacy log lines emitted while
handling I/O show the system ``-`` instead of e.g.
``HTTPChannel,5,127.0.0.1`` (the gateway logs through ``twisted.logger``
namespaces, which are unaffected). What stays: ``_doReadOrWrite`` still
turns an exception from ``doRead``/``doWrite`` into a logged failure and a
disconnect, and an exception from the disconnect itself is logged as
``callWithLogger`` would.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import Any

from twisted.logger import Logger

__all__ = ["after_io", "after_io_queue", "streamline"]

_log = Logger(namespace="apimgw.dispatch")

#: The attribute of a streamlined reactor holding the callbacks
#: :func:`after_io` queued.
_AFTER_IO = "_apimgw_after_io"


def after_io(reactor: Any, callback: Any) -> bool:
    """
    Run ``callback()`` once, at the end of the reactor iteration under way:
    after the I/O events of this iteration were handled (or, when queued
    from a timer, before the next wait for events). Returns ``False`` on a
    reactor :func:`streamline` did not install on (a test's, another
    kind): the caller then uses ``callLater(0, ...)``.

    Why not ``callLater(0)``: a timer due now makes the reactor's next wait
    for events a zero-timeout poll, so under load every iteration handles
    fewer events and costs more per request (measured with the access
    log's writer, which batches its lines per iteration: see
    docs/benchmarks.md).
    """
    queued = getattr(reactor, _AFTER_IO, None)
    if queued is None:
        return False
    queued.append(callback)
    return True


def after_io_queue(reactor: Any) -> list[Any] | None:
    """
    The list :func:`after_io` appends to on ``reactor`` (a caller queueing
    often appends to it directly), or ``None`` on a reactor
    :func:`streamline` did not install on.
    """
    return getattr(reactor, _AFTER_IO, None)


def _run_after_io(queued: list[Any]) -> None:
    """Run (and forget) the callbacks :func:`after_io` queued; one failing does not stop the others."""
    callbacks = queued[:]
    del queued[:]
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - one failing callback must not stop the others
            _log.failure("End-of-iteration callback {callback} failed", callback=callback)


def streamline(reactor: Any) -> bool:
    """
    Install the lean dispatch on ``reactor`` if it is Twisted's
    ``EPollReactor`` itself (not a subclass, whose dispatch may differ);
    returns whether it did.
    """
    from twisted.internet.epollreactor import EPollReactor

    if type(reactor) is not EPollReactor:
        return False
    if getattr(reactor, _AFTER_IO, None) is not None:
        # Installed already: its queue stays the one callers hold
        # (gateway.netio's writers keep it).
        return True

    queued: list[Any] = []
    setattr(reactor, _AFTER_IO, queued)

    def do_poll(timeout: float | None) -> None:
        if queued:
            # Queued by the timers the reactor just ran: before the wait.
            _run_after_io(queued)
        if timeout is None:
            timeout = -1
        selectables = reactor._selectables
        try:
            events = reactor._poller.poll(timeout, len(selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        dispatch = reactor._doReadOrWrite
        disconnect = reactor._disconnectSelectable
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                if event == EPOLLIN:
                    # The common event (data, or the peer's FIN, to read):
                    # what _doReadOrWrite does for it, without its flag
                    # tests and its fileno() check (a selectable that is
                    # closed is no longer in _selectables).
                    try:
                        why = selectable.doRead()
                    except BaseException:  # noqa: BLE001 - as _doReadOrWrite
                        # As _doReadOrWrite: logged, and the selectable is
                        # disconnected.
                        why = sys.exc_info()[1]
                        _log.failure("Unhandled error in doRead of {selectable}",
                                     selectable=selectable)
                    if why:
                        disconnect(selectable, why, True)
                else:
                    dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:  # noqa: BLE001 - as callWithLogger: logged, the loop goes on
                _log.failure("Unhandled error while handling I/O on {selectable}", selectable=selectable)
        if queued:
            _run_after_io(queued)

    reactor.doIteration = do_poll
    return True
