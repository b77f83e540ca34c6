"""
The cloud source: the configuration service as a live source of APIs and
certificates (``config.service.endpoint``).

:class:`CloudSource` (:mod:`._source`) composes the protocol's HTTP calls
(:mod:`._protocol`), the raw entities held (:mod:`._mirror`), the pure
decoder (:mod:`._decode`), the backup (:mod:`._backup`), the heartbeat
(:mod:`._heartbeat`) and the token (:mod:`._token`); what the gateway and
the service must agree on is :mod:`cloudproto`'s.
"""

from cloudproto import ENTITY_LISTS, Token, TokenError, parse_token

from ._decode import Decoded, Decoder, parse_modified
from ._heartbeat import package_version
from ._protocol import cleartext_remote
from ._source import CloudSource

__all__ = [
    "ENTITY_LISTS",
    "CloudSource",
    "Decoded",
    "Decoder",
    "Token",
    "TokenError",
    "cleartext_remote",
    "package_version",
    "parse_modified",
    "parse_token",
]
