"""
apimgw's test suite.

It runs on the reactor dispatch ``twistd apimgw`` runs on
(:func:`gateway.dispatch.streamline`): the end-of-iteration callbacks, and
with them the connections' held writes (:mod:`gateway.netio`), are the
production ones, not a fallback.
"""

import warnings

from twisted.internet import reactor

from gateway.dispatch import streamline

if not streamline(reactor):
    # Another platform or --reactor: the fallbacks (writes at once, a
    # zero-delay timer) are what runs, not what twistd runs on Linux.
    warnings.warn(
        f"the suite runs on {type(reactor).__name__}, not the streamlined epoll reactor",
        stacklevel=1,
    )
