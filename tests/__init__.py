"""
apimgw's test suite.

It runs on the reactor dispatch ``twistd apimgw`` runs on
(:func:`gateway.dispatch.streamline`): the end-of-iteration callbacks, and
with them the connections' held writes (:mod:`gateway.netio`), are the
production ones, not a fallback.
"""

from twisted.internet import reactor

from gateway.dispatch import streamline

if not streamline(reactor):
    raise RuntimeError(f"the suite expects Twisted's epoll reactor, not {type(reactor).__name__}")
