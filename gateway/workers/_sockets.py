"""
The listening sockets the workers share: one per worker and listener, all
bound to the same address with ``SO_REUSEPORT``.

Why one socket per worker (kernel balancing) rather than one socket whose
descriptor every worker inherits (balancing by whoever accepts first):

* the kernel spreads new connections evenly over the sockets of a
  ``SO_REUSEPORT`` group by a hash of the connection's addresses, whereas
  with one shared socket every worker's epoll wakes for each connection
  and the least busy one tends to take a whole burst (keep-alive clients
  then stay unevenly spread for their whole life);
* the supervisor keeps its own copy of every socket, so when a worker
  dies its socket stays in the group and the connections the kernel
  queued on it wait for the restarted worker, which adopts the same
  socket, instead of being reset as they are when the last descriptor of
  a listening socket closes.

Trust: any process of the *same user* can bind its own ``SO_REUSEPORT``
socket to the port and take a share of the connections (the kernel only
checks the uid). We refuse to start on a port some other socket already
holds (:func:`bind_group` probes it first), but after that the group is
open to the same uid: run the gateway as a user no other workload shares
(docs/workers.md).

Only TCP descriptions (``tcp:PORT[:interface=ADDR][:backlog=N]``, and
``tcp6``) can be shared this way; anything else is refused with
``--workers`` above 1.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from twisted.internet.endpoints import _parse  # the strports tokenizer

__all__ = ["AddressInUse", "ListenAddress", "UnsupportedListener", "bind_group", "parse_listen"]


class UnsupportedListener(ValueError):
    """A listen description the workers cannot share."""


class AddressInUse(OSError):
    """
    Another socket (another process, or a gateway already running) holds
    the address: joining its ``SO_REUSEPORT`` group would split the
    traffic with it instead of failing.
    """


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A TCP listen description, parsed."""

    family: int
    host: str
    port: int
    backlog: int = 50


def parse_listen(description: str) -> ListenAddress:
    """
    Parse a ``tcp:`` or ``tcp6:`` strports description.

    :raises UnsupportedListener: another kind (``unix:``, ``systemd:``, ...).
    """
    args, kwargs = _parse(description)
    if not args or args[0] not in ("tcp", "tcp6"):
        raise UnsupportedListener(
            f"{description!r}: with more than one worker, listeners must be tcp: or tcp6: "
            "descriptions (the workers share them with SO_REUSEPORT)"
        )
    kind, rest = args[0], args[1:]
    if not rest and "port" not in kwargs:
        raise UnsupportedListener(f"{description!r}: no port")
    port = int(rest[0] if rest else kwargs["port"])
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    default = "::" if kind == "tcp6" else ""
    host = str(kwargs.get("interface", rest[2] if len(rest) > 2 else default))
    backlog = int(kwargs.get("backlog", rest[1] if len(rest) > 1 else 50))
    if ":" in host and kind == "tcp":
        family = socket.AF_INET6
    return ListenAddress(family, host, port, backlog)


def bind_group(address: ListenAddress, count: int) -> list[socket.socket]:
    """
    ``count`` listening sockets on ``address`` in one ``SO_REUSEPORT``
    group. Port 0 picks a port once: the others bind to the first one's.
    The sockets are non-blocking and inheritable (a worker adopts one).

    :raises AddressInUse: some socket already holds the address (see
        :func:`_probe`); the group is not bound.
    """
    port = _probe(address)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(address.family, socket.SOCK_STREAM)
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((address.host, port))
            s.listen(address.backlog)
            s.set_inheritable(True)
            # O_NONBLOCK belongs to the socket, shared by every descriptor
            # of it: the reactor adopting it in a worker needs it set.
            s.setblocking(False)
            port = s.getsockname()[1]
    except OSError:
        for s in sockets:
            s.close()
        raise
    return sockets


def _probe(address: ListenAddress) -> int:
    """
    Bind ``address`` once *without* ``SO_REUSEPORT`` and let go of it:
    with ``SO_REUSEPORT`` our group would silently join any same-uid
    listener already on the port (a second gateway, a stray process) and
    share its connections, where a plain bind fails with ``EADDRINUSE``.
    ``SO_REUSEADDR`` is kept so that connections of a previous run left in
    TIME_WAIT do not refuse the start, as they would not refuse the group.

    :return: the port (the one the kernel picked, for port 0).
    """
    probe = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address.host, address.port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            raise AddressInUse(
                errno.EADDRINUSE,
                f"{address.host or '*'}:{address.port} is already in use by another socket "
                "(another process or gateway listens there); not joining it with SO_REUSEPORT",
            ) from None
        return int(probe.getsockname()[1])
    finally:
        probe.close()
