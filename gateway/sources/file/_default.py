"""
The built-in configuration a gateway with nothing configured serves: the
Echo API of the upstream product, answered by the gateway's own echo backend
(:mod:`gateway.echo`), so a new user gets a working gateway from one command.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.model import SourceObject, Store
from gateway.ready import OneShot

from ._decode import parse_config

__all__ = ["DEFAULT_CONFIG_TEMPLATE", "DefaultConfigSource", "default_objects"]

#: The built-in configuration, served when nothing else is configured: the
#: Echo API of the upstream product, backed by :mod:`gateway.echo`. The one
#: placeholder is ``{echo_url}``; the text has no other braces, so both
#: ``str.format(echo_url=...)`` and :func:`default_objects` work on it, and
#: written to disk it is a valid starting point for a configuration file.
DEFAULT_CONFIG_TEMPLATE = """\
# The built-in configuration of apimgw: the Echo API, answered by the
# gateway's own echo backend. Try:
#   curl 'http://127.0.0.1:8080/echo/resource?param1=sample'
apis:
  - name: echo
    displayName: Echo API
    path: echo
    serviceUrl: {echo_url}
    subscriptionRequired: false
    operations:
      - name: retrieve-resource
        method: GET
        urlTemplate: /resource
      - name: retrieve-resource-cached
        method: GET
        urlTemplate: /resource-cached
      - name: retrieve-header-only
        method: HEAD
        urlTemplate: /resource
      - name: create-resource
        method: POST
        urlTemplate: /resource
      - name: modify-resource
        method: PUT
        urlTemplate: /resource
      - name: remove-resource
        method: DELETE
        urlTemplate: /resource
"""


def default_objects(echo_url: str, *, modified: float = 0.0) -> list[SourceObject]:
    """
    The objects of the built-in configuration, under source ``default``.

    :param echo_url: the base URL of the echo backend, such as
        :attr:`gateway.echo.EchoBackend.url`.
    :param modified: their modification time; the default ``0.0`` makes any
        real source win a conflict with them.
    """
    # Inserted as a YAML double-quoted scalar (JSON's string syntax is one),
    # so no character of the URL can change the document's structure.
    text = DEFAULT_CONFIG_TEMPLATE.replace("{echo_url}", json.dumps(echo_url))
    return parse_config(text, path="<default configuration>", modified=modified, source="default")


class DefaultConfigSource(Service):
    """
    The built-in configuration as a source: once the echo backend listens,
    publishes the Echo API pointing at it, under source ``default``.

    :param when_listening: returns a Deferred firing with the echo
        backend's base URL (:meth:`gateway.echo.EchoBackend.when_listening`).
    """

    _log = Logger()

    def __init__(self, store: Store, when_listening: Callable[[], Deferred[str]]) -> None:
        self._store = store
        self._when_listening = when_listening
        self._synced: OneShot[None] = OneShot()

    def when_synced(self) -> Deferred[None]:
        """A new Deferred that fires once the Echo API is in the store."""
        return self._synced.when()

    def startService(self) -> None:
        super().startService()
        self._when_listening().addCallback(self._publish)

    def _publish(self, url: str) -> None:
        self._store.replace_source("default", default_objects(url + "/api"))
        self._log.info(
            "No configuration given: serving the built-in Echo API (backend {url})", url=url
        )
        self._synced.fire(None)
