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

__all__ = ["streamline"]

_log = Logger(namespace="apimgw.dispatch")


def streamline(reactor: Any) -> bool:
    """
    Install the lean dispatch on ``reactor`` if it is Twisted's
    ``EPollReactor`` itself (not a subclass, whose dispatch may differ);
    returns whether it did.
    """
    from twisted.internet.epollreactor import EPollReactor

    if type(reactor) is not EPollReactor:
        return False

    def do_poll(timeout: float | None) -> None:
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
                    except BaseException:
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
            except BaseException:
                _log.failure("Unhandled error while handling I/O on {selectable}", selectable=selectable)

    reactor.doIteration = do_poll
    return True
