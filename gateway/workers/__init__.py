"""
Worker processes: ``--workers N`` serve the traffic listeners in N
processes sharing the ports with ``SO_REUSEPORT``, while the sources, the
reconciler and the admin port run once, in the supervisor (docs/workers.md).

* :mod:`._cpus`: the default N, the CPUs the container may use;
* :mod:`._sockets`: the listening sockets, one per worker, in one group;
* :mod:`._messages`, :mod:`._channel`: what crosses the process boundary
  and how (length-prefixed pickles over a socket pair);
* :mod:`._supervisor`: spawn, roll configurations out one worker at a
  time, restart, drain;
* :mod:`._worker`, :mod:`._listener`: the worker's side;
* :mod:`._merge`, :mod:`._admin`: ``/metrics`` of all processes as one.
"""

from ._admin import MergedMetricsResource
from ._channel import Channel, ChannelFactory, encode, read_message
from ._cpus import available_cpus
from ._listener import AdoptedTrafficListener
from ._merge import merge_expositions
from ._messages import Applied, Changes, Scrape, Scraped, WorkerStart
from ._sockets import AddressInUse, ListenAddress, UnsupportedListener, bind_group, parse_listen
from ._supervisor import CHANNEL_FD, WORKER_COMMAND, StoreState, WorkerPool
from ._worker import WorkerLink

__all__ = [
    "CHANNEL_FD",
    "WORKER_COMMAND",
    "AddressInUse",
    "AdoptedTrafficListener",
    "Applied",
    "Changes",
    "Channel",
    "ChannelFactory",
    "ListenAddress",
    "MergedMetricsResource",
    "Scrape",
    "Scraped",
    "StoreState",
    "UnsupportedListener",
    "WorkerLink",
    "WorkerPool",
    "WorkerStart",
    "available_cpus",
    "bind_group",
    "encode",
    "merge_expositions",
    "parse_listen",
    "read_message",
]
