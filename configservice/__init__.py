"""
apimgw-config: the configuration service of apimgw gateways.

A second twistd plugin (``twistd -n apimgw-config``), independent of the
gateway's code: a SQLite database of APIs, operations, products,
subscriptions, policies, named values, certificates and gateways; a
management REST API to change them; and the endpoints gateways call to
fetch their configuration, follow its changes (long poll) and report their
instances. See ``docs/config-service.md``.
"""

from ._entities import DELIVERED, KINDS
from ._errors import ApiError
from ._feed import ChangeFeed
from ._gatewayapi import GatewayApi
from ._http import JsonResource, Router
from ._instances import Instances
from ._management import ManagementApi
from ._schema import SCHEMA_VERSION, connect, migrate, schema_version
from ._store import ConfigStore
from ._tokens import MAX_LIFETIME, Token, TokenError, issue, new_key, parse_token, verify

__all__ = [
    "DELIVERED",
    "KINDS",
    "MAX_LIFETIME",
    "SCHEMA_VERSION",
    "ApiError",
    "ChangeFeed",
    "ConfigStore",
    "GatewayApi",
    "Instances",
    "JsonResource",
    "ManagementApi",
    "Router",
    "Token",
    "TokenError",
    "connect",
    "issue",
    "migrate",
    "new_key",
    "parse_token",
    "schema_version",
    "verify",
]
